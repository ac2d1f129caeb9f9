"""Graph checkpoints: what an orchestration framework saves of a graph run
(LangGraph's checkpoints, channel values and pending writes), each value
stored once, in the journal, and found through the ``graphs`` projection.

Values arrive serialized by the framework, as ``(type, bytes)``, and come
back exactly so. Threads, namespaces, checkpoint ids, channels and tasks are
any strings the framework uses: none is held to the kernel's id rules (a
thread too long or too odd for a stream name gets a stream named by its hash).
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import math
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

import apsw
import msgspec

from eventkernel import codec
from eventkernel.errors import InvalidArgument
from eventkernel.events.graphs import (
    ChannelValue,
    GraphCheckpointSaved,
    GraphRunsDeleted,
    GraphThreadCopied,
    GraphThreadDeleted,
    GraphThreadPruned,
    GraphWritesSaved,
    Stored,
    Write,
)
from eventkernel.journal import Recorded
from eventkernel.projections import graphs
from eventkernel.services.base import Context
from eventkernel.services.runner import NOTHING, Args, Decision, Emit, Reads, Spec, emit, run
from eventkernel.validate import (
    INT64_MAX,
    INT64_MIN,
    check_json_dict,
    check_json_value,
    check_limit,
    check_str,
    plain_json,
)

Serialized = tuple[str, bytes]
"""A value as a framework's serializer gives it: (type tag, bytes)."""

STRATEGIES = ("keep_latest", "delete")
_PLAIN_THREAD = 512  # a longer thread id is named by its hash in the stream name
_COMPRESS_FROM = 256  # bytes: a shorter opaque value is stored as it is
_json = msgspec.json.Encoder()
_any_json = msgspec.json.Decoder()
_msgpack = msgspec.msgpack.Encoder()
_any_msgpack = msgspec.msgpack.Decoder()


