"""Projection ``graphs``: where each graph checkpoint, channel value and
pending write of a thread is in the journal (the values themselves are
stored once, in the events), with the metadata that lists and filters need."""

from __future__ import annotations

import builtins
import functools
from collections.abc import Iterable, Sequence
from typing import Any, cast

import apsw
import msgspec

from eventkernel import codec
from eventkernel.codec import Event
from eventkernel.events.graphs import (
    GraphCheckpointSaved,
    GraphRunsDeleted,
    GraphThreadCopied,
    GraphThreadDeleted,
    GraphThreadPruned,
    GraphWritesSaved,
)
from eventkernel.journal import Recorded
from eventkernel.projections.rows import Target, limit_of

NAME = "graphs"
VERSION = 2  # 2: graph_checkpoint_metadata keyed by (key, value), its second index gone
# The journal positions whose payloads live rows read (every value is stored
# once, in its event): a compaction keeps these events' payloads with its base.
PAYLOADS = ("SELECT position FROM graph_checkpoints UNION SELECT position FROM graph_values "
            "UNION SELECT position FROM graph_writes")
HANDLES = frozenset(
    e.__event_type__ for e in (GraphCheckpointSaved, GraphWritesSaved, GraphThreadDeleted, GraphRunsDeleted,
                               GraphThreadPruned, GraphThreadCopied)
)
# The tables with a row per thread's checkpoint, value or write, found by thread
# (graph_checkpoint_metadata is found through graph_checkpoints' metadata).
THREAD_TABLES = ("graph_checkpoints", "graph_values", "graph_writes")


class GraphCheckpointRow(msgspec.Struct, frozen=True):
    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_checkpoint_id: str | None
    run_id: str | None
    channel_versions: dict[str, Any]
    metadata: dict[str, Any]
    created_at: int
    position: int


class GraphWriteRow(msgspec.Struct, frozen=True):
    task_id: str
    idx: int
    channel: str
    task_path: str
    position: int
    item: int


_CHECKPOINT_COLUMNS = ", ".join(GraphCheckpointRow.__struct_fields__)
_WRITE_COLUMNS = ", ".join(GraphWriteRow.__struct_fields__)


def version_key(version: Any) -> str:
    """A channel version as the ``version`` column holds it: its JSON (so that
    1, 1.5 and "1" stay apart)."""
    return codec.dump_json(version)


def metadata_value(value: Any) -> str:
    """A metadata value as the filter index holds it: canonical JSON."""
    return codec.canonical_json(value).decode()


