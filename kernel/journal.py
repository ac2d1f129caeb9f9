"""The journal: appending events with optimistic concurrency, idempotent
event ids and a hash chain, and reading them back in order.

Functions here take an ``apsw.Connection`` already inside a write
transaction (appends) or any connection (reads); transactions and error
translation belong to :mod:`eventkernel.connection`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from typing import Any, cast

import apsw
import msgspec

from eventkernel import codec
from eventkernel.codec import Event
from eventkernel.errors import ConcurrencyConflict, IdempotencyConflict, InvalidArgument
from eventkernel.validate import check_json_dict, check_optional_text, check_text, prefix_upper

GENESIS_HASH = bytes(32)
MAX_STREAM_LEN = 1024
_STREAM = re.compile(r"^[a-z][a-z0-9_]*:.+$", re.DOTALL)
_PAGE = 1000
COLUMNS = "position, stream, version, type, schema, data, meta, event_id, correlation_id, recorded_at, hash"
INSERT = f"INSERT INTO journal ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
# What the kernel's own projections read of a row (in ``COLUMNS`` order):
# a rebuild of them need not fetch nor decode the metadata, the event id or the hash.
PROJECTED = "position, stream, version, type, schema, data, NULL, NULL, correlation_id, recorded_at, X''"
_canonical = msgspec.json.Encoder()
_meta_decoder = msgspec.json.Decoder().decode


class Recorded(msgspec.Struct, frozen=True):
    """An event as stored in the journal. (Not keyword-only: replay builds
    millions of these, and positional construction is several times cheaper.)"""

    position: int
    stream: str
    version: int
    type: str
    event: Event
    event_id: str | None
    correlation_id: str | None
    meta: dict[str, Any] | None
    recorded_at: int  # ms since epoch, UTC
    hash: bytes


class LogEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A journal row with its JSON decoded but no Event class needed: what
    tools (the CLI, exports) show for any event type, known or not."""

    position: int
    stream: str
    version: int
    type: str
    schema: int
    data: Any
    meta: dict[str, Any] | None
    event_id: str | None
    correlation_id: str | None
    recorded_at: int
    hash: str  # hex


def entry_from_row(row: Sequence[Any]) -> LogEntry:
    position, stream, version, type_, schema, data, meta, event_id, correlation_id, recorded_at, hash_ = row
    return LogEntry(
        position=position, stream=stream, version=version, type=type_, schema=schema,
        data=codec.decode_json(data), meta=codec.decode_json(meta), event_id=event_id,
        correlation_id=correlation_id, recorded_at=recorded_at, hash=hash_.hex(),
    )


class Appended(msgspec.Struct, frozen=True):
    """What an append wrote, or found already written (``replayed``)."""

    records: list[Recorded]
    replayed: bool


def row_hash(
    prev: bytes,
    position: int,
    stream: str,
    version: int,
    type_: str,
    schema: int,
    data: str,
    meta: str | None,
    event_id: str | None,
    correlation_id: str | None,
    recorded_at: int,
) -> bytes:
    """The chain hash of a row: sha256(prev ‖ canonical JSON of the row's
    immutable columns, with the payload and the metadata replaced by their
    sha256 digests). Chaining over digests rather than the payloads lets a
    payload be erased later while the chain still verifies."""
    return row_hash_of_digests(prev, position, stream, version, type_, schema, digest(data),
                               None if meta is None else digest(meta), event_id, correlation_id, recorded_at)


def digest(text: str) -> str:
    """The sha256 hex digest a row's payload or metadata is chained over."""
    return hashlib.sha256(text.encode()).hexdigest()


def row_hash_of_digests(
    prev: bytes, position: int, stream: str, version: int, type_: str, schema: int, data_digest: str,
    meta_digest: str | None, event_id: str | None, correlation_id: str | None, recorded_at: int,
) -> bytes:
    """``row_hash`` from the digests themselves: what an erased row is checked by."""
    body = _canonical.encode([position, stream, version, type_, schema, data_digest, meta_digest, event_id,
                              correlation_id, recorded_at])
    return hashlib.sha256(prev + body).digest()


def expected_hash(prev: bytes, row: Sequence[Any], erased: Sequence[Any] | None = None) -> bytes:
    """The chain hash a journal row (``COLUMNS`` order) must carry after
    ``prev``; ``erased``: its entry in the table ``erased`` (position, data
    digest, meta digest, erasure) when its payload was erased."""
    if erased is None:
        return row_hash(prev, row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9])
    return row_hash_of_digests(prev, row[0], row[1], row[2], row[3], row[4], erased[1], erased[2], row[7], row[8],
                               row[9])


