"""The document index: documents, their sync state, full-text search
(SQLite FTS5, bm25 ranking, snippets) and nearest neighbours by cosine
similarity over float32 embeddings.

Vector search keeps, per kernel and per dimension, the embeddings in memory
as one normalised matrix, brought up to date before each search from the
rows changed since (an index on ``(embedding_dim, position)``), and reloaded
whole when a document left it. With NumPy (``pip install
'eventkernel[vectors]'``) a search is one matrix-vector product; without
it, a pure-Python loop, fine for some thousands of vectors (see the
benchmarks' figures). Beyond some hundred thousand vectors, or for
approximate search, use a vector extension such as sqlite-vec over the same
embeddings.
"""

from __future__ import annotations

import array
import builtins
import hashlib
import heapq
import math
import re
import sys
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import apsw
import msgspec

from eventkernel import journal
from eventkernel.errors import InvalidArgument, NotFound
from eventkernel.events.documents import DocumentDeleted, DocumentIndexed, DocumentSyncMarked
from eventkernel.journal import Recorded
from eventkernel.projections import document_index
from eventkernel.projections.document_index import Document
from eventkernel.services.base import Context, after_row
from eventkernel.services.runner import Args, Decision, Reads, Spec, emit, run
from eventkernel.validate import (
    MAX_ID_LEN,
    check_int,
    check_json_dict,
    check_limit,
    check_optional_text,
    check_str,
    check_text,
    prefix_upper,
)

_np: Any
try:  # optional: the [vectors] extra
    import numpy as _np
except ImportError:  # pragma: no cover - the test extra installs it
    _np = None

DOCUMENT_TYPES = ("design", "specification", "plan", "report")
SYNC_STATUSES = ("pending", "synced", "failed", "stale")
MAX_CONTENT = 50_000_000
MAX_DIM = 65_536
MAX_HITS = 10_000
_WORD = re.compile(r"\w+", re.UNICODE)


class DocumentHit(msgspec.Struct, frozen=True, kw_only=True):
    """One search result, best first: ``score`` is the bm25 relevance
    (negated, so higher is better) for text, the cosine similarity for a
    vector; ``snippet`` the matching text with terms in [brackets] (text only)."""

    file_path: str
    title: str
    document_type: str | None
    score: float
    snippet: str | None = None


def stream_of(file_path: str) -> str:
    return f"document:{file_path}"


def embedding_bytes(where: str, embedding: Any) -> bytes:
    """An embedding as float32 little-endian bytes: from a sequence of
    numbers, an ``array('f')``, a NumPy array, or such bytes already."""
    if isinstance(embedding, bytes | bytearray | memoryview):
        raw = bytes(embedding)
        if not raw or len(raw) % 4:
            raise InvalidArgument(f"{where} refused: embedding bytes must be float32 values (a multiple of 4 "
                                  f"bytes), got {len(raw)} bytes")
        values = array.array("f")
        values.frombytes(raw)
        if sys.byteorder != "little":  # pragma: no cover
            values.byteswap()
    else:
        if _np is not None and isinstance(embedding, _np.ndarray):
            if embedding.ndim != 1:
                raise InvalidArgument(f"{where} refused: embedding must be one-dimensional, got shape "
                                      f"{embedding.shape}")
            embedding = embedding.tolist()
        if isinstance(embedding, str) or not isinstance(embedding, Sequence | array.array):
            raise InvalidArgument(f"{where} refused: embedding must be a sequence of numbers or float32 bytes, "
                                  f"got {type(embedding).__name__}")
        for x in embedding:
            if type(x) not in (int, float) and not (_np is not None and isinstance(x, _np.floating | _np.integer)):
                raise InvalidArgument(f"{where} refused: embedding values must be numbers, got {x!r:.40}")
        try:
            values = array.array("f", embedding)
        except OverflowError:
            raise InvalidArgument(f"{where} refused: an embedding value is out of float32 range") from None
    if not 1 <= len(values) <= MAX_DIM:
        raise InvalidArgument(f"{where} refused: an embedding has 1 to {MAX_DIM} values, got {len(values)}")
    if not all(math.isfinite(x) for x in values):
        raise InvalidArgument(f"{where} refused: embedding values must be finite (float32)")
    if sys.byteorder != "little":  # pragma: no cover
        values.byteswap()
    return values.tobytes()


def _check_content(where: str, content: Any) -> str:
    if type(content) is not str:
        raise InvalidArgument(f"{where} refused: content must be a str, got {type(content).__name__}")
    if len(content) > MAX_CONTENT:
        raise InvalidArgument(f"{where} refused: content is {len(content)} characters; at most {MAX_CONTENT}")
    try:
        content.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidArgument(f"{where} refused: content contains a lone surrogate at index {e.start}") from None
    return content