class GraphCheckpoint(msgspec.Struct, frozen=True, kw_only=True):
    """A checkpoint as saved: ``checkpoint`` without its channel values and
    versions, ``values`` each channel's value at its version in
    ``channel_versions`` (the value saved with the checkpoint where its save
    holds the channel at that version, else the latest save of that version;
    channels saved empty are left out), ``writes`` the pending writes (task
    id, channel, value) in (task path, task id, idx) order, ``position`` the
    journal row that saved it."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_checkpoint_id: str | None
    checkpoint: Serialized
    channel_versions: dict[str, Any]
    metadata: dict[str, Any]
    values: dict[str, Serialized]
    writes: list[tuple[str, str, Serialized]]
    created_at: int
    position: int


def thread_stream(thread_id: str) -> str:
    """The stream of a thread: ``graph:<thread id>``, or ``graph:#<sha256>``
    for a thread id that is empty, long, starts with '#' or holds a NUL."""
    if 0 < len(thread_id) <= _PLAIN_THREAD and not thread_id.startswith("#") and "\x00" not in thread_id:
        return f"graph:{thread_id}"
    return "graph:#" + hashlib.sha256(thread_id.encode("utf-8", "surrogatepass")).hexdigest()


def _correlation(thread_id: str) -> str:
    """A thread's run is one correlation id: the thread id where the kernel's id rules allow it."""
    if 0 < len(thread_id) <= 256 and "\x00" not in thread_id:
        return thread_id
    return thread_stream(thread_id)[len("graph:"):]


# --- storing values --------------------------------------------------------------


def store(where: str, name: str, value: Any) -> Stored:
    """A serialized value as the journal keeps it: readable JSON when
    encoding that JSON again gives back the bytes exactly, base64 otherwise."""
    if type(value) is not tuple and type(value) is not builtins.list or len(value) != 2:
        raise InvalidArgument(f"{where} refused: {name} must be a (type, bytes) pair, got {value!r:.80}")
    type_, data = value
    if type(type_) is not str:
        raise InvalidArgument(f"{where} refused: {name}'s type must be a str, got {type_!r:.60}")
    check_str(where, f"{name}'s type", type_)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidArgument(f"{where} refused: {name}'s data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    readable = _readable(type_, data)
    if readable is not None:
        return Stored(type_, value=readable)
    if len(data) >= _COMPRESS_FROM:
        packed = zlib.compress(data)
        if len(packed) < len(data):
            return Stored(type_, base64=base64.b64encode(packed).decode("ascii"), zlib=True)
    return Stored(type_, base64=base64.b64encode(data).decode("ascii"))


_NO_VALUE = object()


def _readable(type_: str, data: bytes) -> Any:
    """The value ``data`` encodes when it is plain JSON that gives back
    ``data`` exactly (msgpack or JSON); None otherwise (null itself is
    stored as bytes, so that None always means 'not readable')."""
    try:
        if type_ == "msgpack":
            value = _any_msgpack.decode(data)
        elif type_ == "json":
            value = _any_json.decode(data)
        else:
            return None
        if value is None:
            return None
        text = _json.encode(value)
        if not plain_json(text):
            return None
        again = _any_json.decode(text)
        back = _msgpack.encode(again) if type_ == "msgpack" else _json.encode(again)
    except (msgspec.MsgspecError, TypeError, ValueError, OverflowError, RecursionError):
        return None
    return again if back == data else None


def load(stored: Stored) -> Serialized:
    """The (type, bytes) a value was stored from."""
    if stored.base64 is not None:
        data = base64.b64decode(stored.base64)
        return stored.type, zlib.decompress(data) if stored.zlib else data
    if stored.type == "msgpack":
        return stored.type, _msgpack.encode(stored.value)
    return stored.type, _json.encode(stored.value)


# --- checks -------------------------------------------------------------------------


def _text(where: str, name: str, value: Any) -> str:
    """Any str JSON can carry (empty, long, any character but a lone surrogate)."""
    if type(value) is str and value.isascii():  # the common case, at once
        return value
    if type(value) is not str:
        raise InvalidArgument(f"{where} refused: {name} must be a str, got {type(value).__name__} {value!r:.60}")
    check_str(where, name, value)
    return value


def _version(where: str, name: str, value: Any) -> int | float | str:
    t = type(value)
    if t is int and INT64_MIN <= value <= INT64_MAX or t is float and math.isfinite(value):
        return value  # type: ignore[no-any-return]
    if t is str:
        return _text(where, name, value)
    raise InvalidArgument(
        f"{where} refused: {name} must be an int, a finite float or a str, got {type(value).__name__} {value!r:.60}"
    )


def _versions(where: str, name: str, value: Any) -> dict[str, int | float | str]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{where} refused: {name} must be a dict of channel to version, got {value!r:.80}")
    return {_text(where, f"{name} key", k): _version(where, f"{name}[{k!r}]", v) for k, v in value.items()}


# --- commands ---------------------------------------------------------------------


def _no_state(conn: apsw.Connection, a: Args, now: int) -> None:
    return None


def _nothing(reads: Reads, a: Args, records: builtins.list[Recorded], outcome: str | None) -> None:
    return None


def decide_put(state: None, a: Args, now: int) -> Decision:
    return emit(
        thread_stream(a["thread_id"]),
        GraphCheckpointSaved(thread_id=a["thread_id"], checkpoint_ns=a["checkpoint_ns"],
                             checkpoint_id=a["checkpoint_id"], parent_checkpoint_id=a["parent_checkpoint_id"],
                             checkpoint=a["checkpoint"], channel_versions=a["channel_versions"],
                             metadata=a["metadata"], values=a["values"]),
        correlation_id=_correlation(a["thread_id"]),
    )


def _load_write_keys(conn: apsw.Connection, a: Args, now: int) -> set[int]:
    return graphs.write_keys(conn, a["thread_id"], a["checkpoint_ns"], a["checkpoint_id"], a["task_id"])


def decide_put_writes(saved: set[int], a: Args, now: int) -> Decision:
    """A write already saved (same task, same idx ≥ 0) is not saved again; a
    special channel's write (idx < 0) replaces the one before."""
    fresh = [w for w in a["writes"] if w.idx < 0 or w.idx not in saved]
    if not fresh:
        return NOTHING
    return emit(
        thread_stream(a["thread_id"]),
        GraphWritesSaved(thread_id=a["thread_id"], checkpoint_ns=a["checkpoint_ns"], checkpoint_id=a["checkpoint_id"],
                         task_id=a["task_id"], task_path=a["task_path"], writes=fresh),
        correlation_id=_correlation(a["thread_id"]),
    )


def _load_threads(conn: apsw.Connection, a: Args, now: int) -> builtins.list[str]:
    """The threads named that the projection holds anything of."""
    return [t for t in a["thread_ids"] if graphs.has_thread(conn, t)]


def decide_delete_thread(present: builtins.list[str], a: Args, now: int) -> Decision:
    return Decision(emits=tuple(
        Emit(thread_stream(t), (GraphThreadDeleted(thread_id=t),), correlation_id=_correlation(t)) for t in present
    ))


