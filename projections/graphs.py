"""Projection ``graphs``: where each graph checkpoint, channel value and
pending write of a thread is in the journal (the values themselves are
stored once, in the events), with the metadata that lists and filters need."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

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
VERSION = 1
# The journal positions whose payloads live rows read (every value is stored
# once, in its event): a compaction keeps these events' payloads with its base.
PAYLOADS = ("SELECT position FROM graph_checkpoints UNION SELECT position FROM graph_values "
            "UNION SELECT position FROM graph_writes")
HANDLES = frozenset(
    e.__event_type__ for e in (GraphCheckpointSaved, GraphWritesSaved, GraphThreadDeleted, GraphRunsDeleted,
                               GraphThreadPruned, GraphThreadCopied)
)
TABLES = ("graph_checkpoints", "graph_checkpoint_metadata", "graph_values", "graph_writes")


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
        conn.execute(
            f"INSERT OR REPLACE INTO graph_checkpoints ({_CHECKPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*key, event.parent_checkpoint_id, run_id if type(run_id) is str else None,
             codec.dump_json(event.channel_versions), codec.dump_json(event.metadata), recorded.recorded_at,
             recorded.position),
        )
        conn.execute(
            "DELETE FROM graph_checkpoint_metadata WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?", key
        )
        for name, value in event.metadata.items():
            conn.execute(
                "INSERT INTO graph_checkpoint_metadata (thread_id, checkpoint_ns, checkpoint_id, key, value) "
                "VALUES (?, ?, ?, ?, ?)",
                (*key, name, metadata_value(value)),
            )
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
        for table in TABLES:
            conn.execute(f"DELETE FROM {table} WHERE thread_id = ?", (event.thread_id,))
    elif isinstance(event, GraphThreadPruned):
        doomed = conn.execute(
            "SELECT checkpoint_ns, checkpoint_id FROM graph_checkpoints c WHERE thread_id = ? AND checkpoint_id < "
            "(SELECT max(checkpoint_id) FROM graph_checkpoints WHERE thread_id = c.thread_id "
            "AND checkpoint_ns = c.checkpoint_ns)",
            (event.thread_id,),
        ).fetchall()
        _forget(conn, event.thread_id, doomed)
    elif isinstance(event, GraphRunsDeleted):
        doomed = conn.execute(
            f"SELECT checkpoint_ns, checkpoint_id FROM graph_checkpoints WHERE thread_id = ? "
            f"AND run_id IN ({', '.join('?' * len(event.run_ids))})",
            (event.thread_id, *event.run_ids),
        ).fetchall()
        _forget(conn, event.thread_id, doomed)
    elif isinstance(event, GraphThreadCopied):
        source, target = event.source_thread_id, event.thread_id
        conn.execute(
            f"INSERT OR REPLACE INTO graph_checkpoints ({_CHECKPOINT_COLUMNS}) SELECT ?, checkpoint_ns, checkpoint_id, "
            "parent_checkpoint_id, run_id, channel_versions, metadata, created_at, position "
            "FROM graph_checkpoints WHERE thread_id = ?",
            (target, source),
        )
        conn.execute(
            "INSERT OR REPLACE INTO graph_checkpoint_metadata SELECT ?, checkpoint_ns, checkpoint_id, key, value "
            "FROM graph_checkpoint_metadata WHERE thread_id = ?",
            (target, source),
        )
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


def _forget(conn: Target, thread_id: str, doomed: Sequence[tuple[Any, ...]]) -> None:
    """Remove these checkpoints of the thread, their metadata and writes, and
    the channel values no remaining checkpoint of the thread refers to."""
    if not doomed:
        return
    for ns, checkpoint_id in doomed:
        key = (thread_id, ns, checkpoint_id)
        where = "thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?"
        conn.execute(f"DELETE FROM graph_checkpoints WHERE {where}", key)
        conn.execute(f"DELETE FROM graph_checkpoint_metadata WHERE {where}", key)
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


def _checkpoint(row: tuple[Any, ...]) -> GraphCheckpointRow:
    values = builtins.list(row)
    values[5] = codec.decode_json(values[5])
    values[6] = codec.decode_json(values[6])
    return GraphCheckpointRow(*values)


def get(conn: apsw.Connection, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None) -> GraphCheckpointRow | None:
    """One checkpoint of the thread in the namespace; the newest when ``checkpoint_id`` is None."""
    if checkpoint_id is None:
        row = conn.execute(
            f"SELECT {_CHECKPOINT_COLUMNS} FROM graph_checkpoints WHERE thread_id = ? AND checkpoint_ns = ? "
            "ORDER BY checkpoint_id DESC LIMIT 1",
            (thread_id, checkpoint_ns),
        ).fetchone()
    else:
        row = conn.execute(
            f"SELECT {_CHECKPOINT_COLUMNS} FROM graph_checkpoints WHERE thread_id = ? AND checkpoint_ns = ? "
            "AND checkpoint_id = ?",
            (thread_id, checkpoint_ns, checkpoint_id),
        ).fetchone()
    return None if row is None else _checkpoint(row)


def list(
    conn: apsw.Connection,
    *,
    thread_id: str | None,
    checkpoint_ns: str | None,
    checkpoint_id: str | None,
    before: str | None,
    metadata: Sequence[tuple[str, str | None]],
    limit: int | None,
) -> builtins.list[GraphCheckpointRow]:
    """Checkpoints newest first (by id), of a thread or of all, in one
    namespace or all, before a checkpoint id, whose metadata has each (key,
    canonical JSON value) given (a None value: the key is absent or null)."""
    where: builtins.list[str] = []
    args: builtins.list[Any] = []
    for column, value in (("thread_id", thread_id), ("checkpoint_ns", checkpoint_ns),
                          ("checkpoint_id", checkpoint_id)):
        if value is not None:
            where.append(f"c.{column} = ?")
            args.append(value)
    if before is not None:
        where.append("c.checkpoint_id < ?")
        args.append(before)
    same = "m.thread_id = c.thread_id AND m.checkpoint_ns = c.checkpoint_ns AND m.checkpoint_id = c.checkpoint_id"
    source = "graph_checkpoints c"
    driver = next((pair for pair in metadata if pair[1] is not None), None)
    if driver is not None:
        # Start from the metadata index: the checkpoints with this (key, value), then their rows.
        source = ("graph_checkpoint_metadata d JOIN graph_checkpoints c ON c.thread_id = d.thread_id "
                  "AND c.checkpoint_ns = d.checkpoint_ns AND c.checkpoint_id = d.checkpoint_id")
        where.insert(0, "d.key = ? AND d.value = ?")
        args[:0] = builtins.list(driver)
    for key, value in metadata:
        if (key, value) == driver:
            continue
        if value is None:
            where.append(f"NOT EXISTS (SELECT 1 FROM graph_checkpoint_metadata m WHERE {same} AND m.key = ? "
                         "AND m.value != 'null')")
            args.append(key)
        else:
            where.append(f"EXISTS (SELECT 1 FROM graph_checkpoint_metadata m WHERE {same} AND m.key = ? "
                         "AND m.value = ?)")
            args += [key, value]
    sql = (f"SELECT {', '.join('c.' + c for c in GraphCheckpointRow.__struct_fields__)} FROM {source}"
           f"{' WHERE ' + ' AND '.join(where) if where else ''} "
           "ORDER BY c.checkpoint_id DESC, c.checkpoint_ns, c.thread_id LIMIT ?")
    return [_checkpoint(row) for row in conn.execute(sql, (*args, limit_of(limit)))]


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
        for table in TABLES
    )


def value_positions(
    conn: apsw.Connection, thread_id: str, checkpoint_ns: str, versions: dict[str, Any]
) -> dict[str, int]:
    """Per channel, the position of the event holding its value at the given
    version (if any): one primary-key lookup each."""
    out = {}
    for channel, version in versions.items():
        row = conn.execute(
            "SELECT position FROM graph_values WHERE thread_id = ? AND checkpoint_ns = ? AND channel = ? "
            "AND version = ?",
            (thread_id, checkpoint_ns, channel, version_key(version)),
        ).fetchone()
        if row is not None:
            out[channel] = row[0]
    return out


def writes(conn: apsw.Connection, thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> builtins.list[GraphWriteRow]:
    """The checkpoint's pending writes, in (task_path, task_id, idx) order."""
    return [GraphWriteRow(*row) for row in conn.execute(
        f"SELECT {_WRITE_COLUMNS} FROM graph_writes WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ? "
        "ORDER BY task_path, task_id, idx",
        (thread_id, checkpoint_ns, checkpoint_id),
    )]


def write_keys(
    conn: apsw.Connection, thread_id: str, checkpoint_ns: str, checkpoint_id: str, task_id: str
) -> set[int]:
    """The idx of every write of the task already saved for the checkpoint."""
    return {row[0] for row in conn.execute(
        "SELECT idx FROM graph_writes WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ? AND task_id = ?",
        (thread_id, checkpoint_ns, checkpoint_id, task_id),
    )}