ERASED_DATA = "null"
"""The payload of an erased row (its metadata is NULL)."""


def row_hash_v1(prev: bytes, *columns: Any) -> bytes:
    """The chain hash of eventkernel 0.1.0, over the row's columns themselves
    (in ``row_hash``'s order, payload included): what files of that version
    hold until their first writable open re-chains them, and what anchors
    taken from them are checked against."""
    return hashlib.sha256(prev + _canonical.encode(list(columns))).digest()


def head(conn: apsw.Connection) -> tuple[int, bytes]:
    """(position, hash) of the last event; when there is none, the base's
    (a view of a compacted journal as of its base), else (0, GENESIS_HASH)."""
    for position, hash_ in conn.execute("SELECT position, hash FROM journal ORDER BY position DESC LIMIT 1"):
        return position, hash_
    found = base(conn)
    return (0, GENESIS_HASH) if found is None else (found[0], found[1])


def head_row(conn: apsw.Connection) -> tuple[int, bytes, int]:
    """(position, hash, recorded_at) of the last event; when there is none,
    the base's (a replica started at a compacted journal's base), else
    (0, GENESIS_HASH, 0)."""
    for row in conn.execute("SELECT position, hash, recorded_at FROM journal ORDER BY position DESC LIMIT 1"):
        return row[0], row[1], row[2]
    found = base(conn)
    return (0, GENESIS_HASH, 0) if found is None else (found[0], found[1], found[2])


def base(conn: apsw.Connection) -> tuple[int, bytes, int, str] | None:
    """(position, hash, recorded_at, archive) of the journal's base — the
    last event a compaction moved to an archive — or None (the journal
    starts at position 1)."""
    if not conn.table_exists("main", "journal_base") and conn.execute(
            "SELECT 1 FROM sqlite_temp_schema WHERE name = 'journal_base'").fetchone() is None:
        return None  # (a view of the past sees the file's base through a temporary view)
    for position, hash_, recorded_at, archive in conn.execute(
            "SELECT position, hash, recorded_at, archive FROM journal_base ORDER BY position DESC LIMIT 1"):
        return int(position), bytes(hash_), int(recorded_at), str(archive)
    return None


def _base_version(conn: apsw.Connection, stream: str) -> int:
    """The stream's version at the base (0: none, or no base)."""
    if not conn.table_exists("main", "base_streams"):
        return 0
    row = conn.execute("SELECT version FROM base_streams WHERE stream = ?", (stream,)).fetchone()
    return 0 if row is None else int(row[0])


def stream_version(conn: apsw.Connection, stream: str) -> int:
    """The stream's current version; 0 when it has no events (its version
    at the base when its events all moved to an archive)."""
    for (version,) in conn.execute("SELECT max(version) FROM journal WHERE stream = ?", (stream,)):
        return int(version) if version is not None else _base_version(conn, stream)
    return 0


def _has_version(conn: apsw.Connection, stream: str, version: int) -> bool:
    return conn.execute("SELECT 1 FROM journal WHERE stream = ? AND version = ?", (stream, version)).fetchone() \
        is not None or _base_version(conn, stream) == version


def check_stream(where: str, stream: Any) -> str:
    text = check_text(where, "stream", stream, max_len=MAX_STREAM_LEN)
    if not _STREAM.match(text):
        raise InvalidArgument(
            f"{where} refused: stream {text!r} must be named '<kind>:<id>' with a lowercase kind, "
            "e.g. 'order:42'"
        )
    return text