def _load_run_threads(conn: apsw.Connection, a: Args, now: int) -> builtins.list[str]:
    return graphs.threads_of_runs(conn, a["run_ids"]) if a["run_ids"] else []


def decide_delete_runs(threads: builtins.list[str], a: Args, now: int) -> Decision:
    return Decision(emits=tuple(
        Emit(thread_stream(t), (GraphRunsDeleted(thread_id=t, run_ids=a["run_ids"]),), correlation_id=_correlation(t))
        for t in threads
    ))


def decide_prune(present: builtins.list[str], a: Args, now: int) -> Decision:
    return Decision(emits=tuple(
        Emit(thread_stream(t), (GraphThreadPruned(thread_id=t, strategy=a["strategy"]),),
             correlation_id=_correlation(t))
        for t in present
    ))


def decide_copy(present: builtins.list[str], a: Args, now: int) -> Decision:
    """Copying a thread that holds nothing copies nothing."""
    if not present:
        return NOTHING
    target = a["target_thread_id"]
    return emit(thread_stream(target), GraphThreadCopied(thread_id=target, source_thread_id=a["thread_ids"][0]),
                correlation_id=_correlation(target))


PUT: Spec[None, None] = Spec("graphs.put", _no_state, decide_put, _nothing)
PUT_WRITES: Spec[set[int], None] = Spec("graphs.put_writes", _load_write_keys, decide_put_writes, _nothing)
DELETE_THREAD: Spec[builtins.list[str], None] = Spec(
    "graphs.delete_thread", _load_threads, decide_delete_thread, _nothing
)
DELETE_RUNS: Spec[builtins.list[str], None] = Spec("graphs.delete_runs", _load_run_threads, decide_delete_runs, _nothing)
PRUNE: Spec[builtins.list[str], None] = Spec("graphs.prune", _load_threads, decide_prune, _nothing)
COPY: Spec[builtins.list[str], None] = Spec("graphs.copy_thread", _load_threads, decide_copy, _nothing)


# --- reading ----------------------------------------------------------------------


def _events_at(conn: apsw.Connection, positions: Iterable[int], cache: dict[int, Any]) -> None:
    """Decode the events at these journal positions into ``cache``."""
    wanted = sorted({p for p in positions if p not in cache})
    for start in range(0, len(wanted), 500):
        chunk = wanted[start:start + 500]
        sql = f"SELECT position, type, schema, data FROM journal WHERE position IN ({', '.join('?' * len(chunk))})"
        for position, type_, schema, data in conn.execute(sql, chunk):
            cache[position] = codec.decode(type_, schema, data)
    missing = [p for p in wanted if p not in cache]
    # After a compaction, the events a live row still reads may be kept with the base.
    if missing and conn.execute(
        "SELECT 1 FROM sqlite_schema WHERE name = 'base_payloads' UNION ALL "
        "SELECT 1 FROM sqlite_temp_schema WHERE name = 'base_payloads'"
    ).fetchone() is not None:
        for start in range(0, len(missing), 500):
            chunk = missing[start:start + 500]
            sql = f"SELECT position, type, schema, data FROM base_payloads WHERE position IN ({', '.join('?' * len(chunk))})"
            for position, type_, schema, data in conn.execute(sql, chunk):
                cache[position] = codec.decode(type_, schema, data)


T = TypeVar("T")
Make = Callable[[graphs.GraphCheckpointRow, Any, dict[str, Any], "builtins.list[tuple[str, str, Any]]"], T]
"""What a read makes of each checkpoint from its row, its loaded checkpoint,
values (channel: value) and pending writes (task id, channel, value)."""
Load = Callable[[Stored, bool], Any]
"""What a read gives back for each stored value: ``load(stored, fresh)``,
``fresh`` when no other part of the read's answer is given this ``stored``
object (so a value decoded with it can be handed over as it is)."""


def _serialized(stored: Stored, fresh: bool) -> Serialized:
    return load(stored)


def _graph_checkpoint(row: graphs.GraphCheckpointRow, checkpoint: Any, values: dict[str, Any],
                      writes: builtins.list[tuple[str, str, Any]]) -> GraphCheckpoint:
    return GraphCheckpoint(
        thread_id=row.thread_id, checkpoint_ns=row.checkpoint_ns, checkpoint_id=row.checkpoint_id,
        parent_checkpoint_id=row.parent_checkpoint_id, checkpoint=checkpoint, channel_versions=row.channel_versions,
        metadata=row.metadata, values=values, writes=writes, created_at=row.created_at, position=row.position,
    )