def decide_index(_: None, a: Args, now: int) -> Decision:
    return emit(stream_of(a["file_path"]), DocumentIndexed(
        file_path=a["file_path"], title=a["title"], content=a["content"], content_hash=a["content_hash"],
        document_type=a["document_type"], chunk_count=a["chunk_count"], embedding=a["embedding"],
        embedding_model=a["embedding_model"], metadata=a["metadata"]))


def decide_mark(row: Document | None, a: Args, now: int) -> Decision:
    if row is None:
        raise NotFound(f"documents.mark_{a['status']} refused: no document {a['file_path']!r}; index() it first")
    return emit(stream_of(a["file_path"]), DocumentSyncMarked(file_path=a["file_path"], status=a["status"],
                                                              error=a["error"]))


def decide_delete(row: Document | None, a: Args, now: int) -> Decision:
    if row is None:
        raise NotFound(f"documents.delete refused: no document {a['file_path']!r}")
    return emit(stream_of(a["file_path"]), DocumentDeleted(file_path=a["file_path"]))


def _doc(reads: Reads, a: Args, records: builtins.list[Recorded], outcome: str | None) -> Document:
    row = document_index.get(reads.conn, a["file_path"])
    assert row is not None
    return row


def _scope(a: Args, records: builtins.list[Recorded]) -> builtins.list[str]:
    return [stream_of(a["file_path"])]


INDEX: Spec[None, Document] = Spec("documents.index", lambda conn, a, now: None, decide_index, _doc, document_index,
                                   _scope)
MARK: Spec[Document | None, Document] = Spec(
    "documents.mark", lambda conn, a, now: document_index.get(conn, a["file_path"]), decide_mark, _doc,
    document_index, _scope)

DELETE: Spec[Document | None, int] = Spec(
    "documents.delete", lambda conn, a, now: document_index.get(conn, a["file_path"]), decide_delete,
    lambda reads, a, records, outcome: records[-1].position, document_index, _scope)


def fts_query(text: str) -> str | None:
    """Plain words as an FTS5 query: each word a quoted term, all required
    (None: no word in ``text``)."""
    words = _WORD.findall(text)
    return " ".join(f'"{w}"' for w in words) if words else None


class _Vectors:
    """The embeddings of one dimension, normalised, in memory: with NumPy
    the rows of one matrix (grown by doubling, updated in place), without
    it one list per row."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.paths: builtins.list[str] = []
        self.models: builtins.list[str | None] = []
        self.rows: dict[str, int] = {}
        self.unit: builtins.list[builtins.list[float]] = []  # without NumPy
        self.matrix: Any = None if _np is None else _np.zeros((0, dim), dtype=_np.float32)
        self.position = 0  # the newest position among its rows
        self.head = -1  # the journal head when it was brought up to date

    def load(self, rows: Iterable[tuple[str, bytes, str | None, int]]) -> None:
        """Many rows at once (a cold cache): with NumPy, normalised in one step."""
        if _np is None:
            for path, raw, model, _ in rows:
                self.put(path, raw, model)
            return
        got = builtins.list(rows)
        if not got:
            return
        block = _np.frombuffer(b"".join(r[1] for r in got), dtype="<f4").reshape(len(got), self.dim)
        norms = _np.linalg.norm(block, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        self.matrix = (block / norms).astype(_np.float32)
        self.paths = [r[0] for r in got]
        self.models = [r[2] for r in got]
        self.rows = {p: i for i, p in enumerate(self.paths)}

    def put(self, path: str, raw: bytes, model: str | None) -> None:
        i = self.rows.get(path)
        if i is None:
            i = self.rows[path] = len(self.paths)
            self.paths.append(path)
            self.models.append(model)
        else:
            self.models[i] = model
        if _np is not None:
            v = _np.frombuffer(raw, dtype="<f4").astype(_np.float32)
            n = float(_np.linalg.norm(v))
            if i >= len(self.matrix):
                grown = _np.zeros((max(16, 2 * len(self.matrix)), self.dim), dtype=_np.float32)
                grown[: len(self.matrix)] = self.matrix
                self.matrix = grown
            self.matrix[i] = v / n if n else v
            return
        values = array.array("f")
        values.frombytes(raw)
        n = math.sqrt(math.fsum(x * x for x in values))
        unit = [x / n for x in values] if n else builtins.list(values)
        if i == len(self.unit):
            self.unit.append(unit)
        else:
            self.unit[i] = unit

    def search(self, query: bytes, k: int, model: str | None) -> builtins.list[tuple[float, str]]:
        size = len(self.paths)
        if not size or not k:
            return []
        values = array.array("f")
        values.frombytes(query)
        norm = math.sqrt(math.fsum(x * x for x in values))
        if _np is not None:
            q = _np.asarray(values, dtype=_np.float32) / _np.float32(norm)
            scores = self.matrix[:size] @ q
            if model is not None:
                scores = _np.where(_np.array([m == model for m in self.models]), scores, -_np.inf)
            n = min(k, size)
            top = _np.argpartition(-scores, n - 1)[:n]
            found = [(float(scores[i]), self.paths[i]) for i in top if scores[i] != -_np.inf]
        else:
            unit = [x / norm for x in values]
            found = [(math.fsum(map(float.__mul__, u, unit)), p)
                     for u, p, m in zip(self.unit, self.paths, self.models, strict=True)
                     if model is None or m == model]
            found = heapq.nlargest(k, found, key=lambda sp: (sp[0], _Neg(sp[1])))
        return sorted(found, key=lambda sp: (-sp[0], sp[1]))


class _Neg:
    """Reverses a string's order (ties broken by path, ascending)."""

    __slots__ = ("s",)

    def __init__(self, s: str) -> None:
        self.s = s

    def __lt__(self, other: _Neg) -> bool:
        return self.s > other.s