def append(
    conn: apsw.Connection,
    stream: str,
    events: Sequence[Event],
    *,
    recorded_at: int,
    expected_version: int | None = None,
    event_ids: Sequence[str | None] | None = None,
    correlation_id: str | None = None,
    meta: dict[str, Any] | None = None,
    where: str = "append",
    known_head: tuple[int, bytes] | None = None,
    meta_text: str | None = None,
) -> Appended:
    """Append events to one stream. Call inside a write transaction.
    ``known_head`` spares the head lookup when the caller, holding the write
    lock, already knows it; ``meta_text`` is ``meta`` already checked and
    encoded (the kernel's own command metadata, encoded once per command).

    Raises InvalidArgument, ConcurrencyConflict, IdempotencyConflict; on a
    rejection nothing is written.
    """
    encoded, ids, meta_text = prepare(stream, events, expected_version=expected_version, event_ids=event_ids,
                                      correlation_id=correlation_id, meta=meta, where=where, meta_text=meta_text)
    if event_ids is not None:
        found = [None if event_id is None else
                 conn.execute(f"SELECT {COLUMNS} FROM journal WHERE event_id = ?", (event_id,)).fetchone()
                 for event_id in ids]
        replay = replayed(found, stream, encoded, where)
        if replay is not None:
            return Appended(replay, True)

    if expected_version is None:
        current = stream_version(conn, stream)
    else:
        # A point lookup proves version n exists; UNIQUE(stream, version)
        # refuses n + 1 if it exists too. Cheaper than max(version).
        if expected_version > 0 and not _has_version(conn, stream, expected_version):
            raise ConcurrencyConflict(stream, expected_version, stream_version(conn, stream))
        current = expected_version

    rows, records = chain(known_head if known_head is not None else head(conn), stream, events, encoded, ids,
                          current, recorded_at, correlation_id, meta, meta_text)
    for row in rows:
        try:
            conn.execute(INSERT, row)
        except apsw.ConstraintError as e:
            if expected_version is not None and "journal.stream" in str(e):
                raise ConcurrencyConflict(stream, expected_version, stream_version(conn, stream)) from None
            raise
    return Appended(records, False)


def prepare(
    stream: str,
    events: Sequence[Event],
    *,
    expected_version: int | None,
    event_ids: Sequence[str | None] | None,
    correlation_id: str | None,
    meta: dict[str, Any] | None,
    where: str,
    meta_text: str | None,
) -> tuple[list[tuple[str, int, str]], list[str | None], str | None]:
    """An append's arguments checked and its events encoded, before any
    read or write: ((type, schema, data) per event, event id per event,
    the metadata's JSON). Every engine's append starts here."""
    check_stream(where, stream)
    if type(events) not in (list, tuple) and (isinstance(events, Event) or not isinstance(events, Sequence)) \
            or not events:
        raise InvalidArgument(f"{where} refused: events must be a non-empty list of Event, got {events!r:.80}")
    check_optional_text(where, "correlation_id", correlation_id)
    if meta_text is None:
        check_json_dict(where, "meta", meta)
    if expected_version is not None and (type(expected_version) is not int or expected_version < 0):
        raise InvalidArgument(
            f"{where} refused: expected_version must be an int >= 0 or None, got {expected_version!r}"
        )
    encoded = []
    for e in events:
        data = codec.encode(e, where=where)  # refuses non-events first
        encoded.append((codec.type_name(e), type(e).__event_schema__, data))
    if meta_text is None and meta is not None:
        meta_text = codec.encode_json(meta, where=where, name="meta")

    ids: list[str | None] = [None] * len(events)
    if event_ids is not None:
        if isinstance(event_ids, str) or len(event_ids) != len(events):
            raise InvalidArgument(
                f"{where} refused: event_ids must be a list with one id (or None) per event; "
                f"got {event_ids!r:.80} for {len(events)} events"
            )
        seen: set[str] = set()
        for i, event_id in enumerate(event_ids):
            check_optional_text(where, f"event_ids[{i}]", event_id)
            if event_id is not None:
                if event_id in seen:
                    raise InvalidArgument(f"{where} refused: event id {event_id!r} appears twice in one append")
                seen.add(event_id)
            ids[i] = event_id
    return encoded, ids, meta_text


def chain(
    at: tuple[int, bytes],
    stream: str,
    events: Sequence[Event],
    encoded: list[tuple[str, int, str]],
    ids: list[str | None],
    current: int,
    recorded_at: int,
    correlation_id: str | None,
    meta: dict[str, Any] | None,
    meta_text: str | None,
) -> tuple[list[tuple[Any, ...]], list[Recorded]]:
    """The journal rows (``COLUMNS`` order) and records of prepared events
    following the head ``at`` (position, hash), the stream at version ``current``."""
    position, prev = at
    rows = []
    records = []
    for i, (event, (type_, schema, data)) in enumerate(zip(events, encoded, strict=True)):
        position += 1
        version = current + 1 + i
        prev = row_hash(prev, position, stream, version, type_, schema, data, meta_text, ids[i], correlation_id, recorded_at)
        rows.append((position, stream, version, type_, schema, data, meta_text, ids[i], correlation_id, recorded_at, prev))
        records.append(
            Recorded(position, stream, version, type_, event, ids[i], correlation_id, meta, recorded_at, prev)
        )
    return rows, records


