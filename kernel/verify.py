"""``verify``: prove the file is sound and every projection follows from the log."""

from __future__ import annotations

import msgspec

from eventkernel import journal
from eventkernel.connection import Database
from eventkernel.errors import KernelError
from eventkernel.projector import Progress, Projector


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of :meth:`Kernel.verify`. ``ok`` is True only when
    ``problems`` is empty; ``first_bad_position`` names the earliest journal
    position found wrong, if any."""

    ok: bool
    problems: list[str]
    head: int
    head_hash: str  # hex of the last event's chain hash; keep it to detect a truncated tail
    first_bad_position: int | None = None


def verify(
    db: Database,
    projector: Projector,
    *,
    anchor: tuple[int, str] | None = None,
    progress: Progress | None = None,
    limit: int = 50,
) -> VerifyReport:
    """Check ``integrity_check``, dense positions, dense stream versions, the
    hash chain, projection positions, and that every projection rebuilt in
    memory equals its live tables row for row. ``anchor`` is a
    ``(position, head_hash)`` kept from an earlier report: the chain must
    still pass through it, which detects a cut tail the chain alone cannot."""
    problems: list[str] = []
    bad: list[int] = []

    def problem(text: str, position: int | None = None) -> None:
        if len(problems) < limit:
            problems.append(text)
        if position is not None:
            bad.append(position)

    with db.read("verifying the journal") as conn:
        integrity = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        if integrity != ["ok"]:
            for line in integrity[:10]:
                problem(f"integrity_check: {line}")
        expected = 1
        prev = journal.GENESIS_HASH
        versions: dict[str, int] = {}
        total = journal.head(conn)[0]
        for row in journal.read_rows(conn, page=10_000):
            position, stream, version, type_, schema, data, meta, event_id, correlation_id, recorded_at, stored = row
            if position != expected:
                problem(f"position {expected} is missing: the next event is at {position}", expected)
                expected = position
            want = versions.get(stream, 0) + 1
            if version != want:
                problem(f"position {position}: stream {stream!r} has version {version}, expected {want}", position)
            versions[stream] = version
            actual = journal.row_hash(
                prev, position, stream, version, type_, schema, data, meta, event_id, correlation_id, recorded_at
            )
            if actual != stored:
                problem(f"position {position}: the hash chain breaks (the row or its predecessor was altered)", position)
            if anchor is not None and position == anchor[0] and stored.hex() != anchor[1]:
                problem(f"position {position}: the hash is {stored.hex()}, the anchor recorded {anchor[1]}", position)
            prev = stored
            expected += 1
            if progress is not None and position % 8192 == 0:
                progress(position, total)
        head = expected - 1
        if anchor is not None and head < anchor[0]:
            problem(
                f"the journal ends at position {head}, but the anchor recorded position {anchor[0]}: "
                f"events {head + 1}..{anchor[0]} were cut from the tail",
                head + 1,
            )
        for name, (version, position) in projector.positions(conn).items():
            module = projector.by_name.get(name)
            if module is not None and version != module.VERSION:
                problem(f"projection {name}: stored version {version}, code version {module.VERSION}")
            if module is not None and position != head:
                problem(f"projection {name}: at position {position}, the journal head is {head}")
        try:
            mem, _ = projector.build_in_memory(db, until=head)
        except KernelError as e:
            problem(f"the projections cannot be rebuilt from the journal: {e}")
        else:
            try:
                for text in projector.compare(conn, mem, limit=limit):
                    problem(text)
            finally:
                mem.close()
        if progress is not None:
            progress(total, total)
    return VerifyReport(
        ok=not problems,
        problems=problems,
        head=head,
        head_hash=prev.hex(),
        first_bad_position=min(bad) if bad else None,
    )
