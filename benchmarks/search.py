"""Document search: vector search (384-dimensional float32 embeddings, exact
cosine similarity, k=10) at 10k and 100k documents, with NumPy and with the
pure-Python fallback, against a NumPy brute force over a matrix the
benchmark holds itself (the floor: no SQLite, no cache upkeep); and
full-text search (FTS5, bm25, top 10 with snippets) against the raw FTS5
query on the same table."""

from __future__ import annotations

import random
import time
from typing import Any

import apsw
import numpy as np

import eventkernel
from benchmarks.common import percentile, scratch_dir
from eventkernel.services import documents as documents_service

DIM = 384
WORDS = [f"w{i}" for i in range(2_000)]


def _corpus(path: str, n: int, rng: random.Random, vectors: np.ndarray) -> float:
    """Index n documents (in transactions of 1,000); the seconds it took."""
    k = eventkernel.open(path, snapshot_every=0)
    start = time.perf_counter()
    for lo in range(0, n, 1_000):
        with k.transaction():
            for i in range(lo, min(n, lo + 1_000)):
                words = rng.choices(WORDS, k=60)
                k.documents.index(f"docs/{i:07d}.txt", title=" ".join(words[:5]), content=" ".join(words),
                                  embedding=vectors[i].tobytes(), embedding_model="bench-384")
    took = time.perf_counter() - start
    k.close()
    return took


def _times(fn: Any, queries: list[Any]) -> list[float]:
    out = []
    for q in queries:
        start = time.perf_counter()
        fn(q)
        out.append((time.perf_counter() - start) * 1000)
    return out


def _floor(matrix: np.ndarray) -> Any:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit = matrix / norms

    def search(q: np.ndarray) -> list[int]:
        scores = unit @ (q / np.linalg.norm(q))
        top = np.argpartition(-scores, 9)[:10]
        return sorted(top.tolist(), key=lambda i: -scores[i])

    return search


def run(*, quick: bool) -> list[dict[str, Any]]:
    where = scratch_dir()
    rng = random.Random(11)
    gen = np.random.default_rng(11)
    sizes = (1_000, 2_000) if quick else (10_000, 100_000)
    results: list[dict[str, Any]] = []
    for n in sizes:
        vectors = gen.standard_normal((n, DIM), dtype=np.float32)
        path = str(where / f"search-{n}.db")
        took = _corpus(path, n, rng, vectors)
        label = f"{n // 1000}k×{DIM}"
        results.append({"name": f"index {label} documents", "value": n / took, "min": n / took, "max": n / took,
                        "unit": "docs/s", "baseline": "none", "baseline_value": n / took, "ratio": 1.0,
                        "target": None})
        queries = [gen.standard_normal(DIM, dtype=np.float32) for _ in range(30 if quick else 100)]
        floor = _floor(vectors)
        with eventkernel.open(path, snapshot_every=0) as k:
            start = time.perf_counter()
            first = k.documents.search(vector=queries[0], k=10)
            load_ms = (time.perf_counter() - start) * 1000
            assert [h.file_path for h in first] == [f"docs/{i:07d}.txt" for i in floor(queries[0])]
            theirs = _times(floor, queries)
            ours = _times(lambda q: k.documents.search(vector=q, k=10), queries)
            results.append({"name": f"vector search {label}, first (loads the cache)", "value": load_ms,
                            "min": load_ms, "max": load_ms, "unit": "ms", "baseline": "NumPy brute force, p50",
                            "baseline_value": percentile(theirs, 0.5), "ratio": load_ms / percentile(theirs, 0.5),
                            "target": None})
            for q, target in ((50, 50.0 if n >= 100_000 else None), (99, None)):
                value, base = percentile(ours, q / 100), percentile(theirs, q / 100)
                results.append({"name": f"vector search {label}, numpy, p{q}", "value": value, "min": min(ours),
                                "max": max(ours), "unit": "ms", "baseline": "NumPy brute force on a held matrix",
                                "baseline_value": base, "ratio": value / base, "target": target})
            # the pure-Python fallback, as without NumPy installed (a cache of its own)
            saved = documents_service._np
            documents_service._np = None
            try:
                with eventkernel.open(path, snapshot_every=0) as plain:
                    plain.documents.search(vector=queries[0].tolist(), k=10)  # load its cache
                    few = queries[: 5 if n >= 100_000 else 20]
                    slow = _times(lambda q: plain.documents.search(vector=q.tolist(), k=10), few)
            finally:
                documents_service._np = saved
            value, base = percentile(slow, 0.5), percentile(theirs, 0.5)
            results.append({"name": f"vector search {label}, pure Python, p50", "value": value, "min": min(slow),
                            "max": max(slow), "unit": "ms", "baseline": "NumPy brute force on a held matrix",
                            "baseline_value": base, "ratio": value / base, "target": None})
            # full text: two words of the corpus, top 10 with snippets
            texts = [" ".join(rng.sample(WORDS, 2)) for _ in range(100)]
            raw = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
            match = [documents_service.fts_query(t) for t in texts]
            theirs_fts = _times(lambda m: raw.execute(
                "SELECT rowid, bm25(document_fts) FROM document_fts WHERE document_fts MATCH ? ORDER BY rank "
                "LIMIT 10", (m,)).fetchall(), match)
            ours_fts = _times(lambda t: k.documents.search(t, limit=10), texts)
            raw.close()
            for q in (50, 99):
                value, base = percentile(ours_fts, q / 100), percentile(theirs_fts, q / 100)
                results.append({"name": f"text search {n // 1000}k docs, top 10, p{q}", "value": value,
                                "min": min(ours_fts), "max": max(ours_fts), "unit": "ms",
                                "baseline": "raw FTS5 query, bm25 top 10 (no snippet, no join)",
                                "baseline_value": base, "ratio": value / base, "target": None})
    return results