def _assemble(conn: apsw.Connection, scope: tuple[str, str] | None, found: Sequence[graphs.Found], load: Load,
              make: Make[T]) -> builtins.list[T]:
    """The checkpoints with their values and writes, each journal row read
    and decoded once (a checkpoint's own event came with its row, decoded
    for it alone); each stored value given back as ``load`` makes it, each
    checkpoint as ``make`` makes it (its row's versions and metadata are
    its own objects). ``scope``: the (thread, namespace) of every
    checkpoint, when the read asked for one."""
    if not found:
        return []
    kept = [row.position for row, saved in found if saved is None]
    if kept:  # checkpoints whose events a compaction kept with its base
        events: dict[int, Any] = {}
        _events_at(conn, kept, events)
        each = [(row, events[row.position] if saved is None else saved) for row, saved in found]
    else:
        each = cast("builtins.list[tuple[graphs.GraphCheckpointRow, GraphCheckpointSaved]]", found)
    # A channel's value at a checkpoint's version is in the checkpoint's own event when that
    # event saved it at that version (the common case: given now), else in the latest event
    # that did (looked up, then given).
    answers: builtins.list[dict[str, Any]] = []
    wanted: dict[tuple[str, str, str, str], builtins.list[dict[str, Any]]] = {}
    for (row, saved), (_, decoded) in zip(each, found):
        own = decoded is not None  # decoded for this checkpoint alone
        values: dict[str, Any] = {}
        answers.append(values)
        mine = saved.values
        for channel, version in row.channel_versions.items():
            held = mine.get(channel)
            if held is not None and type(held.version) is type(version) and held.version == version:
                stored = held.value
                if stored.type != "empty":
                    values[channel] = load(stored, own)
            else:
                wanted.setdefault((row.thread_id, row.checkpoint_ns, channel, graphs.version_key(version)),
                                  []).append(values)
    positions, pending = graphs.references(
        conn, scope, builtins.list(wanted), [(row.thread_id, row.checkpoint_ns, row.checkpoint_id) for row, _ in found])
    if positions or pending:
        cache: dict[int, Any] = {row.position: saved for row, saved in each}
        elsewhere = [p for p in positions.values() if p not in cache]
        elsewhere += [w.position for ws in pending.values() for w in ws if w.position not in cache]
        if elsewhere:
            _events_at(conn, elsewhere, cache)
        # An event of another checkpoint in the answer, or one decoded into the cache and given
        # already, is given again: its values are not fresh.
        given: set[tuple[int, Any]] = {(row.position, None) for row, _ in found}
        for key, position in positions.items():
            channel = key[2]
            stored = cache[position].values[channel].value
            for values in wanted[key]:
                fresh = (position, None) not in given and (position, channel) not in given
                given.add((position, channel))
                if stored.type != "empty":
                    values[channel] = load(stored, fresh)
    out = []
    for (row, saved), (_, decoded), values in zip(each, found, answers):
        writes = []
        for w in pending.get((row.thread_id, row.checkpoint_ns, row.checkpoint_id), ()) if pending else ():
            fresh = (w.position, w.item) not in given
            given.add((w.position, w.item))
            writes.append((w.task_id, w.channel, load(cache[w.position].writes[w.item].value, fresh)))
        out.append(make(row, load(saved.checkpoint, decoded is not None), values, writes))
    return out


