"""LangGraph on the journal: checkpoints (``EventKernelSaver``) and long-term memory (``EventKernelStore``).

    from eventkernel.integrations.langgraph import EventKernelSaver

    with EventKernelSaver.from_conn_string("agents.db") as saver:
        graph = builder.compile(checkpointer=saver)

A drop-in for LangGraph's ``SqliteSaver``/``AsyncSqliteSaver``/``InMemorySaver``
(sync and async methods in one class), on a kernel of its own or on one an
application shares (``EventKernelSaver(kernel)``, a ``Kernel`` used by any
number of threads or an ``eventkernel.aio`` kernel). Every checkpoint and
write is an event of the thread's stream ``graph:<thread_id>``, correlated
by the thread id (``eventkernel log DB --correlation THREAD``); each value is
stored once, in the journal, readable with ``json_extract`` when it is plain
data. ``delete_thread``, ``delete_for_runs``, ``prune`` and ``copy_thread``
are events too: what they delete leaves every read, and stays in the
journal until it is erased.

``EventKernelStore`` is LangGraph's ``BaseStore`` on the kernel's versioned
memory: each item is the memory ``langgraph:<label>.<label>…`` / ``<key>``, so
every value it ever had is a version (``store.history``, ``k.memory``), and
``EventKernelStore(k.at(position))`` answers as the store did then.

Needs the ``langgraph`` extra (``langgraph-checkpoint``).
"""

from __future__ import annotations

import functools
import random
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from eventkernel.aio import AsyncKernel
from eventkernel.events.graphs import Stored
from eventkernel.integrations import Opening, catching_up, in_thread
from eventkernel.integrations.langgraph_store import EventKernelStore
from eventkernel.kernel import Kernel
from eventkernel.kernel import open as open_kernel
from eventkernel.projections.graphs import GraphCheckpointRow
from eventkernel.services.graphs import Make, load, thread_stream
from eventkernel.validate import check_limit

__all__ = ["EventKernelSaver", "EventKernelStore"]


_PAGE = 100  # checkpoints a list reads at once from one thread's namespace


def _thread(value: Any) -> str:
    """LangGraph's thread ids are usually str; an int or a UUID is kept as its text, as SqliteSaver does."""
    return value if type(value) is str else str(value)


def _tuples(thread_id: Any) -> Make[CheckpointTuple]:
    """How a read makes each checkpoint's tuple (its values deserialized by
    the saver's loader), under the thread id as the caller gave it (None:
    each checkpoint's own)."""
    def make(row: GraphCheckpointRow, checkpoint: Any, values: dict[str, Any], writes: list[Any]) -> CheckpointTuple:
        thread = row.thread_id if thread_id is None else thread_id
        ns = row.checkpoint_ns
        return CheckpointTuple(  # config, checkpoint, metadata, parent_config, pending_writes
            {"configurable": {"thread_id": thread, "checkpoint_ns": ns, "checkpoint_id": row.checkpoint_id}},
            {**checkpoint, "channel_versions": row.channel_versions,  # type: ignore[typeddict-item]
             "channel_values": values},
            row.metadata,  # type: ignore[arg-type]
            None if row.parent_checkpoint_id is None else {"configurable": {
                "thread_id": thread, "checkpoint_ns": ns, "checkpoint_id": row.parent_checkpoint_id}},
            writes,
        )

    return make


class EventKernelSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer on an eventkernel journal (see the module's docstring)."""

    def __init__(
        self, kernel: Kernel | AsyncKernel, *, serde: SerializerProtocol | None = None, erase_deleted: bool = False,
    ) -> None:
        """``erase_deleted=True``: ``delete_thread`` also erases the thread's
        payloads from the journal (``k.erase``: no byte of them stays in the
        file; the file is rewritten each time, and copies made by
        ``copy_thread`` lose what they took from it)."""
        super().__init__(serde=serde)
        self.erase_deleted = erase_deleted
        if isinstance(kernel, AsyncKernel):
            self.kernel = kernel.kernel
            self._call: Callable[..., Any] = kernel._call
        else:
            self.kernel = kernel
            self._call = in_thread
        self._catch_up = catching_up(self.kernel)
        self._owned = False
        self._made_loader: tuple[SerializerProtocol, Callable[[Stored, bool], Any]] | None = None

    @classmethod
    def from_conn_string(cls, path: str, **options: Any) -> Opening[EventKernelSaver]:
        """A saver on its own kernel, opened on the journal at ``path`` with
        the options of :func:`eventkernel.open` and closed at the end of the
        block: ``with EventKernelSaver.from_conn_string(p) as saver`` or
        ``async with …`` (which opens and closes it off the event loop)."""
        def make() -> EventKernelSaver:
            saver = cls(open_kernel(path, **options))
            saver._owned = True
            return saver

        return Opening(make)

    def close(self) -> None:
        """Close the kernel if this saver opened it (``from_conn_string``)."""
        if self._owned:
            self.kernel.close()

    # --- writing ------------------------------------------------------------------

    def put(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        configurable = config["configurable"]
        thread_id = configurable["thread_id"]
        checkpoint_ns = configurable.get("checkpoint_ns", "")
        rest: dict[str, Any] = dict(checkpoint)
        channel_values: dict[str, Any] = rest.pop("channel_values", {})
        channel_versions: dict[str, Any] = rest.pop("channel_versions", {})
        dumps = self.serde.dumps_typed
        self.kernel.graphs.put(
            _thread(thread_id), checkpoint_ns, checkpoint["id"],
            checkpoint=dumps(rest),
            channel_versions=channel_versions,
            metadata=get_checkpoint_metadata(config, metadata),
            values={channel: (version, dumps(channel_values[channel]) if channel in channel_values else ("empty", b""))
                    for channel, version in new_versions.items()},
            parent_checkpoint_id=configurable.get("checkpoint_id"),
        )
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns,
                                 "checkpoint_id": checkpoint["id"]}}

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = "",
    ) -> None:
        configurable = config["configurable"]
        dumps = self.serde.dumps_typed
        self.kernel.graphs.put_writes(
            _thread(configurable["thread_id"]), configurable.get("checkpoint_ns", ""), configurable["checkpoint_id"],
            task_id, [(WRITES_IDX_MAP.get(channel, idx), channel, dumps(value))
                      for idx, (channel, value) in enumerate(writes)],
            task_path=task_path,
        )

    def delete_thread(self, thread_id: str) -> None:
        self.kernel.graphs.delete_thread(_thread(thread_id))
        if self.erase_deleted:
            self.kernel.erase(stream=thread_stream(_thread(thread_id)), reason="LangGraph delete_thread",
                              actor="langgraph")

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self.kernel.graphs.delete_runs([str(r) for r in run_ids])

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self.kernel.graphs.copy_thread(_thread(source_thread_id), _thread(target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self.kernel.graphs.prune([_thread(t) for t in thread_ids], strategy=strategy)

    def get_next_version(self, current: str | int | None, channel: None = None) -> str:
        """LangGraph's own scheme: a 32-digit counter, then a random fraction
        (two branches never write the same version)."""
        if current is None:
            n = 0
        elif isinstance(current, int):
            n = current
        else:
            n = int(current.split(".")[0])
        return f"{n + 1:032}.{random.random():016}"

    # --- reading ------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        configurable = config["configurable"]
        thread_id = configurable["thread_id"]
        self._catch_up()
        return self.kernel.graphs._get(_thread(thread_id), configurable.get("checkpoint_ns", ""),
                                       get_checkpoint_id(config), self._loader(), _tuples(thread_id))

    def list(
        self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None, limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        configurable = config["configurable"] if config else {}
        thread_id = configurable.get("thread_id")
        ns, checkpoint_id = configurable.get("checkpoint_ns"), configurable.get("checkpoint_id")
        cursor = None if before is None else get_checkpoint_id(before)
        # One namespace of one thread (where checkpoint ids are unique) is read in pages, newest
        # first: a long history is never held whole, and a caller that stops early reads little.
        paged = thread_id is not None and ns is not None and checkpoint_id is None
        left = check_limit("graphs.list", limit)
        self._catch_up()
        while left is None or left > 0:
            size = left if not paged else _PAGE if left is None else min(left, _PAGE)
            found = self.kernel.graphs._list(None if thread_id is None else _thread(thread_id), ns,
                                             checkpoint_id=checkpoint_id, before=cursor, filter=filter, limit=size,
                                             loader=self._loader(), make=_tuples(thread_id))
            yield from found
            if size is None or len(found) < size:
                return
            cursor = found[-1].config["configurable"]["checkpoint_id"]
            if left is not None:
                left -= len(found)

    def _loader(self) -> Callable[[Stored, bool], Any]:
        """:meth:`_load_with` for this saver's serde, made once per serde."""
        made = self._made_loader
        if made is None or made[0] is not self.serde:
            made = self._made_loader = (self.serde, self._load_with(self.serde))
        return made[1]

    @staticmethod
    def _load_with(serde: SerializerProtocol) -> Callable[[Stored, bool], Any]:
        """How a read gives back each stored value: deserialized by this
        saver's serde. With LangGraph's own serializer, a msgpack value the
        journal keeps as plain JSON is already what ``loads_typed`` would
        return (plain data, which msgpack and JSON decode alike), so a value
        given once in the read's answer (``fresh``) is handed over as
        decoded instead of encoded to msgpack and decoded again; one given
        twice (two checkpoints of a list sharing a channel's version) is
        copied for all but one."""
        loads = serde.loads_typed
        if type(serde) is not JsonPlusSerializer:
            return lambda stored, fresh: loads(load(stored))

        def loader(stored: Stored, fresh: bool) -> Any:
            if fresh and stored.base64 is None and stored.type == "msgpack":
                return stored.value
            return loads(load(stored))

        return loader

    # --- the same, awaitable (each call on a thread: the event loop never waits on SQLite) ---------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._call(self.get_tuple, config)  # type: ignore[no-any-return]

    async def alist(
        self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None, limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        found = await self._call(lambda: list(self.list(config, filter=filter, before=before, limit=limit)))
        for item in found:
            yield item

    async def aput(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await self._call(self.put, config, checkpoint, metadata, new_versions)  # type: ignore[no-any-return]

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = "",
    ) -> None:
        await self._call(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await self._call(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._call(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._call(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._call(functools.partial(self.prune, strategy=strategy), thread_ids)

