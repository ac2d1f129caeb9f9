"""The document index's part of the workload: (re)indexing with and without
embeddings, sync marks, and both kinds of search."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

PATHS = st.sampled_from(["d/a.txt", "d/b.txt", "d/c.txt"])
WORDS = ["agent", "journal", "lease", "plan", "memory"]

OPS = [
    st.builds(lambda p, ws, e: ("documents.index", p, ws, e), PATHS,
              st.lists(st.sampled_from(WORDS), min_size=1, max_size=4),
              st.one_of(st.none(), st.lists(st.sampled_from([0.0, 0.5, 1.0, -1.0]), min_size=3, max_size=3))),
    st.builds(lambda p, s: ("documents.mark", p, s), PATHS, st.sampled_from(["synced", "failed", "stale"])),
    st.builds(lambda p: ("documents.delete", p), PATHS),
]


def resolve(k: Any, op: tuple) -> Any:
    if op[0] == "documents.index":
        _, path, words, embedding = op
        return k.documents.index, {"file_path": path, "title": words[0], "content": " ".join(words),
                                   "embedding": embedding, "embedding_model": "m3", "document_type": "plan"}
    if op[0] == "documents.delete":
        return k.documents.delete, {"file_path": op[1]}
    _, path, status = op
    if status == "synced":
        return k.documents.mark_synced, {"file_path": path}
    if status == "failed":
        return k.documents.mark_failed, {"file_path": path, "error": "vector store down"}
    return k.documents.mark_stale, {"file_path": path}


def exercise(k: Any, clock: Any) -> None:
    k.documents.index("docs/design.txt", title="Design", content="The journal is the source of truth.",
                      document_type="design", embedding=[1.0, 0.0, 0.0], embedding_model="m", chunk_count=1,
                      metadata={"owner": "kernel"})
    k.documents.index("docs/plan.txt", title="Plan", content="Agents lease work from the journal.",
                      embedding=[0.5, 0.5, 0.0], embedding_model="m")
    k.documents.mark_synced("docs/design.txt")
    k.documents.mark_failed("docs/plan.txt", "timeout")
    k.documents.index("docs/design.txt", title="Design", content="The journal is the only source of truth.",
                      embedding=[0.9, 0.1, 0.0], embedding_model="m")
    k.documents.mark_stale("docs/plan.txt")
    k.documents.get("docs/design.txt")
    k.documents.content("docs/design.txt")
    k.documents.list()
    k.documents.list(sync_status="stale", after_key="docs/design.txt", limit=5)
    k.documents.list(prefix="docs/")
    k.documents.search("journal truth")
    k.documents.search("agents OR design", raw=True, limit=3)
    k.documents.search(vector=[1.0, 0.0, 0.0], k=1)
    k.documents.search(vector=[1.0, 0.0, 0.0], k=2, embedding_model="m")
    k.documents.delete("docs/plan.txt")
