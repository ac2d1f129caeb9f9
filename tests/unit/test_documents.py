"""The document index: sync states, full-text search against a brute-force
bm25 oracle, and vector search against brute-force cosine similarity (with
NumPy and with the pure-Python fallback)."""

from __future__ import annotations

import hashlib
import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventkernel
from eventkernel.errors import InvalidArgument, NotFound
from eventkernel.services import documents as documents_service

from support import refused

BOTH_ENGINES = True  # the tests taking `k` run on a file and on PostgreSQL (conftest)

VOCAB = ["agent", "journal", "lease", "plan", "memory", "graph", "queue", "retry"]


def test_index_sync_states_and_stale_on_new_content(k, clock):
    d = k.documents.index("docs/a.txt", title="A", content="alpha text", document_type="design", chunk_count=2,
                          metadata={"owner": "x"})
    assert (d.sync_status, d.content_hash, d.chunk_count) == (
        "pending", hashlib.sha256(b"alpha text").hexdigest(), 2)
    assert k.documents.index("docs/a.txt", title="A", content="beta").sync_status == "pending"  # never synced yet
    clock.advance(10)
    synced = k.documents.mark_synced("docs/a.txt")
    assert (synced.sync_status, synced.last_synced_at) == ("synced", clock.now)
    assert k.documents.index("docs/a.txt", title="A2", content="beta").sync_status == "synced"  # same content
    assert k.documents.index("docs/a.txt", title="A2", content="gamma").sync_status == "stale"  # new hash
    failed = k.documents.mark_failed("docs/a.txt", "vector store down")
    assert (failed.sync_status, failed.sync_error) == ("failed", "vector store down")
    assert k.documents.mark_stale("docs/a.txt").sync_error is None
    assert k.documents.content("docs/a.txt") == "gamma"
    assert [x.file_path for x in k.documents.list(sync_status="stale")] == ["docs/a.txt"]
    with refused(k, NotFound, "no document 'nope'"):
        k.documents.mark_synced("nope")


def test_bad_input_is_refused(k):
    with refused(k, InvalidArgument, "document_type must be one of"):
        k.documents.index("p", title="t", content="c", document_type="memo")
    with refused(k, InvalidArgument, "embedding values must be finite"):
        k.documents.index("p", title="t", content="c", embedding=[1.0, float("nan")])
    with refused(k, InvalidArgument, "a multiple of 4"):
        k.documents.index("p", title="t", content="c", embedding=b"\x00\x01\x02")
    with refused(k, InvalidArgument, "embedding values must be numbers"):
        k.documents.index("p", title="t", content="c", embedding=["1"])
    with refused(k, InvalidArgument, "content must be a str"):
        k.documents.index("p", title="t", content=b"c")
    with pytest.raises(InvalidArgument, match="give text or vector=, exactly one"):
        k.documents.search()
    with pytest.raises(InvalidArgument, match="all zeros"):
        k.documents.search(vector=[0.0, -0.0])
    with pytest.raises(InvalidArgument, match="is not an FTS5 query"):
        k.documents.search('"open', raw=True)


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def bm25_oracle(docs: dict[str, tuple[str, str]], words: list[str]) -> dict[str, float]:
    """FTS5's bm25 (k1 = 1.2, b = 0.75, IDF floored at 1e-6), negated to
    "higher is better", for the documents holding every word."""
    sizes = {p: len(_tokens(t)) + len(_tokens(c)) for p, (t, c) in docs.items()}
    n = len(docs)
    avgdl = sum(sizes.values()) / n
    counts = {p: _tokens(t) + _tokens(c) for p, (t, c) in docs.items()}
    out = {}
    for p, toks in counts.items():
        if not all(w in toks for w in words):
            continue
        score = 0.0
        for w in words:
            hits = sum(1 for d in counts.values() if w in d)
            idf = math.log((n - hits + 0.5) / (hits + 0.5))
            idf = idf if idf > 0 else 1e-6
            f = toks.count(w)
            score += idf * f * 2.2 / (f + 1.2 * (0.25 + 0.75 * sizes[p] / avgdl))
        out[p] = score
    return out


@settings(max_examples=30)
@given(st.dictionaries(st.sampled_from([f"d/{i}.txt" for i in range(12)]),
                       st.tuples(st.lists(st.sampled_from(VOCAB), min_size=1, max_size=3),
                                 st.lists(st.sampled_from(VOCAB), max_size=12)), min_size=1),
       st.lists(st.sampled_from(VOCAB), min_size=1, max_size=2, unique=True))
def test_text_search_equals_a_brute_force_bm25(docs, words):
    texts = {p: (" ".join(t), " ".join(c)) for p, (t, c) in docs.items()}
    with eventkernel.open(":memory:") as k:
        for p, (title, content) in texts.items():
            k.documents.index(p, title=title, content=content)
        hits = k.documents.search(" ".join(words).upper() + "!", limit=100)
        oracle = bm25_oracle(texts, words)
        assert {h.file_path for h in hits} == set(oracle)
        for h in hits:
            assert h.score == pytest.approx(oracle[h.file_path], rel=1e-6, abs=1e-9)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        if hits:
            assert all(f"[{w}]" in (h.snippet or "") or w in texts[h.file_path][0].split() for h in hits for w in
                       words[:1])
        assert len(k.documents.search(" ".join(words), limit=1)) == min(1, len(oracle))


