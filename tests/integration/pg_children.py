"""What the PostgreSQL tests share, and their child processes: ``python -m tests.integration.pg_children
ROLE URL ...``. Each prints or records what it was acknowledged, so the parent
can check nothing acknowledged was lost and nothing rolled back was kept."""

from __future__ import annotations

import random
import sys
from typing import Any

import eventkernel
from eventkernel import journal, postgres


class Noted(eventkernel.Event, tag="engines.noted"):
    text: str
    n: int = 0


def raw_rows(j: Any) -> list[tuple[Any, ...]]:
    """Every journal row of either engine, verbatim (the hash as bytes)."""
    if isinstance(j, postgres.PgJournal):
        return [tuple(r[:10]) + (bytes(r[10]),) for r in j.rows()]
    with j._db.statement("test") as conn:
        return [tuple(r[:10]) + (bytes(r[10]),) for r in journal.read_rows(conn)]


class Rollback(Exception):
    pass


def _options(mode: str) -> dict[str, bool]:
    """``open_journal``'s options for a mode of the tests: "one_round_trip" or "default"."""
    return {"one_round_trip": True} if mode == "one_round_trip" else {}


def writer(url: str, name: str, count: int, seed: int, out: str, mode: str = "default") -> None:
    """``count`` appends with event ids, a third inside a transaction that is
    rolled back half the time: 'ack ID' or 'rolled ID' per line of ``out``."""
    rng = random.Random(seed)
    with postgres.open_journal(url, **_options(mode)) as j, open(out, "a", encoding="utf-8") as log:
        for i in range(count):
            event_id = f"{name}-{i}"
            events = [Noted(text=name, n=i)] * rng.randint(1, 3)
            ids = [event_id] + [None] * (len(events) - 1)
            if rng.random() < 0.33:
                try:
                    with j.transaction():
                        j.append(f"w:{name}", events, event_ids=ids)
                        if rng.random() < 0.5:
                            raise Rollback
                except Rollback:
                    log.write(f"rolled {event_id} {len(events)}\n")
                    continue
            else:
                j.append(f"w:{name}", events, event_ids=ids)
            log.write(f"ack {event_id} {len(events)}\n")
            log.flush()


def until_killed(url: str, out: str, mode: str = "default") -> None:
    """Append until the server goes away: 'try ID' before each append, 'ack ID'
    after it returns (flushed each time); exits on the first error."""
    with postgres.open_journal(url, **_options(mode)) as j, open(out, "a", encoding="utf-8") as log:
        i = 0
        while True:
            event_id = f"k-{i}"
            log.write(f"try {event_id}\n")
            log.flush()
            try:
                j.append("w:killed", [Noted(text="k", n=i)], event_ids=[event_id])
            except eventkernel.KernelError as e:
                log.write(f"error {type(e).__name__}\n")
                log.flush()
                return
            log.write(f"ack {event_id}\n")
            log.flush()
            i += 1


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    if role == "writer":
        writer(rest[0], rest[1], int(rest[2]), int(rest[3]), rest[4], *rest[5:])
    elif role == "until_killed":
        until_killed(rest[0], rest[1], *rest[2:])
    else:
        raise SystemExit(f"unknown role {role!r}")
