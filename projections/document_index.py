"""Projection ``document_index``: every indexed document, its sync status,
its embedding, and its text in an FTS5 table for full-text search."""

from __future__ import annotations

import builtins
from typing import Any

import apsw
import msgspec

from eventkernel.codec import Event
from eventkernel.events.documents import DocumentDeleted, DocumentIndexed, DocumentSyncMarked
from eventkernel.journal import Recorded
from eventkernel.projections.rows import Target, dump, loader, where_all

NAME = "document_index"
VERSION = 1
HANDLES = frozenset(c.__event_type__ for c in (DocumentIndexed, DocumentSyncMarked, DocumentDeleted))


class Document(msgspec.Struct, frozen=True):
    """A document as indexed (``embedding`` as float32 bytes; its text is in the journal and document_fts)."""

    file_path: str
    title: str
    document_type: str | None
    content_hash: str
    chunk_count: int | None
    embedding_model: str | None
    embedding: bytes | None
    embedding_dim: int | None
    metadata: dict[str, Any] | None
    last_synced_at: int | None
    sync_status: str
    sync_error: str | None
    created_at: int
    updated_at: int
    position: int


_COLS = ", ".join(Document.__struct_fields__)
_load = loader(Document, json=["metadata"])


def apply(conn: Target, recorded: Recorded, event: Event) -> None:
    at, pos = recorded.recorded_at, recorded.position
    if isinstance(event, DocumentIndexed):
        prev = conn.execute("SELECT content_hash, sync_status, created_position FROM document_index "
                            "WHERE file_path = ?", (event.file_path,)).fetchone()
        if prev is None:
            status, created = "pending", pos
        else:
            status = prev[1] if prev[0] == event.content_hash or prev[1] == "pending" else "stale"
            created = prev[2]
        emb = event.embedding
        conn.execute(
            "INSERT INTO document_index (file_path, title, document_type, content_hash, chunk_count, embedding_model, "
            "embedding, embedding_dim, metadata, last_synced_at, sync_status, sync_error, created_at, updated_at, "
            "created_position, position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, NULL, ?, ?, ?, ?) "
            "ON CONFLICT (file_path) DO UPDATE SET title = excluded.title, document_type = excluded.document_type, "
            "content_hash = excluded.content_hash, chunk_count = excluded.chunk_count, "
            "embedding_model = excluded.embedding_model, embedding = excluded.embedding, "
            "embedding_dim = excluded.embedding_dim, metadata = excluded.metadata, sync_status = excluded.sync_status, "
            "updated_at = excluded.updated_at, position = excluded.position",
            (event.file_path, event.title, event.document_type, event.content_hash, event.chunk_count,
             event.embedding_model, emb, None if emb is None else len(emb) // 4, dump(event.metadata), status,
             at, at, created, pos),
        )
        if prev is not None:
            conn.execute("DELETE FROM document_fts WHERE rowid = ?", (created,))
        conn.execute("INSERT INTO document_fts (rowid, file_path, title, content) VALUES (?, ?, ?, ?)",
                     (created, event.file_path, event.title, event.content))
    elif isinstance(event, DocumentDeleted):
        row = conn.execute("SELECT created_position FROM document_index WHERE file_path = ?",
                           (event.file_path,)).fetchone()
        if row is not None:
            conn.execute("DELETE FROM document_fts WHERE rowid = ?", (row[0],))
            conn.execute("DELETE FROM document_index WHERE file_path = ?", (event.file_path,))
    elif isinstance(event, DocumentSyncMarked):
        if event.status == "synced":
            conn.execute("UPDATE document_index SET sync_status = 'synced', sync_error = NULL, last_synced_at = ?, "
                         "updated_at = ?, position = ? WHERE file_path = ?", (at, at, pos, event.file_path))
        else:
            conn.execute("UPDATE document_index SET sync_status = ?, sync_error = ?, updated_at = ?, position = ? "
                         "WHERE file_path = ?", (event.status, event.error, at, pos, event.file_path))


# --- queries ----------------------------------------------------------------------


def get(conn: apsw.Connection, file_path: str) -> Document | None:
    row = conn.execute(f"SELECT {_COLS} FROM document_index WHERE file_path = ?", (file_path,)).fetchone()
    return None if row is None else _load(row)


def content(conn: apsw.Connection, file_path: str) -> str | None:
    row = conn.execute("SELECT f.content FROM document_index d JOIN document_fts f ON f.rowid = d.created_position "
                       "WHERE d.file_path = ?", (file_path,)).fetchone()
    return None if row is None else row[0]


def list(conn: apsw.Connection, *, sync_status: str | None = None, limit: int = -1,
         after: str | None = None, prefix: str = "", upper: str | None = None) -> builtins.list[Document]:
    where, args = where_all(("file_path >= ?", prefix or None), ("file_path < ?", upper),
                            ("sync_status = ?", sync_status), ("file_path > ?", after))
    return [_load(r) for r in conn.execute(
        f"SELECT {_COLS} FROM document_index{where} ORDER BY file_path LIMIT ?", (*args, limit))]


def text_search(conn: apsw.Connection, match: str, limit: int) -> builtins.list[tuple[Any, ...]]:
    """(file_path, title, document_type, bm25, snippet) of the best matches, best first."""
    return builtins.list(conn.execute(
        "SELECT d.file_path, d.title, d.document_type, bm25(document_fts), "
        "snippet(document_fts, 2, '[', ']', '…', 12) FROM document_fts "
        "JOIN document_index d ON d.file_path = document_fts.file_path "
        "WHERE document_fts MATCH ? ORDER BY rank, d.file_path LIMIT ?", (match, limit)))


def vector_state(conn: apsw.Connection, dim: int) -> tuple[int, int]:
    """(count, newest position) of the documents with an embedding of ``dim`` floats."""
    for n, newest in conn.execute("SELECT count(*), max(position) FROM document_index WHERE embedding_dim = ?",
                                  (dim,)):
        return n, newest or 0
    return 0, 0


def vectors(conn: apsw.Connection, dim: int, after: int) -> apsw.Cursor:
    """(file_path, embedding, embedding_model, position) of the documents of ``dim`` changed after ``after``."""
    return conn.execute("SELECT file_path, embedding, embedding_model, position FROM document_index "
                        "WHERE embedding_dim = ? AND position > ? ORDER BY position", (dim, after))