class Graphs:
    """``k.graphs``: the checkpoints of graph runs (the storage of
    :mod:`eventkernel.integrations.langgraph`)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    # --- commands -----------------------------------------------------------------

    def put(
        self,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str,
        *,
        checkpoint: Serialized,
        channel_versions: Mapping[str, int | float | str],
        metadata: Mapping[str, Any],
        values: Mapping[str, tuple[int | float | str, Serialized]],
        parent_checkpoint_id: str | None = None,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        """Save a checkpoint of the thread in the namespace (saving it again
        replaces it). ``values``: the channels whose version is new here,
        each (version, serialized value); a channel saved as type ``empty``
        has no value at that version."""
        where = "graphs.put"
        _text(where, "thread_id", thread_id)
        _text(where, "checkpoint_ns", checkpoint_ns)
        _text(where, "checkpoint_id", checkpoint_id)
        if parent_checkpoint_id is not None:
            _text(where, "parent_checkpoint_id", parent_checkpoint_id)
        meta = check_json_dict(where, "metadata", dict(metadata) if isinstance(metadata, Mapping) else metadata)
        if not isinstance(values, Mapping):
            raise InvalidArgument(f"{where} refused: values must be a dict of channel to (version, value)")
        stored = {}
        for channel, pair in values.items():
            _text(where, "values key", channel)
            if type(pair) not in (tuple, builtins.list) or len(pair) != 2:
                raise InvalidArgument(f"{where} refused: values[{channel!r}] must be a (version, value) pair")
            stored[channel] = ChannelValue(_version(where, f"values[{channel!r}] version", pair[0]),
                                           store(where, f"values[{channel!r}]", pair[1]))
        args = {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "checkpoint_id": checkpoint_id,
                "parent_checkpoint_id": parent_checkpoint_id, "checkpoint": store(where, "checkpoint", checkpoint),
                "channel_versions": _versions(where, "channel_versions", channel_versions),
                "metadata": meta or {}, "values": stored}
        run(self._ctx, PUT, args, actor=actor, command_id=command_id)

    def put_writes(
        self,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str,
        task_id: str,
        writes: Sequence[tuple[int, str, Serialized]],
        *,
        task_path: str = "",
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        """Save a task's pending writes toward the checkpoint after
        ``checkpoint_id``: (idx, channel, serialized value) each. A write
        saved before under the same task and idx ≥ 0 is kept as it was; one
        with idx < 0 (a special channel) replaces the one before (within one
        call too)."""
        where = "graphs.put_writes"
        for name, text in (("thread_id", thread_id), ("checkpoint_ns", checkpoint_ns),
                           ("checkpoint_id", checkpoint_id), ("task_id", task_id), ("task_path", task_path)):
            _text(where, name, text)
        if isinstance(writes, str | bytes) or not isinstance(writes, Sequence):
            raise InvalidArgument(f"{where} refused: writes must be a list of (idx, channel, value)")
        # One write per idx, as if saved one after the other: a second idx >= 0
        # is ignored, a second idx < 0 replaces the first.
        checked: dict[int, Write] = {}
        for i, w in enumerate(writes):
            if type(w) not in (tuple, builtins.list) or len(w) != 3:
                raise InvalidArgument(f"{where} refused: writes[{i}] must be an (idx, channel, value) triple")
            idx, channel, value = w
            if type(idx) is not int or not INT64_MIN <= idx <= INT64_MAX:
                raise InvalidArgument(f"{where} refused: writes[{i}]'s idx must be an int, got {idx!r:.60}")
            write = Write(idx, _text(where, f"writes[{i}]'s channel", channel), store(where, f"writes[{i}]'s value", value))
            if idx < 0 or idx not in checked:
                checked[idx] = write
        args = {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "checkpoint_id": checkpoint_id,
                "task_id": task_id, "task_path": task_path, "writes": builtins.list(checked.values())}
        run(self._ctx, PUT_WRITES, args, actor=actor, command_id=command_id)

    def delete_thread(self, thread_id: str, *, actor: str | None = None, command_id: str | None = None) -> None:
        """Forget a thread: its checkpoints, values and writes leave every
        read (the journal keeps the events until they are erased)."""
        run(self._ctx, DELETE_THREAD, {"thread_ids": [_text("graphs.delete_thread", "thread_id", thread_id)]},
            actor=actor, command_id=command_id)

    def delete_runs(self, run_ids: Sequence[str], *, actor: str | None = None, command_id: str | None = None) -> None:
        """Forget the checkpoints made by these runs (metadata ``run_id``), with their writes."""
        where = "graphs.delete_runs"
        if isinstance(run_ids, str) or not isinstance(run_ids, Iterable):
            raise InvalidArgument(f"{where} refused: run_ids must be a list of str, got {run_ids!r:.60}")
        ids = sorted({_text(where, "run_ids item", r) for r in run_ids})
        run(self._ctx, DELETE_RUNS, {"run_ids": ids}, actor=actor, command_id=command_id)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest", actor: str | None = None,
              command_id: str | None = None) -> None:
        """``keep_latest``: keep only the newest checkpoint of each namespace
        of each thread (with its writes and the values it refers to);
        ``delete``: forget the threads."""
        where = "graphs.prune"
        if strategy not in STRATEGIES:
            raise InvalidArgument(f"{where} refused: strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r:.60}")
        if isinstance(thread_ids, str) or not isinstance(thread_ids, Iterable):
            raise InvalidArgument(f"{where} refused: thread_ids must be a list of str, got {thread_ids!r:.60}")
        ids = builtins.list(dict.fromkeys(_text(where, "thread_ids item", t) for t in thread_ids))
        run(self._ctx, PRUNE, {"thread_ids": ids, "strategy": strategy}, actor=actor, command_id=command_id)

    def copy_thread(self, source_thread_id: str, target_thread_id: str, *, actor: str | None = None, command_id: str | None = None) -> None:
        """Give ``target_thread_id`` every checkpoint, value and write of the
        source (pointing at the same journal rows: nothing is stored twice)."""
        where = "graphs.copy_thread"
        args = {"thread_ids": [_text(where, "source_thread_id", source_thread_id)],
                "target_thread_id": _text(where, "target_thread_id", target_thread_id)}
        run(self._ctx, COPY, args, actor=actor, command_id=command_id)

    # --- reads --------------------------------------------------------------------

    def get(self, thread_id: str, checkpoint_ns: str = "", checkpoint_id: str | None = None) -> GraphCheckpoint | None:
        """A checkpoint of the thread in the namespace, the newest without
        ``checkpoint_id``; None if there is none."""
        return self._get(thread_id, checkpoint_ns, checkpoint_id, _serialized, _graph_checkpoint)

    def _get(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None,
             loader: Load, make: Make[T]) -> T | None:
        """:meth:`get`, each stored value given back as ``loader`` makes it
        (an integration may deserialize it there), the checkpoint as
        ``make`` makes it (see :func:`_assemble`)."""
        where = "graphs.get"
        _text(where, "thread_id", thread_id)
        _text(where, "checkpoint_ns", checkpoint_ns)
        if checkpoint_id is not None:
            _text(where, "checkpoint_id", checkpoint_id)
        with self._ctx.db.read(where) as conn:
            found = graphs.get(conn, thread_id, checkpoint_ns, checkpoint_id)
            return None if found is None else _assemble(conn, (thread_id, checkpoint_ns), [found], loader, make)[0]

    def list(
        self,
        thread_id: str | None = None,
        checkpoint_ns: str | None = None,
        *,
        checkpoint_id: str | None = None,
        before: str | None = None,
        filter: Mapping[str, Any] | None = None,
        limit: int | None = None,
    ) -> builtins.list[GraphCheckpoint]:
        """Checkpoints newest first (by checkpoint id): of one thread or all,
        of one namespace or all, older than ``before``, whose metadata has
        each key of ``filter`` equal to its value (as JSON: compared through
        an index, not by decoding every checkpoint); at most ``limit``."""
        return self._list(thread_id, checkpoint_ns, checkpoint_id=checkpoint_id, before=before, filter=filter,
                          limit=limit, loader=_serialized, make=_graph_checkpoint)

    def _list(
        self,
        thread_id: str | None,
        checkpoint_ns: str | None,
        *,
        checkpoint_id: str | None,
        before: str | None,
        filter: Mapping[str, Any] | None,
        limit: int | None,
        loader: Load,
        make: Make[T],
    ) -> builtins.list[T]:
        """:meth:`list`, each stored value given back as ``loader`` makes
        it, each checkpoint as ``make`` makes it."""
        where = "graphs.list"
        for name, value in (("thread_id", thread_id), ("checkpoint_ns", checkpoint_ns),
                            ("checkpoint_id", checkpoint_id), ("before", before)):
            if value is not None:
                _text(where, name, value)
        check_limit(where, limit)
        pairs: builtins.list[tuple[str, str | None]] = []
        if filter is not None:
            if not isinstance(filter, Mapping):
                raise InvalidArgument(f"{where} refused: filter must be a dict, got {filter!r:.60}")
            for key, value in filter.items():
                _text(where, "filter key", key)
                if value is None:
                    pairs.append((key, None))
                    continue
                try:
                    check_json_value(where, f"filter[{key!r}]", value)
                except InvalidArgument:
                    return []  # no stored metadata (JSON) can equal it
                pairs.append((key, graphs.metadata_value(value)))
        with self._ctx.db.read(where) as conn:
            scope = None if thread_id is None or checkpoint_ns is None else (thread_id, checkpoint_ns)
            return _assemble(conn, scope, graphs.list(conn, thread_id=thread_id, checkpoint_ns=checkpoint_ns,
                                                      checkpoint_id=checkpoint_id, before=before, metadata=pairs,
                                                      limit=limit), loader, make)