def cosine_oracle(vectors: dict[str, list[float]], query: list[float], n: int) -> list[tuple[str, float]]:
    q = np.array(query, dtype=np.float32)
    scored = []
    for p, v in vectors.items():
        a = np.array(v, dtype=np.float32)
        denom = float(np.linalg.norm(a)) * float(np.linalg.norm(q))
        scored.append((p, float(a @ q) / denom if denom else 0.0))
    return sorted(scored, key=lambda ps: (-ps[1], ps[0]))[:n]


@pytest.fixture(params=["numpy", "pure-python"])
def vectors_backend(request, monkeypatch):
    if request.param == "pure-python":
        monkeypatch.setattr(documents_service, "_np", None)
    return request.param


# The backend fixture only chooses NumPy or not: the same for every input.
@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from([f"v/{i}" for i in range(20)]),
                       st.lists(st.integers(-4, 4), min_size=4, max_size=4).filter(any), min_size=1),
       st.lists(st.integers(-4, 4), min_size=4, max_size=4).filter(any), st.integers(1, 6))
def test_vector_search_equals_brute_force(vectors_backend, vectors, query, n):
    vectors = {p: [float(x) for x in v] for p, v in vectors.items()}
    with eventkernel.open(":memory:") as k:
        for p, v in vectors.items():
            k.documents.index(p, title=p, content="x", embedding=v)
        hits = k.documents.search(vector=[float(x) for x in query], k=n)
        expected = cosine_oracle(vectors, query, n)
        assert [h.score for h in hits] == pytest.approx([s for _, s in expected], abs=1e-5)
        # the same documents, up to ties
        for h, (p, s) in zip(hits, expected, strict=True):
            assert h.file_path == p or abs(h.score - s) < 1e-5


def test_the_vector_cache_follows_changes(vectors_backend, k):
    k.documents.index("a", title="a", content="x", embedding=[1.0, 0.0], embedding_model="m1")
    k.documents.index("b", title="b", content="x", embedding=[0.0, 1.0], embedding_model="m2")
    k.documents.index("c", title="c", content="x", embedding=[1.0, 0.0, 0.0])  # another dimension
    assert [h.file_path for h in k.documents.search(vector=[1.0, 0.1], k=5)] == ["a", "b"]
    k.documents.index("b", title="b", content="x", embedding=[1.0, 0.05])  # moved: now nearest
    assert [h.file_path for h in k.documents.search(vector=[1.0, 0.1], k=1)] == ["b"]
    k.documents.index("a", title="a", content="x")  # its embedding removed: leaves the search
    assert [h.file_path for h in k.documents.search(vector=[1.0, 0.1], k=5)] == ["b"]
    k.documents.index("a", title="a", content="x", embedding=[0.0, 1.0], embedding_model="m1")
    assert [h.file_path for h in k.documents.search(vector=[1.0, 0.1], k=5, embedding_model="m1")] == ["a"]
    assert [h.file_path for h in k.documents.search(vector=[0.0, 0.0, 1.0], k=5)] == ["c"]
    assert k.documents.search(vector=[1.0, 0.0, 0.0, 0.0], k=5) == []
    k.erase(stream="document:b", reason="test")
    assert [h.file_path for h in k.documents.search(vector=[1.0, 0.1], k=5)] == ["a"]


def test_embeddings_in_every_form_are_the_same_bytes(k):
    import array

    want = array.array("f", [0.5, -1.0, 2.0]).tobytes()
    for form in ([0.5, -1.0, 2], array.array("f", [0.5, -1.0, 2.0]), np.array([0.5, -1.0, 2.0]), want):
        assert k.documents.index("p", title="t", content="c", embedding=form).embedding == want


def test_a_deleted_document_leaves_every_search(vectors_backend, k):
    k.documents.index("notes/a.txt", title="A", content="journal lease", embedding=[1.0, 0.0])
    k.documents.index("notes/b.txt", title="B", content="journal plan", embedding=[0.9, 0.1])
    k.documents.index("other/c.txt", title="C", content="journal", embedding=[0.0, 1.0])
    assert [d.file_path for d in k.documents.list(prefix="notes/")] == ["notes/a.txt", "notes/b.txt"]
    assert k.documents.search(vector=[1.0, 0.0], k=1)[0].file_path == "notes/a.txt"  # the cache is warm
    k.documents.delete("notes/a.txt")
    assert k.documents.get("notes/a.txt") is None and k.documents.content("notes/a.txt") is None
    assert [h.file_path for h in k.documents.search("journal")] == ["other/c.txt", "notes/b.txt"] or \
        {h.file_path for h in k.documents.search("journal")} == {"other/c.txt", "notes/b.txt"}
    assert [h.file_path for h in k.documents.search(vector=[1.0, 0.0], k=3)] == ["notes/b.txt", "other/c.txt"]
    with refused(k, NotFound, "no document 'notes/a.txt'"):
        k.documents.delete("notes/a.txt")
    k.documents.index("notes/a.txt", title="A", content="again", embedding=[1.0, 0.0])  # indexed anew: pending
    assert k.documents.get("notes/a.txt").sync_status == "pending"
    assert k.documents.search("again")[0].file_path == "notes/a.txt"


def test_verify_twice_with_the_text_index_written_between(k):
    """FTS5 caches a table's structure per connection and integrity_check does
    not refresh it: a second verify after another write reported a checksum
    mismatch that was not there."""
    k.documents.index("docs/a.txt", title="A", content="alpha text")
    assert k.verify().ok
    k.documents.index("docs/b.txt", title="B", content="beta text")
    report = k.verify()
    assert report.ok, report.problems