def apply(conn: Target, recorded: Recorded, event: Event) -> None:
    if isinstance(event, GraphCheckpointSaved):
        key = (event.thread_id, event.checkpoint_ns, event.checkpoint_id)
        run_id = event.metadata.get("run_id")
        old: builtins.list[tuple[Any, ...]] = conn.execute(
            "DELETE FROM graph_checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ? "
            "RETURNING metadata", key
        ).fetchall()
        if old:  # saved again: its metadata rows go with it
            conn.executemany(_DELETE_METADATA, _metadata_rows(key, codec.decode_json(old[0][0])))
        conn.execute(
            f"INSERT INTO graph_checkpoints ({_CHECKPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*key, event.parent_checkpoint_id, run_id if type(run_id) is str else None,
             codec.dump_json(event.channel_versions), codec.dump_json(event.metadata), recorded.recorded_at,
             recorded.position),
        )
        conn.executemany(_INSERT_METADATA, _metadata_rows(key, event.metadata))
        for channel, cv in event.values.items():
            conn.execute(
                "INSERT OR REPLACE INTO graph_values (thread_id, checkpoint_ns, channel, version, position) "
                "VALUES (?, ?, ?, ?, ?)",
                (event.thread_id, event.checkpoint_ns, channel, version_key(cv.version), recorded.position),
            )
    elif isinstance(event, GraphWritesSaved):
        for item, w in enumerate(event.writes):
            # A special channel's write (idx < 0) replaces the one before; any other is kept once.
            conn.execute(
                f"INSERT OR {'REPLACE' if w.idx < 0 else 'IGNORE'} INTO graph_writes (thread_id, checkpoint_ns, "
                "checkpoint_id, task_id, idx, channel, task_path, position, item) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (event.thread_id, event.checkpoint_ns, event.checkpoint_id, event.task_id, w.idx, w.channel,
                 event.task_path, recorded.position, item),
            )
    elif isinstance(event, GraphThreadDeleted) or (isinstance(event, GraphThreadPruned)
                                                     and event.strategy == "delete"):
        _drop_metadata_of(conn, conn.execute(
            "SELECT thread_id, checkpoint_ns, checkpoint_id, metadata FROM graph_checkpoints WHERE thread_id = ?",
            (event.thread_id,)).fetchall())
        for table in THREAD_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE thread_id = ?", (event.thread_id,))
    elif isinstance(event, GraphThreadPruned):
        doomed = conn.execute(
            "SELECT checkpoint_ns, checkpoint_id, metadata FROM graph_checkpoints c WHERE thread_id = ? "
            "AND checkpoint_id < "
            "(SELECT max(checkpoint_id) FROM graph_checkpoints WHERE thread_id = c.thread_id "
            "AND checkpoint_ns = c.checkpoint_ns)",
            (event.thread_id,),
        ).fetchall()
        _forget(conn, event.thread_id, doomed)
    elif isinstance(event, GraphRunsDeleted):
        doomed = conn.execute(
            f"SELECT checkpoint_ns, checkpoint_id, metadata FROM graph_checkpoints WHERE thread_id = ? "
            f"AND run_id IN ({', '.join('?' * len(event.run_ids))})",
            (event.thread_id, *event.run_ids),
        ).fetchall()
        _forget(conn, event.thread_id, doomed)
    elif isinstance(event, GraphThreadCopied):
        source, target = event.source_thread_id, event.thread_id
        _drop_metadata_of(conn, conn.execute(
            "SELECT t.thread_id, t.checkpoint_ns, t.checkpoint_id, t.metadata FROM graph_checkpoints t "
            "JOIN graph_checkpoints s ON s.thread_id = ? AND s.checkpoint_ns = t.checkpoint_ns "
            "AND s.checkpoint_id = t.checkpoint_id WHERE t.thread_id = ?", (source, target)).fetchall())
        conn.execute(
            f"INSERT OR REPLACE INTO graph_checkpoints ({_CHECKPOINT_COLUMNS}) SELECT ?, checkpoint_ns, checkpoint_id, "
            "parent_checkpoint_id, run_id, channel_versions, metadata, created_at, position "
            "FROM graph_checkpoints WHERE thread_id = ?",
            (target, source),
        )
        rows: builtins.list[tuple[Any, ...]] = conn.execute(
            "SELECT checkpoint_ns, checkpoint_id, metadata FROM graph_checkpoints WHERE thread_id = ?", (source,)
        ).fetchall()
        conn.executemany(_INSERT_METADATA, [
            row for ns, checkpoint_id, metadata in rows
            for row in _metadata_rows((target, ns, checkpoint_id), codec.decode_json(metadata))
        ])
        conn.execute(
            "INSERT OR REPLACE INTO graph_values SELECT ?, checkpoint_ns, channel, version, position "
            "FROM graph_values WHERE thread_id = ?",
            (target, source),
        )
        conn.execute(
            "INSERT OR REPLACE INTO graph_writes SELECT ?, checkpoint_ns, checkpoint_id, task_id, idx, channel, "
            "task_path, position, item FROM graph_writes WHERE thread_id = ?",
            (target, source),
        )


_INSERT_METADATA = ("INSERT INTO graph_checkpoint_metadata (key, value, thread_id, checkpoint_ns, checkpoint_id) "
                    "VALUES (?, ?, ?, ?, ?)")
_DELETE_METADATA = ("DELETE FROM graph_checkpoint_metadata WHERE key = ? AND value = ? AND thread_id = ? "
                    "AND checkpoint_ns = ? AND checkpoint_id = ?")


def _metadata_rows(key: tuple[str, str, str], metadata: dict[str, Any]) -> builtins.list[tuple[str, ...]]:
    """The checkpoint's rows of ``graph_checkpoint_metadata``: (key, value, thread, namespace, id)."""
    return [(name, metadata_value(value), *key) for name, value in metadata.items()]