class Documents:
    """``k.documents``: the document index and its search."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._vectors: dict[int, _Vectors] = {}
        self._lock = threading.Lock()

    def index(
        self, file_path: str, *, title: str, content: str, document_type: str | None = None,
        chunk_count: int | None = None, embedding: Any = None, embedding_model: str | None = None,
        metadata: dict[str, Any] | None = None, actor: str | None = None, command_id: str | None = None,
    ) -> Document:
        """Index (or re-index) the document at ``file_path``: its title, its
        content (searchable, its sha-256 recorded), its embedding (float32).
        A new document is ``pending``; a changed content hash makes an
        indexed one ``stale``."""
        where = INDEX.name
        check_text(where, "file_path", file_path)
        check_text(where, "title", title, max_len=10_000)
        _check_content(where, content)
        if document_type is not None and document_type not in DOCUMENT_TYPES:
            raise InvalidArgument(f"{where} refused: document_type must be one of {', '.join(DOCUMENT_TYPES)} or "
                                  f"None, got {document_type!r:.60}")
        if chunk_count is not None:
            check_int(where, "chunk_count", chunk_count, minimum=0)
        raw = None if embedding is None else embedding_bytes(where, embedding)
        check_optional_text(where, "embedding_model", embedding_model)
        check_json_dict(where, "metadata", metadata)
        args = {"file_path": file_path, "title": title, "content": content,
                "content_hash": hashlib.sha256(content.encode("utf-8")).hexdigest(), "document_type": document_type,
                "chunk_count": chunk_count, "embedding": raw, "embedding_model": embedding_model,
                "metadata": metadata}
        return run(self._ctx, INDEX, args, command_id=command_id, actor=actor)

    def _mark(self, status: str, file_path: str, error: str | None, actor: str | None,
              command_id: str | None) -> Document:
        where = f"documents.mark_{status}"
        check_text(where, "file_path", file_path)
        check_optional_text(where, "error", error, max_len=10_000)
        return run(self._ctx, MARK, {"file_path": file_path, "status": status, "error": error},
                   command_id=command_id, actor=actor)

    def mark_synced(self, file_path: str, *, actor: str | None = None, command_id: str | None = None) -> Document:
        """The document is synced (to wherever the application syncs it) as of now."""
        return self._mark("synced", file_path, None, actor, command_id)

    def mark_failed(self, file_path: str, error: str, *, actor: str | None = None,
                    command_id: str | None = None) -> Document:
        """Syncing the document failed, for ``error``."""
        check_text("documents.mark_failed", "error", error, max_len=10_000)
        return self._mark("failed", file_path, error, actor, command_id)

    def mark_stale(self, file_path: str, *, actor: str | None = None, command_id: str | None = None) -> Document:
        """The document needs syncing again."""
        return self._mark("stale", file_path, None, actor, command_id)

    def delete(self, file_path: str, *, actor: str | None = None, command_id: str | None = None) -> int:
        """Remove the document from the index (its text and embedding leave
        every search; its events stay in the journal until erased). Returns
        the event's position. Raises NotFound."""
        check_text(DELETE.name, "file_path", file_path)
        return run(self._ctx, DELETE, {"file_path": file_path}, command_id=command_id, actor=actor)

    def get(self, file_path: str) -> Document | None:
        """The document at ``file_path``, or None."""
        check_text("documents.get", "file_path", file_path)
        with self._ctx.db.statement("documents.get") as conn:
            return document_index.get(conn, file_path)

    def content(self, file_path: str) -> str | None:
        """The indexed content of the document, or None."""
        check_text("documents.content", "file_path", file_path)
        with self._ctx.db.statement("documents.content") as conn:
            return document_index.content(conn, file_path)

    def list(self, *, sync_status: str | None = None, prefix: str = "", limit: int | None = None,
             after_key: str | None = None) -> builtins.list[Document]:
        """Documents by path (starting with ``prefix``), of one sync status;
        at most ``limit``, after the path ``after_key``."""
        where = "documents.list"
        if type(prefix) is not str:
            raise InvalidArgument(f"{where} refused: prefix must be a str, got {prefix!r:.60}")
        check_str(where, "prefix", prefix)
        if sync_status is not None and sync_status not in SYNC_STATUSES:
            raise InvalidArgument(f"{where} refused: sync_status must be one of {', '.join(SYNC_STATUSES)} or None, "
                                  f"got {sync_status!r:.60}")
        check_limit(where, limit)
        check_optional_text(where, "after_key", after_key)
        with self._ctx.db.read(where) as conn:
            after = after_row(where, after_key, lambda p: document_index.get(conn, p), "document",
                              lambda d: (d.file_path,))
            return document_index.list(conn, sync_status=sync_status, limit=-1 if limit is None else limit,
                                       after=None if after is None else after[0], prefix=prefix,
                                       upper=prefix_upper(prefix) if prefix else None)

    def search(self, text: str | None = None, *, vector: Any = None, limit: int = 10, k: int = 10,
               embedding_model: str | None = None, raw: bool = False) -> builtins.list[DocumentHit]:
        """Full-text search of titles and contents (``text``: plain words, all
        required; ``raw=True``: an FTS5 query, e.g. ``'agent OR planner'``),
        best ``limit`` by bm25 with snippets; or the ``k`` nearest documents
        to ``vector`` by cosine similarity (among embeddings of its
        dimension, of ``embedding_model`` when given)."""
        where = "documents.search"
        if (text is None) == (vector is None):
            raise InvalidArgument(f"{where} refused: give text or vector=, exactly one")
        if text is not None:
            if type(text) is not str:
                raise InvalidArgument(f"{where} refused: text must be a str, got {type(text).__name__}")
            check_int(where, "limit", limit, minimum=0, maximum=MAX_HITS)
            if type(raw) is not bool:
                raise InvalidArgument(f"{where} refused: raw must be a bool, got {raw!r:.60}")
            return self._text(where, text, limit, raw)
        check_int(where, "k", k, minimum=0, maximum=MAX_HITS)
        check_optional_text(where, "embedding_model", embedding_model)
        query = embedding_bytes(where, vector)
        values = array.array("f")
        values.frombytes(query)
        if not any(values):
            raise InvalidArgument(f"{where} refused: vector is all zeros, which has no direction to compare")
        return self._nearest(where, query, k, embedding_model)

    def _text(self, where: str, text: str, limit: int, raw: bool) -> builtins.list[DocumentHit]:
        if "\x00" in text or len(text) > MAX_ID_LEN * 4:
            raise InvalidArgument(f"{where} refused: text must be at most {MAX_ID_LEN * 4} characters, without NUL")
        match = text if raw else fts_query(text)
        if not match or limit == 0:
            return []
        with self._ctx.db.read(where) as conn:
            try:
                rows = document_index.text_search(conn, match, limit)
            except apsw.SQLError as e:
                raise InvalidArgument(f"{where} refused: {text!r:.80} is not an FTS5 query ({e})") from None
        return [DocumentHit(file_path=p, title=t, document_type=d, score=-s, snippet=sn) for p, t, d, s, sn in rows]

    def _nearest(self, where: str, query: bytes, k: int, model: str | None) -> builtins.list[DocumentHit]:
        dim = len(query) // 4
        with self._lock, self._ctx.db.read(where) as conn:
            cache = self._vectors.get(dim)
            head = journal.head(conn)[0]
            if cache is None or cache.head != head:  # the journal moved: bring the cache up to date
                cache = self._refresh(conn, dim, cache)
                cache.head = head
            found = cache.search(query, k, model)
            if not found:
                return []
            titles = {p: document_index.get(conn, p) for _, p in found}
        return [DocumentHit(file_path=p, title=titles[p].title, document_type=titles[p].document_type,  # type: ignore[union-attr]
                            score=s) for s, p in found]

    def _refresh(self, conn: apsw.Connection, dim: int, cache: _Vectors | None) -> _Vectors:
        """The cache of ``dim`` with the rows changed since it last looked."""
        count, newest = document_index.vector_state(conn, dim)
        # newest below what the cache saw: the table was rebuilt (an erasure, a rebuild)
        stale = cache is None or newest < cache.position
        if cache is not None and not stale:
            for path, raw, emb_model, _ in document_index.vectors(conn, dim, cache.position):
                cache.put(path, raw, emb_model)
            cache.position = newest
            stale = len(cache.paths) != count  # a document left this dimension
        if stale or cache is None:  # load it whole
            cache = self._vectors[dim] = _Vectors(dim)
            cache.load(document_index.vectors(conn, dim, 0))
            cache.position = newest
        return cache
