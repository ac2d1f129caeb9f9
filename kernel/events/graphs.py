"""Events of graph checkpoints (stream ``graph:<thread>``): the state of a
graph run as an orchestration framework saves it (LangGraph's checkpoints,
channel values and pending writes), each value stored once, here.

A value arrives serialized by the framework, as (type tag, bytes). It is
stored as a :class:`Stored`: the value itself, readable in JSON, when
re-encoding that gives back the same bytes exactly; otherwise the bytes in
base64, compressed with zlib when that makes them smaller.
"""

from __future__ import annotations

from typing import Any

import msgspec

from eventkernel.events.base import KernelEvent


class Stored(msgspec.Struct, frozen=True, omit_defaults=True):
    """A framework's serialized value: its type tag, and either ``value`` (the
    decoded value, when encoding it again as ``type`` gives back the original
    bytes) or ``base64`` (the bytes, zlib-compressed when ``zlib``)."""

    type: str
    value: Any = None
    base64: str | None = None
    zlib: bool = False


class ChannelValue(msgspec.Struct, frozen=True):
    """A channel's value at one of its versions (a version is an int, a float
    or a str, as the framework counts them)."""

    version: int | float | str
    value: Stored


class Write(msgspec.Struct, frozen=True):
    """A pending write of a task to a channel; ``idx`` is its place in the
    task's writes (negative for the framework's special channels, which a
    later write replaces)."""

    idx: int
    channel: str
    value: Stored


class GraphCheckpointSaved(KernelEvent, tag="graph.checkpoint_saved"):
    """A checkpoint of a thread in a namespace, after ``parent_checkpoint_id``.
    ``checkpoint`` is the checkpoint without its channel values and versions
    (``channel_versions``); ``values`` holds the channels whose version is new
    at this checkpoint (the others are stored with an earlier one)."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_checkpoint_id: str | None
    checkpoint: Stored
    channel_versions: dict[str, int | float | str]
    metadata: dict[str, Any]
    values: dict[str, ChannelValue] = {}


class GraphWritesSaved(KernelEvent, tag="graph.writes_saved"):
    """Writes a task made toward the checkpoint after ``checkpoint_id``:
    those that were not saved before (a retry saves nothing twice)."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    task_id: str
    task_path: str
    writes: list[Write]


class GraphThreadDeleted(KernelEvent, tag="graph.thread_deleted"):
    """Every checkpoint, value and write of the thread leaves the projection
    (the journal keeps them until erased)."""

    thread_id: str


class GraphRunsDeleted(KernelEvent, tag="graph.runs_deleted"):
    """The thread's checkpoints made by these runs (metadata ``run_id``) leave
    the projection, with their writes."""

    thread_id: str
    run_ids: list[str]


class GraphThreadPruned(KernelEvent, tag="graph.thread_pruned"):
    """``keep_latest``: only the newest checkpoint of each namespace of the
    thread stays, with its writes and the values it refers to; ``delete``:
    nothing of the thread stays."""

    thread_id: str
    strategy: str


class GraphThreadCopied(KernelEvent, tag="graph.thread_copied"):
    """Every checkpoint, value and write of ``source_thread_id`` now also
    belongs to this thread (stored once: the copies point at the same journal rows)."""

    thread_id: str
    source_thread_id: str