def _drop_metadata_of(conn: Target, checkpoints: Sequence[tuple[Any, ...]]) -> None:
    """Delete the metadata rows of these checkpoints: (thread, namespace, id, metadata JSON) each."""
    conn.executemany(_DELETE_METADATA, [
        row for thread_id, ns, checkpoint_id, metadata in checkpoints
        for row in _metadata_rows((thread_id, ns, checkpoint_id), codec.decode_json(metadata))
    ])


def _forget(conn: Target, thread_id: str, doomed: Sequence[tuple[Any, ...]]) -> None:
    """Remove these checkpoints of the thread ((namespace, id, metadata JSON)
    each), their metadata and writes, and the channel values no remaining
    checkpoint of the thread refers to."""
    if not doomed:
        return
    _drop_metadata_of(conn, [(thread_id, *row) for row in doomed])
    for ns, checkpoint_id, _ in doomed:
        key = (thread_id, ns, checkpoint_id)
        where = "thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?"
        conn.execute(f"DELETE FROM graph_checkpoints WHERE {where}", key)
        conn.execute(f"DELETE FROM graph_writes WHERE {where}", key)
    kept: set[tuple[Any, ...]] = set()
    for ns, versions in conn.execute(
        "SELECT checkpoint_ns, channel_versions FROM graph_checkpoints WHERE thread_id = ?", (thread_id,)
    ):
        kept.update((ns, channel, version_key(v)) for channel, v in codec.decode_json(versions).items())
    for row in conn.execute(
        "SELECT checkpoint_ns, channel, version FROM graph_values WHERE thread_id = ?", (thread_id,)
    ).fetchall():
        if row not in kept:
            conn.execute(
                "DELETE FROM graph_values WHERE thread_id = ? AND checkpoint_ns = ? AND channel = ? AND version = ?",
                (thread_id, *row),
            )


# --- queries ---------------------------------------------------------------------


Found = tuple[GraphCheckpointRow, "GraphCheckpointSaved | None"]
"""A checkpoint's row with its event, decoded; None when that event is not in
the journal table (kept with a compaction's base)."""

# A checkpoint's row without its JSON columns (its event holds the same versions and
# metadata: decoded once, from it), then its event's.
_SELECT = ("SELECT c.thread_id, c.checkpoint_ns, c.checkpoint_id, c.parent_checkpoint_id, c.run_id, c.created_at, "
           "c.position, j.type, j.schema, j.data")
_WITH_EVENT = "LEFT JOIN journal j ON j.position = c.position"


def _found(conn: apsw.Connection, rows: Iterable[tuple[Any, ...]]) -> builtins.list[Found]:
    found: builtins.list[Found] = []
    for row in rows:
        data = row[9]
        if data is None:  # the event is kept with a compaction's base: the row's own JSON
            versions, metadata = cast("tuple[str, str]", conn.execute(
                "SELECT channel_versions, metadata FROM graph_checkpoints "
                "WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?", row[:3]).fetchone())
            found.append((GraphCheckpointRow(row[0], row[1], row[2], row[3], row[4], codec.decode_json(versions),
                                             codec.decode_json(metadata), row[5], row[6]), None))
            continue
        saved: GraphCheckpointSaved = codec.decode(row[7], row[8], data)  # type: ignore[assignment]
        found.append((GraphCheckpointRow(row[0], row[1], row[2], row[3], row[4], saved.channel_versions,
                                         saved.metadata, row[5], row[6]), saved))
    return found


def get(conn: apsw.Connection, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None) -> Found | None:
    """One checkpoint of the thread in the namespace, with its event's row;
    the newest when ``checkpoint_id`` is None."""
    if checkpoint_id is None:
        row = conn.execute(
            f"{_SELECT} FROM graph_checkpoints c {_WITH_EVENT} WHERE c.thread_id = ? AND c.checkpoint_ns = ? "
            "ORDER BY c.checkpoint_id DESC LIMIT 1",
            (thread_id, checkpoint_ns),
        ).fetchone()
    else:
        row = conn.execute(
            f"{_SELECT} FROM graph_checkpoints c {_WITH_EVENT} WHERE c.thread_id = ? AND c.checkpoint_ns = ? "
            "AND c.checkpoint_id = ?",
            (thread_id, checkpoint_ns, checkpoint_id),
        ).fetchone()
    return None if row is None else _found(conn, (row,))[0]