def replayed(
    found: list[Any],
    stream: str,
    encoded: list[tuple[str, int, str]],
    where: str,
) -> list[Recorded] | None:
    """Given the rows already holding each event id of an append (None for
    an id not found, or no id), the original records when every event was
    appended before with the same content; None when none was;
    IdempotencyConflict otherwise."""
    for row, (type_, _, data) in zip(found, encoded, strict=True):
        if row is not None and (row[1], row[3], row[5]) != (stream, type_, data):
            raise IdempotencyConflict(
                f"{where} refused: event id {row[7]!r} was already used at position {row[0]} "
                f"for a different event ({row[3]} on {row[1]!r}); an event id names one event forever"
            )
    present = [row for row in found if row is not None]
    if not present:
        return None
    if len(present) != len(found):
        first = present[0]
        raise IdempotencyConflict(
            f"{where} refused: event id {first[7]!r} was already appended at position {first[0]}, "
            "but other events of this append were not; a retry must repeat the original append exactly"
        )
    return [record_from_row(row) for row in present]


def record_from_row(row: Sequence[Any]) -> Recorded:
    """Decode one journal row (in ``COLUMNS`` order)."""
    position, stream, version, type_, schema, data, meta, event_id, correlation_id, recorded_at, hash_ = row
    return Recorded(
        position, stream, version, type_, codec.decode(type_, schema, data), event_id, correlation_id,
        None if meta is None else _meta_decoder(meta), recorded_at, hash_,
    )


def read(
    conn: apsw.Connection,
    *,
    stream: str | None = None,
    after: int = 0,
    until: int | None = None,
    limit: int | None = None,
    types: Sequence[str] = (),
    correlation_id: str | None = None,
) -> Iterator[Recorded]:
    """Events in position order matching every filter given, fetched a page
    at a time so no read transaction stays open between pages."""
    for row in read_rows(
        conn, stream=stream, after=after, until=until, limit=limit, types=types, correlation_id=correlation_id
    ):
        yield record_from_row(row)


def read_rows(
    conn: apsw.Connection,
    *,
    stream: str | None = None,
    after: int = 0,
    until: int | None = None,
    limit: int | None = None,
    types: Sequence[str] = (),
    correlation_id: str | None = None,
    stream_prefix: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    page: int = _PAGE,
    columns: str = COLUMNS,
) -> Iterator[tuple[Any, ...]]:
    """Raw journal rows (``COLUMNS`` order) matching the filters; see :func:`read`.
    ``since_ms``/``until_ms`` bound ``recorded_at`` (inclusive). ``columns``:
    what to select in their place (``PROJECTED``: only what the kernel's own
    projections read)."""
    where = ["position > ?"]
    args: list[Any] = []
    if stream is not None:
        where.append("stream = ?")
        args.append(stream)
    if stream_prefix:
        # A range on the (stream, version) index, not LIKE (whose wildcards a prefix may contain).
        upper = prefix_upper(stream_prefix)
        where.append("stream >= ?" if upper is None else "stream >= ? AND stream < ?")
        args += [stream_prefix] if upper is None else [stream_prefix, upper]
    if since_ms is not None:
        where.append("recorded_at >= ?")
        args.append(since_ms)
    if until_ms is not None:
        where.append("recorded_at <= ?")
        args.append(until_ms)
    if until is not None:
        where.append("position <= ?")
        args.append(until)
    if types:
        where.append(f"type IN ({', '.join('?' * len(types))})")
        args.extend(types)
    if correlation_id is not None:
        where.append("correlation_id = ?")
        args.append(correlation_id)
    # Within one stream, version order is position order and rides the
    # (stream, version) index.
    order = "version" if stream is not None else "position"
    sql = f"SELECT {columns} FROM journal WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?"
    remaining = limit
    last = after
    while remaining is None or remaining > 0:
        n = page if remaining is None else min(page, remaining)
        rows = conn.execute(sql, (last, *args, n)).fetchall()
        yield from rows
        if len(rows) < n:
            return
        last = cast(int, rows[-1][0])
        if remaining is not None:
            remaining -= len(rows)


def find_command(conn: apsw.Connection, command_id: str) -> list[Recorded]:
    """The events a command with this id appended, in order (empty if none).
    A command's events are contiguous: they were appended in one transaction."""
    first = conn.execute(
        "SELECT position FROM journal WHERE event_id = ?", (command_event_id(command_id, 0),)
    ).fetchone()
    if first is None:
        return []
    records: list[Recorded] = []
    for row in read_rows(conn, after=first[0] - 1, page=16):
        if row[7] != command_event_id(command_id, len(records)):
            break
        records.append(record_from_row(row))
    return records


def command_event_id(command_id: str, n: int) -> str:
    """The event id of the n-th event a command appended (ids start with 'cmd:')."""
    return f"cmd:{command_id}:{n}"
