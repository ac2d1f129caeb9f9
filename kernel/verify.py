"""``verify``: prove the file is sound and every projection follows from the log."""

from __future__ import annotations

from typing import Any

import apsw
import msgspec

from eventkernel import codec, fileformat, journal, snapshots
from eventkernel.connection import Database
from eventkernel.errors import KernelError
from eventkernel.projector import Progress, Projector


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of :meth:`Kernel.verify`. ``ok`` is True only when
    ``problems`` is empty; ``first_bad_position`` names the earliest journal
    position found wrong, if any. ``notes`` say what was not checked and why
    (a read-only open of a file whose projections are older than this
    eventkernel: they are rebuilt on its next writable open)."""

    ok: bool
    problems: list[str]
    head: int
    head_hash: str  # hex of the last event's chain hash; keep it to detect a truncated tail
    first_bad_position: int | None = None
    notes: list[str] = []


def _kernel_types() -> frozenset[str]:
    return frozenset(
        name for name, cls in codec.registered_types().items() if getattr(cls, "__kernel_owned__", False)
    )


def verify(
    db: Database,
    projector: Projector,
    *,
    anchor: tuple[int, str] | None = None,
    progress: Progress | None = None,
    limit: int = 50,
    kernel_kinds: frozenset[str] = frozenset(),
    all_snapshots: bool = False,
) -> VerifyReport:
    """Check ``integrity_check``, dense positions, dense stream versions, the
    hash chain, that the kernel's own streams hold only the kernel's events,
    projection positions, and that every projection rebuilt in memory equals
    its live tables row for row (``kernel_kinds``: the stream kinds that take
    only the kernel's events). ``anchor`` is a ``(position, head_hash)``
    kept from an earlier report: the chain must still pass through it, which
    detects a cut tail the chain alone cannot. An anchor taken before the
    file's chain was migrated to digests (``chain_history``) is checked
    against the chain as it was then. Every stored projection snapshot must
    compose the image it recorded, and the newest one, with the events
    after it folded, must equal the rebuild. Never raises for what it finds: an
    unreadable or malformed file is a problem in the report."""
    problems: list[str] = []
    notes: list[str] = []
    bad: list[int] = []
    state: dict[str, Any] = {"head": 0, "prev": journal.GENESIS_HASH}

    def problem(text: str, position: int | None = None) -> None:
        if len(problems) < limit:
            problems.append(text)
        if position is not None:
            bad.append(position)

    try:
        with db.read("verifying the journal") as conn:
            _check(db, projector, conn, anchor, progress, limit, problem, notes, state, kernel_kinds, all_snapshots)
    except (KernelError, apsw.Error) as e:
        problem(f"the file cannot be read to the end: {e}", state["head"] + 1)
    return VerifyReport(
        ok=not problems,
        problems=problems,
        head=state["head"],
        head_hash=state["prev"].hex(),
        first_bad_position=min(bad) if bad else None,
        notes=notes,
    )


def _check(
    db: Database,
    projector: Projector,
    conn: apsw.Connection,
    anchor: tuple[int, str] | None,
    progress: Progress | None,
    limit: int,
    problem: Any,
    notes: list[str],
    state: dict[str, Any],
    kernel_kinds: frozenset[str],
    all_snapshots: bool = False,
) -> None:
    # FTS5 keeps each table's index structure cached per connection and
    # integrity_check does not refresh it: after another connection wrote to
    # the table, the check would report a checksum mismatch that is not
    # there. Any read of the table refreshes it (the names: the projections').
    for table in sorted(projector.virtual):
        if conn.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?", (table,)).fetchone():
            conn.execute(f'SELECT rowid FROM "{table}" WHERE rowid = 0').fetchall()  # (an older file has none)
    integrity = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    if integrity != ["ok"]:
        for line in integrity[:10]:
            problem(f"integrity_check: {line}")
    level = db.found.level
    hash_ = journal.row_hash if level >= fileformat.DIGEST_CHAIN_LEVEL else journal.row_hash_v1
    # Rows up to ``rechained_at`` were re-chained by a migration: their chain
    # in the old format is recomputed too, for the recorded old head and for
    # anchors taken before the migration.
    rechained_at, old_head = 0, None
    if conn.table_exists("main", "chain_history"):
        for position, old_hash in conn.execute("SELECT position, old_head_hash FROM chain_history"):
            rechained_at, old_head = position, old_hash
    # Erased rows are checked by the digests their payload and metadata had.
    erased: dict[int, tuple[str, str | None]] = {}
    if conn.table_exists("main", "erased"):
        erased = {p: (d, m) for p, d, m in conn.execute("SELECT position, data_digest, meta_digest FROM erased")}
    erased_before_migration = False
    kernel_types = _kernel_types()
    expected = 1
    prev = old_prev = journal.GENESIS_HASH
    versions: dict[str, int] = {}
    base = journal.base(conn)
    if base is not None:
        # The events up to the base are in an archive: the chain is checked
        # from the hash recorded for it, each stream from its version there.
        expected, prev = base[0] + 1, base[1]
        state["head"], state["prev"] = base[0], base[1]
        versions = dict(conn.execute("SELECT stream, version FROM base_streams"))
        notes.append(f"events 1..{base[0]} are in the archive {base[3]!r} (its head hash must be "
                     f"{base[1].hex()}); the chain is checked from there")
        if rechained_at <= base[0]:
            rechained_at, old_head = 0, None  # the migrated rows are in the archive
    total = journal.head(conn)[0]
    for row in journal.read_rows(conn, page=10_000):
        position, stream, version, type_ = row[0], row[1], row[2], row[3]
        stored = row[10]
        if position != expected:
            problem(f"position {expected} is missing: the next event is at {position}", expected)
            expected = position
        want = versions.get(stream, 0) + 1
        if version != want:
            problem(f"position {position}: stream {stream!r} has version {version}, expected {want}", position)
        versions[stream] = version
        digests = erased.get(position)
        if digests is None:
            computed = hash_(prev, *row[:10])
        else:
            if row[5] != journal.ERASED_DATA or row[6] is not None:
                problem(f"position {position}: recorded as erased, but holds a payload", position)
            computed = journal.row_hash_of_digests(
                prev, position, stream, version, type_, row[4], digests[0], digests[1], row[7], row[8], row[9])
        if computed != stored:
            problem(f"position {position}: the hash chain breaks (the row or its predecessor was altered)", position)
        if position <= rechained_at:
            if digests is not None:
                erased_before_migration = True  # the old format chained the payload itself, now gone
            old_prev = journal.row_hash_v1(old_prev, *row[:10])
        kind = stream.partition(":")[0]
        if kind in kernel_kinds and type_ not in kernel_types:
            problem(
                f"position {position}: stream {stream!r} belongs to the kernel's own commands, "
                f"but holds an application event {type_!r}",
                position,
            )
        if anchor is not None and position == anchor[0] and stored.hex() != anchor[1] and not (
            position <= rechained_at and old_prev.hex() == anchor[1]
        ):
            problem(f"position {position}: the hash is {stored.hex()}, the anchor recorded {anchor[1]}", position)
        prev = stored
        state["head"], state["prev"] = position, prev
        expected += 1
        if progress is not None and position % 8192 == 0:
            progress(position, total)
    head = expected - 1
    if erased_before_migration:
        notes.append(
            f"the chain in its format before the migration at position {rechained_at} is not checked: it covered "
            "payloads since erased"
        )
    elif rechained_at and (head < rechained_at or old_prev != old_head):
        problem(
            f"the chain in its old format does not end at the head recorded when it was migrated "
            f"(position {rechained_at}): rows up to there were altered since",
            rechained_at,
        )
    if anchor is not None and head < anchor[0]:
        problem(
            f"the journal ends at position {head}, but the anchor recorded position {anchor[0]}: "
            f"events {head + 1}..{anchor[0]} were cut from the tail",
            head + 1,
        )
    compared = []
    positions = projector.positions(conn)
    for module in projector.modules:
        name = module.NAME
        if name not in positions:
            if db.opened_read_only:
                notes.append(f"projection {name}: not in this file yet (a writable open creates it)")
            else:
                problem(f"projection {name}: not in this file")
            continue
        version, position = positions[name]
        stale = []
        if version != module.VERSION:
            stale.append(f"stored version {version}, code version {module.VERSION}")
        if position != head:
            stale.append(f"at position {position}, the journal head is {head}")
        if not stale:
            compared.append(name)
        elif db.opened_read_only and (version < module.VERSION or position < head):
            notes.append(
                f"projection {name}: {'; '.join(stale)}; not compared (a writable open brings it up to date)"
            )
        else:
            problem(f"projection {name}: {'; '.join(stale)}")
    mem = None
    if compared:
        try:
            mem, _ = projector.build_in_memory(db, compared, until=head)
        except KernelError as e:
            problem(f"the projections cannot be rebuilt from the journal: {e}")
    try:
        if mem is not None:
            for text in projector.compare(conn, mem, names=compared, limit=limit):
                problem(text)
        # Snapshots: each composes its image; the newest equals the rebuild.
        snapshots.check(conn, projector, mem if len(compared) == len(projector.modules) else None, head,
                        problem, limit, every=all_snapshots)
    finally:
        if mem is not None:
            mem.close()
    if progress is not None:
        progress(total, total)