def list(
    conn: apsw.Connection,
    *,
    thread_id: str | None,
    checkpoint_ns: str | None,
    checkpoint_id: str | None,
    before: str | None,
    metadata: Sequence[tuple[str, str | None]],
    limit: int | None,
) -> builtins.list[Found]:
    """Checkpoints newest first (by id), of a thread or of all, in one
    namespace or all, before a checkpoint id, whose metadata has each (key,
    canonical JSON value) given (a None value: the key is absent or null);
    each with its event."""
    given = [value for value in (thread_id, checkpoint_ns, checkpoint_id, before) if value is not None]
    driver = next((pair for pair in metadata if pair[1] is not None), None)
    args: builtins.list[Any] = [] if driver is None else builtins.list(driver)
    args += given
    for pair in metadata:
        if pair is not driver:
            args += pair if pair[1] is not None else pair[:1]
    args.append(limit_of(limit))
    sql = _list_sql(thread_id is not None, checkpoint_ns is not None, checkpoint_id is not None, before is not None,
                    tuple(value is None for _, value in metadata))
    return _found(conn, conn.execute(sql, args).fetchall())


@functools.lru_cache(maxsize=128)
def _list_sql(thread: bool, ns: bool, checkpoint_id: bool, before: bool, nulls: tuple[bool, ...]) -> str:
    """The statement of :func:`list` for what it was given (``nulls``: for
    each metadata pair, whether its value is None); its arguments are the
    first non-None pair, the thread, namespace, id and ``before`` given, the
    other pairs (a None one by its key alone), the limit."""
    where = [f"c.{column} = ?" for column, present in (("thread_id", thread), ("checkpoint_ns", ns),
                                                        ("checkpoint_id", checkpoint_id)) if present]
    if before:
        where.append("c.checkpoint_id < ?")
    same = "m.thread_id = c.thread_id AND m.checkpoint_ns = c.checkpoint_ns AND m.checkpoint_id = c.checkpoint_id"
    source = "graph_checkpoints c"
    driver = nulls.index(False) if False in nulls else None
    if driver is not None:
        # Start from the metadata index: the checkpoints with this (key, value), then their rows.
        source = ("graph_checkpoint_metadata d JOIN graph_checkpoints c ON c.thread_id = d.thread_id "
                  "AND c.checkpoint_ns = d.checkpoint_ns AND c.checkpoint_id = d.checkpoint_id")
        where.insert(0, "d.key = ? AND d.value = ?")
    for i, null in enumerate(nulls):
        if i == driver:
            continue
        if null:  # absent or null: read from the checkpoint's own metadata
            where.append("NOT EXISTS (SELECT 1 FROM json_each(c.metadata) e WHERE e.key = ? AND e.type != 'null')")
        else:
            where.append(f"EXISTS (SELECT 1 FROM graph_checkpoint_metadata m WHERE m.key = ? AND m.value = ? "
                         f"AND {same})")
    # Ids are unique in one namespace of one thread: with both given, the id alone orders.
    order = "c.checkpoint_id DESC" if thread and ns else "c.checkpoint_id DESC, c.checkpoint_ns, c.thread_id"
    return (f"{_SELECT} FROM {source} {_WITH_EVENT}{' WHERE ' + ' AND '.join(where) if where else ''} "
            f"ORDER BY {order} LIMIT ?")


def threads_of_runs(conn: apsw.Connection, run_ids: Sequence[str]) -> builtins.list[str]:
    """The threads that hold a checkpoint of one of these runs."""
    return [row[0] for row in conn.execute(
        f"SELECT DISTINCT thread_id FROM graph_checkpoints WHERE run_id IN ({', '.join('?' * len(run_ids))}) "
        "ORDER BY thread_id",
        run_ids,
    )]


