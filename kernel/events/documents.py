"""Events of the document index (streams ``document:<file path>``)."""

from __future__ import annotations

from typing import Any

from eventkernel.events.base import KernelEvent


class DocumentIndexed(KernelEvent, tag="document.indexed"):
    """The document at ``file_path`` holds ``content`` (sha-256
    ``content_hash``) as of this event, with its ``embedding`` (float32,
    little-endian; its length / 4 is its dimension) when given. A new
    content hash makes an indexed document ``stale``."""

    file_path: str
    title: str
    content: str
    content_hash: str
    document_type: str | None = None
    chunk_count: int | None = None
    embedding: bytes | None = None
    embedding_model: str | None = None
    metadata: dict[str, Any] | None = None


class DocumentDeleted(KernelEvent, tag="document.deleted"):
    """The document is no longer indexed (its row and its text leave the index)."""

    file_path: str


class DocumentSyncMarked(KernelEvent, tag="document.sync_marked"):
    """The document's sync status is now ``status`` (synced, failed or
    stale); ``error`` says why a sync failed."""

    file_path: str
    status: str
    error: str | None = None
