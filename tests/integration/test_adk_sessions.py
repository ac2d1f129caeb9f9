"""EventKernelSessionService held to ADK's session-service behaviours, each
test run against ours (on a file and on PostgreSQL) and, as the oracles, ADK's own InMemorySessionService
and DatabaseSessionService (SQLAlchemy on SQLite) with the same assertions.
Where an oracle of theirs diverges, the test is a strict expected failure
for that oracle, with the reason; ours never diverges."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from google.adk.errors._stale_session_error import StaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.sessions import DatabaseSessionService, InMemorySessionService
from google.adk.sessions.base_session_service import BaseSessionService, GetSessionConfig
from google.genai import types

import eventkernel
from eventkernel.integrations.adk import EventKernelSessionService

from support import live_tables, open_kernel, rebuilt_tables, server_tables_hold

SERVICES = ("eventkernel", "eventkernel-postgres", "in_memory", "database")
APP, USER = "app", "alice"


@contextlib.asynccontextmanager
async def opened(kind: str, tmp_path: Any) -> AsyncIterator[BaseSessionService]:
    if kind.startswith("eventkernel"):
        k = open_kernel("postgres") if kind.endswith("postgres") else eventkernel.open(str(tmp_path / "ek.db"))
        try:
            yield EventKernelSessionService(k)
            assert k.verify().ok
            assert rebuilt_tables(k) == live_tables(k)
            if k._replica is not None:
                server_tables_hold(k)
        finally:
            k.close()
    elif kind == "in_memory":
        yield InMemorySessionService()
    else:
        service = DatabaseSessionService(f"sqlite+aiosqlite:///{tmp_path / 'adk.db'}")
        try:
            yield service
        finally:
            await service.close()


def contract(**diverging: str) -> Callable[[Callable[..., Awaitable[None]]], Any]:
    """Run the async test against every service; ``diverging``: an oracle
    that does not hold the behaviour, and why (a strict expected failure)."""
    def wrap(body: Callable[..., Awaitable[None]]) -> Any:
        kinds = [pytest.param(kind, marks=pytest.mark.xfail(strict=True, reason=diverging[kind]))
                 if kind in diverging else kind for kind in SERVICES]

        def test(kind: str, tmp_path: Any) -> None:
            async def main() -> None:
                async with opened(kind, tmp_path) as service:
                    await body(service)
            asyncio.run(main())

        test.__name__, test.__qualname__, test.__doc__ = body.__name__, body.__qualname__, body.__doc__
        return pytest.mark.parametrize("kind", kinds)(test)
    return wrap


def said(text: str, *, author: str = "agent", delta: dict[str, Any] | None = None, **fields: Any) -> Event:
    return Event(invocation_id="inv-1", author=author,
                 content=types.Content(role="model" if author != "user" else "user", parts=[types.Part(text=text)]),
                 actions=EventActions(state_delta=delta or {}), **fields)


# --- reads and creation -------------------------------------------------------------------


@contract()
async def test_a_missing_session_is_none(service):
    assert await service.get_session(app_name=APP, user_id=USER, session_id="nope") is None


@contract()
async def test_create_then_get(service):
    made = await service.create_session(app_name=APP, user_id=USER, session_id="s1", state={"topic": "tax"})
    assert (made.id, made.app_name, made.user_id, made.state, made.events) == ("s1", APP, USER, {"topic": "tax"}, [])
    got = await service.get_session(app_name=APP, user_id=USER, session_id="s1")
    assert (got.id, got.state, got.events) == ("s1", {"topic": "tax"}, [])
    assert got.last_update_time == pytest.approx(made.last_update_time, abs=1e-3)
    generated = await service.create_session(app_name=APP, user_id=USER)
    assert generated.id and generated.id != "s1"
    assert await service.get_session(app_name=APP, user_id="bob", session_id="s1") is None
    assert await service.get_session(app_name="other", user_id=USER, session_id="s1") is None


@contract()
async def test_an_existing_id_is_refused(service):
    await service.create_session(app_name=APP, user_id=USER, session_id="s1")
    with pytest.raises(AlreadyExistsError):
        await service.create_session(app_name=APP, user_id=USER, session_id="s1")
    await service.create_session(app_name=APP, user_id="bob", session_id="s1")  # another user's s1


@contract()
async def test_odd_names_and_ids_are_accepted(service):
    for app, user, sid in (("a/b", "%#", "x/y"), ("é", "u" * 100, "\u2603"), (APP, USER, "s" * 300)):
        await service.create_session(app_name=app, user_id=user, session_id=sid, state={"k": 1})
        got = await service.get_session(app_name=app, user_id=user, session_id=sid)
        assert (got.app_name, got.user_id, got.id, got.state) == (app, user, sid, {"k": 1})
        assert [s.id for s in (await service.list_sessions(app_name=app, user_id=user)).sessions] == [sid]


# --- listing ----------------------------------------------------------------------------------


@contract()
async def test_list_sessions_oldest_first_by_user_or_all(service):
    for user, sid in (("alice", "a1"), ("bob", "b1"), ("alice", "a2")):
        await service.create_session(app_name=APP, user_id=user, session_id=sid, state={"user:lang": user})
    a1 = await service.get_session(app_name=APP, user_id="alice", session_id="a1")
    await service.append_event(a1, said("now a1 is the newest"))
    await service.create_session(app_name="other", user_id="alice", session_id="o1")
    mine = (await service.list_sessions(app_name=APP, user_id="alice")).sessions
    assert [s.id for s in mine] == ["a2", "a1"]
    assert all(s.events == [] and s.state == {"user:lang": "alice"} for s in mine)
    everyone = (await service.list_sessions(app_name=APP)).sessions
    assert [(s.user_id, s.id) for s in everyone] == [("bob", "b1"), ("alice", "a2"), ("alice", "a1")]
    assert {s.id: s.state["user:lang"] for s in everyone} == {"b1": "bob", "a2": "alice", "a1": "alice"}
    assert (await service.list_sessions(app_name=APP, user_id="carol")).sessions == []


# --- state ------------------------------------------------------------------------------------


@contract()
async def test_state_scopes(service):
    s1 = await service.create_session(app_name=APP, user_id="alice", session_id="s1",
                                      state={"app:theme": "dark", "user:lang": "fr", "topic": "tax", "temp:x": 1})
    assert s1.state == {"app:theme": "dark", "user:lang": "fr", "topic": "tax"}
    s2 = await service.create_session(app_name=APP, user_id="alice", session_id="s2")
    assert s2.state == {"app:theme": "dark", "user:lang": "fr"}
    s3 = await service.create_session(app_name=APP, user_id="bob", session_id="s3")
    assert s3.state == {"app:theme": "dark"}
    event = said("hi", delta={"app:theme": "light", "user:lang": "de", "topic": "vat", "temp:scratch": 42})
    await service.append_event(s1, event)
    assert s1.state["temp:scratch"] == 42  # temp: reaches the session in hand only
    assert "temp:scratch" not in event.actions.state_delta
    again = await service.get_session(app_name=APP, user_id="alice", session_id="s1")
    assert again.state == {"app:theme": "light", "user:lang": "de", "topic": "vat"}
    assert "temp:scratch" not in again.events[0].actions.state_delta
    other = await service.get_session(app_name=APP, user_id="alice", session_id="s2")
    assert other.state == {"app:theme": "light", "user:lang": "de"}
    bob = await service.get_session(app_name=APP, user_id="bob", session_id="s3")
    assert bob.state == {"app:theme": "light"}


@contract()
async def test_a_delta_replaces_values_and_none_stores_null(service):
    s = await service.create_session(app_name=APP, user_id=USER, session_id="s1",
                                     state={"d": {"a": 1, "b": 2}, "gone": 1, "user:u": 1})
    await service.append_event(s, said("x", delta={"d": {"c": 3}, "gone": None, "user:u": None}))
    got = await service.get_session(app_name=APP, user_id=USER, session_id="s1")
    assert got.state == {"d": {"c": 3}, "gone": None, "user:u": None}


@contract()
async def test_get_user_state(service):
    assert await service.get_user_state(app_name=APP, user_id=USER) == {}
    s = await service.create_session(app_name=APP, user_id=USER, session_id="s1",
                                     state={"user:lang": "fr", "app:theme": "dark", "own": 1})
    await service.append_event(s, said("x", delta={"user:tz": "CET"}))
    assert await service.get_user_state(app_name=APP, user_id=USER) == {"lang": "fr", "tz": "CET"}
    assert await service.get_user_state(app_name=APP, user_id="bob") == {}


# --- events -----------------------------------------------------------------------------------


@contract()
async def test_every_field_of_an_event_round_trips(service):
    s = await service.create_session(app_name=APP, user_id=USER, session_id="s1")
    event = Event(
        invocation_id="inv-7", author="planner", branch="root.planner",
        content=types.Content(role="model", parts=[
            types.Part(text="here is a picture"),
            types.Part.from_bytes(data=bytes(range(256)), mime_type="image/png"),
            types.Part(function_call=types.FunctionCall(id="call-1", name="search", args={"q": "tea", "n": 3})),
        ]),
        actions=EventActions(state_delta={"k": [1, 2.5, None, {"deep": True}]}, artifact_delta={"a.png": 2},
                             transfer_to_agent="writer", escalate=False, skip_summarization=True),
        long_running_tool_ids={"call-1"}, custom_metadata={"trace": "t-1", "n": 1.25},
        usage_metadata=types.GenerateContentResponseUsageMetadata(prompt_token_count=12, candidates_token_count=7),
        error_code="E1", error_message="partly failed", interrupted=False, turn_complete=True,
        timestamp=1_700_000_000.123456,
    )
    await service.append_event(s, event)
    got = await service.get_session(app_name=APP, user_id=USER, session_id="s1")
    assert got.events == [event]
    assert got.events[0].content.parts[1].inline_data.data == bytes(range(256))


@contract()
async def test_partial_events_are_not_stored(service):
    s = await service.create_session(app_name=APP, user_id=USER, session_id="s1")
    chunk = said("stream chunk", partial=True, delta={"k": 1})
    assert await service.append_event(s, chunk) is chunk
    got = await service.get_session(app_name=APP, user_id=USER, session_id="s1")
    assert (got.events, got.state) == ([], {})


@contract()
async def test_last_update_time_is_the_last_event_timestamp(service):
    s = await service.create_session(app_name=APP, user_id=USER, session_id="s1")
    await service.append_event(s, said("one", timestamp=s.last_update_time + 10))
    assert s.last_update_time == pytest.approx(s.events[-1].timestamp)
    got = await service.get_session(app_name=APP, user_id=USER, session_id="s1")
    assert got.last_update_time == pytest.approx(s.events[-1].timestamp, abs=1e-3)
    listed = (await service.list_sessions(app_name=APP, user_id=USER)).sessions
    assert listed[0].last_update_time == pytest.approx(s.events[-1].timestamp, abs=1e-3)


@contract()
async def test_get_session_config_filters(service):
    s = await service.create_session(app_name=APP, user_id=USER, session_id="s1")
    base = s.last_update_time
    for i in range(5):
        await service.append_event(s, said(f"e{i}", timestamp=base + 1 + i))

    async def texts(**config: Any) -> list[str]:
        got = await service.get_session(app_name=APP, user_id=USER, session_id="s1",
                                        config=GetSessionConfig(**config))
        return [e.content.parts[0].text for e in got.events]

    assert await texts() == ["e0", "e1", "e2", "e3", "e4"]
    assert await texts(num_recent_events=2) == ["e3", "e4"]
    assert await texts(num_recent_events=9) == ["e0", "e1", "e2", "e3", "e4"]
    assert await texts(num_recent_events=0) == []
    assert await texts(after_timestamp=base + 3) == ["e2", "e3", "e4"]
    assert await texts(after_timestamp=base + 3, num_recent_events=2) == ["e3", "e4"]
    assert await texts(after_timestamp=base + 99) == []
    zero = await service.get_session(app_name=APP, user_id=USER, session_id="s1",
                                     config=GetSessionConfig(num_recent_events=0))
    assert zero.last_update_time == pytest.approx(base + 5, abs=1e-3)


# --- writers ----------------------------------------------------------------------------------


@contract(in_memory="InMemorySessionService keeps no revision: every copy of a session may append")
async def test_a_stale_copy_cannot_append(service):
    await service.create_session(app_name=APP, user_id=USER, session_id="s1")
    first = await service.get_session(app_name=APP, user_id=USER, session_id="s1")
    second = await service.get_session(app_name=APP, user_id=USER, session_id="s1")
    await service.append_event(first, said("first wins"))
    with pytest.raises(StaleSessionError):
        await service.append_event(second, said("second is stale"))
    got = await service.get_session(app_name=APP, user_id=USER, session_id="s1")
    assert [e.content.parts[0].text for e in got.events] == ["first wins"]
    await service.append_event(got, said("a fresh copy may"))


@contract(in_memory="InMemorySessionService keeps no revision: every copy of a session may append",
          database="DatabaseSessionService's revision marker is the session's update time: two events with the "
                   "same timestamp leave the same marker, so the stale copy appends")
async def test_a_stale_copy_is_caught_even_within_one_clock_tick(service):
    await service.create_session(app_name=APP, user_id=USER, session_id="s1")
    first = await service.get_session(app_name=APP, user_id=USER, session_id="s1")
    second = await service.get_session(app_name=APP, user_id=USER, session_id="s1")
    same_time = first.last_update_time
    await service.append_event(first, said("first", timestamp=same_time))
    with pytest.raises(StaleSessionError):
        await service.append_event(second, said("second", timestamp=same_time))


@contract()
async def test_appending_to_a_missing_session_raises(service):
    await service.create_session(app_name=APP, user_id=USER, session_id="s1")
    s = await service.get_session(app_name=APP, user_id=USER, session_id="s1")
    await service.delete_session(app_name=APP, user_id=USER, session_id="s1")
    with pytest.raises(SessionNotFoundError):
        await service.append_event(s, said("too late"))


@contract()
async def test_delete_session(service):
    s = await service.create_session(app_name=APP, user_id=USER, session_id="s1", state={"user:lang": "fr"})
    await service.append_event(s, said("hi"))
    await service.create_session(app_name=APP, user_id=USER, session_id="s2")
    await service.delete_session(app_name=APP, user_id=USER, session_id="s1")
    assert await service.get_session(app_name=APP, user_id=USER, session_id="s1") is None
    assert [x.id for x in (await service.list_sessions(app_name=APP, user_id=USER)).sessions] == ["s2"]
    assert await service.get_user_state(app_name=APP, user_id=USER) == {"lang": "fr"}
    await service.delete_session(app_name=APP, user_id=USER, session_id="s1")  # again: nothing to do
    again = await service.create_session(app_name=APP, user_id=USER, session_id="s1")
    assert (again.events, again.state) == ([], {"user:lang": "fr"})