def has_thread(conn: apsw.Connection, thread_id: str) -> bool:
    """Whether the projection holds anything of the thread."""
    return any(
        conn.execute(f"SELECT 1 FROM {table} WHERE thread_id = ? LIMIT 1", (thread_id,)).fetchone() is not None
        for table in THREAD_TABLES
    )


_CHUNK = 200  # keys per statement (SQLite binds at most 32,766 values)


def references(
    conn: apsw.Connection, scope: tuple[str, str] | None, values: Sequence[tuple[str, str, str, str]],
    checkpoints: Sequence[tuple[str, str, str]],
) -> tuple[dict[tuple[str, str, str, str], int], dict[tuple[str, str, str], builtins.list[GraphWriteRow]]]:
    """What checkpoints point at: for each (thread, namespace, channel,
    version key) of ``values``, the position of the latest event that saved
    the channel at that version (those without one left out); for each
    (thread, namespace, id) of ``checkpoints``, its pending writes in
    (task_path, task_id, idx) order (those without any left out).
    ``scope``: the (thread, namespace) of every key, when they share one
    (a saver's reads: looked up by the rest of each key). Primary-key
    lookups, one statement per 200 of each."""
    one = scope is not None
    prefix = [] if scope is None else builtins.list(scope)
    positions: dict[tuple[str, str, str, str], int] = {}
    writes: dict[tuple[str, str, str], builtins.list[GraphWriteRow]] = {}
    for start in range(0, max(len(values), len(checkpoints)), _CHUNK):
        some_values, some_keys = values[start:start + _CHUNK], checkpoints[start:start + _CHUNK]
        args = []
        if some_values:
            args += prefix
            args += [part for key in some_values for part in (key[2:] if one else key)]
        if some_keys:
            args += prefix
            args += [key[2] for key in some_keys] if one else [part for key in some_keys for part in key]
        for row in conn.execute(_references_sql(one, len(some_values), len(some_keys)), args):
            if row[0] == 0:
                positions[row[1:5]] = row[5]
            else:
                writes.setdefault(row[1:4], []).append(GraphWriteRow(*row[4:]))
    for pending in writes.values():
        if len(pending) > 1:
            pending.sort(key=lambda w: (w.task_path, w.task_id, w.idx))
    return positions, writes


@functools.lru_cache(maxsize=256)
def _references_sql(one: bool, values: int, keys: int) -> str:
    """The statement of :func:`references` for ``values`` channel versions
    and ``keys`` checkpoints (``one``: all of one thread's namespace, whose
    thread and namespace come first in the arguments of each part)."""
    if one:
        in_values = "thread_id = ? AND checkpoint_ns = ? AND (channel, version) IN (VALUES {})", "(?, ?)"
        in_keys = "thread_id = ? AND checkpoint_ns = ? AND checkpoint_id IN ({})", "?"
    else:
        in_values = "(thread_id, checkpoint_ns, channel, version) IN (VALUES {})", "(?, ?, ?, ?)"
        in_keys = "(thread_id, checkpoint_ns, checkpoint_id) IN (VALUES {})", "(?, ?, ?)"
    parts = []
    if values:
        parts.append("SELECT 0, thread_id, checkpoint_ns, channel, version, position, NULL, NULL, NULL, NULL "
                     f"FROM graph_values WHERE {in_values[0].format(', '.join([in_values[1]] * values))}")
    if keys:
        parts.append(f"SELECT 1, thread_id, checkpoint_ns, checkpoint_id, {_WRITE_COLUMNS} FROM graph_writes "
                     f"WHERE {in_keys[0].format(', '.join([in_keys[1]] * keys))}")
    return " UNION ALL ".join(parts)


def write_keys(
    conn: apsw.Connection, thread_id: str, checkpoint_ns: str, checkpoint_id: str, task_id: str
) -> set[int]:
    """The idx of every write of the task already saved for the checkpoint."""
    return {row[0] for row in conn.execute(
        "SELECT idx FROM graph_writes WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ? AND task_id = ?",
        (thread_id, checkpoint_ns, checkpoint_id, task_id),
    )}
