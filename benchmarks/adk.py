"""Google ADK session services: ``EventKernelSessionService`` against ADK's
own ``DatabaseSessionService`` (SQLAlchemy, aiosqlite) and
``SqliteSessionService`` (aiosqlite), all on files at SQLite's FULL
synchronous setting, in the same run, through ADK's interface:
``append_event`` of events with a 120-character text part and a one-key
state delta, ``get_session`` of a 300-event session, end to end and
its storage part alone, and ``list_sessions`` of a user's 200 sessions.
Building the 300 ``Event`` objects is ADK's model conversion, which every
service pays: the storage part is ours measured
directly (the kernel's reads of the session and its events), theirs their
end-to-end time less the time ``Event.model_validate_json`` takes on the
same 300 events (what ``SqliteSessionService`` calls per event). Our
service keeps the events it built or appended (by journal position) and
gives each read deep copies of them, so a read by the service that wrote
the session builds nothing; a row for a new service's first read, which
builds every event, shows the other end."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import eventkernel
from benchmarks.common import scratch_dir, summary

TEXT = "x" * 120


def _row(name: str, a: list[float], b: list[float], unit: str, baseline: str, target: float | None) -> dict[str, Any]:
    """A rate's ratio is ours over theirs (higher is better); a time's too (lower is better: 0.5 is twice as fast)."""
    sa, sb = summary(a), summary(b)
    return {"name": name, "value": sa["median"], "min": sa["min"], "max": sa["max"], "unit": unit,
            "baseline": baseline, "baseline_value": sb["median"], "ratio": sa["median"] / sb["median"],
            "target": target}


def run(*, quick: bool) -> list[dict[str, Any]]:
    try:
        from google.adk.sessions import DatabaseSessionService
        from google.adk.sessions.sqlite_session_service import SqliteSessionService
    except ImportError:
        print('  google-adk (with its db extra) is not installed (pip install -e ".[test]"): skipped', flush=True)
        return []
    return asyncio.run(_run(quick, DatabaseSessionService, SqliteSessionService))


async def _run(quick: bool, database: Any, sqlite: Any) -> list[dict[str, Any]]:
    from google.adk.events.event import Event
    from google.adk.events.event_actions import EventActions
    from google.genai import types

    from eventkernel.integrations.adk import EventKernelSessionService, session_key

    where = scratch_dir()
    n = 60 if quick else 300
    rounds = 3 if quick else 5
    k = eventkernel.open(str(where / "eventkernel.db"))
    services = {
        "ours": EventKernelSessionService(k),
        "database": database(f"sqlite+aiosqlite:///{where / 'database.db'}"),
        "sqlite": sqlite(str(where / "sqlite.db")),
    }
    names = {"database": "ADK DatabaseSessionService", "sqlite": "ADK SqliteSessionService"}
    sessions = iter(range(10**9))

    def event(i: int) -> Any:
        return Event(invocation_id="inv", author="agent",
                     content=types.Content(role="model", parts=[types.Part(text=f"{i:>6} {TEXT}"[:120])]),
                     actions=EventActions(state_delta={"turn": i}))

    async def appends(who: str) -> tuple[float, str]:
        service = services[who]
        sid = f"s{next(sessions)}"
        session = await service.create_session(app_name="bench", user_id="u", session_id=sid)
        start = time.perf_counter()
        for i in range(n):
            await service.append_event(session, event(i))
        return n / (time.perf_counter() - start), sid

    rates: dict[str, list[float]] = {who: [] for who in services}
    full: dict[str, str] = {}
    for _ in range(rounds):
        for who in ("database", "sqlite", "ours"):
            r, sid = await appends(who)
            rates[who].append(r)
            full[who] = sid  # a session of n events to read
    out = [_row(f"ADK append_event, vs {other}", rates["ours"], rates[other], "events/s", names[other], target)
           for other, target in (("database", 5.0), ("sqlite", 3.0))]

    async def read(who: str) -> float:
        start = time.perf_counter()
        got = await services[who].get_session(app_name="bench", user_id="u", session_id=full[who])
        took = time.perf_counter() - start
        assert len(got.events) == n
        return took * 1000

    stored = await services["ours"].get_session(app_name="bench", user_id="u", session_id=full["ours"])
    texts = [e.model_dump_json(exclude_none=True) for e in stored.events]

    def convert() -> float:
        start = time.perf_counter()
        for t in texts:
            Event.model_validate_json(t)
        return (time.perf_counter() - start) * 1000

    times: dict[str, list[float]] = {who: [] for who in services}
    conversion = []
    for _ in range(rounds * 4):
        for who in ("database", "sqlite", "ours"):
            times[who].append(await read(who))
        conversion.append(convert())
    model = statistics.median(conversion)
    print(f"  ADK: building {n} Event models from JSON takes {model:.2f} ms (p50), in every service", flush=True)
    for other in ("database", "sqlite"):
        out.append(_row(f"ADK get_session of {n}, vs {other}", times["ours"], times[other], "ms",
                        names[other], 0.5))
    key = session_key("bench", "u", full["ours"])

    def kernel_read() -> float:
        # What get_session reads when the service holds the built events (as in
        # the end-to-end rounds above): the session row and the events' positions.
        start = time.perf_counter()
        with k.reading():
            k.sessions.get(key)
            k.sessions.event_positions(key)
        return (time.perf_counter() - start) * 1000

    async def cold_read() -> float:
        # A new service holds no built event: every event is read and built from its JSON.
        service = EventKernelSessionService(k)
        start = time.perf_counter()
        got = await service.get_session(app_name="bench", user_id="u", session_id=full["ours"])
        took = time.perf_counter() - start
        assert len(got.events) == n
        return took * 1000

    cold = {"ours": [], "sqlite": []}
    for _ in range(rounds * 2):
        cold["ours"].append(await cold_read())
        cold["sqlite"].append(await read("sqlite"))
    out.append(_row(f"ADK get_session of {n}, a new service (events built from JSON), vs sqlite",
                    cold["ours"], cold["sqlite"], "ms", names["sqlite"], None))

    storage = {who: [max(t - model, 1e-6) for t in ts] for who, ts in times.items() if who != "ours"}
    storage["ours"] = [kernel_read() for _ in range(rounds * 4)]
    for other in ("database", "sqlite"):
        out.append(_row(f"ADK get_session of {n}, storage part, vs {other}", storage["ours"],
                        storage[other], "ms", names[other], 0.2))
    # A user's list of sessions, each with an event (ADK takes its update time from the last one).
    m = 20 if quick else 200
    for who, service in services.items():
        for i in range(m):
            listed = await service.create_session(app_name="bench", user_id="lister", session_id=f"l{i}")
            await service.append_event(listed, event(i))

    async def lists(who: str) -> float:
        start = time.perf_counter()
        got = await services[who].list_sessions(app_name="bench", user_id="lister")
        took = time.perf_counter() - start
        assert len(got.sessions) == m
        return took * 1000

    listing: dict[str, list[float]] = {who: [] for who in services}
    for _ in range(rounds * 4):
        for who in ("database", "sqlite", "ours"):
            listing[who].append(await lists(who))
    for other in ("database", "sqlite"):
        out.append(_row(f"ADK list_sessions of {m}, vs {other}", listing["ours"], listing[other], "ms",
                        names[other], None))
    for service in services.values():
        close = getattr(service, "close", None)
        if close is not None:
            await close()
    k.close()
    return out
