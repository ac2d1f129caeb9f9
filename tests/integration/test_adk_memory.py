"""EventKernelMemoryService against ADK's InMemoryMemoryService, operation by
operation (hypothesis): what is added, deleted and found by keywords."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from google.adk.events.event import Event
from google.adk.memory import InMemoryMemoryService
from google.adk.sessions.session import Session
from google.genai import types
from hypothesis import given, settings
from hypothesis import strategies as st

import eventkernel
from eventkernel.integrations.adk import EventKernelMemoryService

from support import live_tables, open_kernel, rebuilt_tables

TEXTS = ["I like green tea", "Tea or coffee?", "私はPythonを使う", "python is fun", "Café au lait", "naïve CAFÉ",
         "the weather: rain", "", "tea tea TEA"]
QUERIES = ["tea", "python", "café", "rain coffee", "使う", "nothing here", "Tea Python rain", "lait"]
USERS = ["alice", "bob"]
IDS = [f"e{i}" for i in range(8)]

events = st.builds(
    lambda i, text, author, t: Event(
        id=i, invocation_id="inv", author=author, timestamp=1_700_000_000.0 + t,
        content=types.Content(role="user", parts=[types.Part(text=text)]) if text else None),
    st.sampled_from(IDS), st.sampled_from(TEXTS), st.sampled_from(["user", "agent"]), st.integers(0, 50),
)
OPS = st.one_of(
    st.tuples(st.just("session"), st.sampled_from(USERS), st.sampled_from(["s1", "s2"]),
              st.lists(events, max_size=4, unique_by=lambda e: e.id)),
    st.tuples(st.just("events"), st.sampled_from(USERS), st.sampled_from([None, "s1"]),
              st.lists(events, max_size=3, unique_by=lambda e: e.id)),
    st.tuples(st.just("delete"), st.sampled_from(USERS),
              st.builds(lambda s, i: f"{s}-{i}", st.sampled_from(["s1", "s2", "None"]), st.sampled_from(IDS))),
    st.tuples(st.just("search"), st.sampled_from(USERS), st.sampled_from(QUERIES)),
)


def found(response: Any) -> list[tuple[Any, ...]]:
    """A search's answer, in an order both agree on (equal scores may come in either order)."""
    return sorted((m.id, m.author, m.timestamp, m.content.model_dump_json()) for m in response.memories)


def of_session(session_id: str | None, events: list[Event]) -> list[Event]:
    """The events with ids of the session: an event belongs to one session."""
    return [e.model_copy(update={"id": f"{session_id}-{e.id}"}, deep=True) for e in events]


async def apply(service: Any, op: tuple) -> Any:
    name, user, *a = op
    if name == "session":
        session = Session(app_name="app", user_id=user, id=a[0], events=of_session(a[0], a[1]))
        return await service.add_session_to_memory(session)
    if name == "events":
        return await service.add_events_to_memory(app_name="app", user_id=user, session_id=a[0],
                                                  events=of_session(a[0], a[1]))
    if name == "delete":
        return await service.delete_memory(app_name="app", user_id=user, memory_id=a[0])
    return found(await service.search_memory(app_name="app", user_id=user, query=a[0]))


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
@settings(max_examples=60, deadline=None)
@given(ops=st.lists(OPS, max_size=12))
def test_memory_answers_as_in_memory_memory_service_does(engine, ops):
    async def main() -> None:
        with open_kernel(engine) as k:
            ours, theirs = EventKernelMemoryService(k), InMemoryMemoryService()
            for op in ops:
                assert await apply(ours, op) == await apply(theirs, op), op
            for user in USERS:
                for query in QUERIES:
                    op = ("search", user, query)
                    assert await apply(ours, op) == await apply(theirs, op), op
            assert k.verify().ok
            assert rebuilt_tables(k) == live_tables(k)

    asyncio.run(main())


def test_at_most_ten_the_best_first_and_deleted_stays_deleted(tmp_path):
    async def main() -> None:
        with eventkernel.open(str(tmp_path / "m.db")) as k:
            service = EventKernelMemoryService(k)
            many = [Event(id=f"e{i}", invocation_id="inv", author="user", timestamp=1_700_000_000.0 + i,
                          content=types.Content(role="user", parts=[types.Part(text="tea" + " tea green" * (i == 7))]))
                    for i in range(12)]
            session = Session(app_name="app", user_id="u", id="s1", events=many)
            await service.add_session_to_memory(session)
            got = (await service.search_memory(app_name="app", user_id="u", query="green tea")).memories
            assert [m.id for m in got] == ["e7", "e0", "e1", "e2", "e3", "e4", "e5", "e6", "e8", "e9"]
            await service.delete_memory(app_name="app", user_id="u", memory_id="e7")
            await service.add_session_to_memory(session)  # adding the session again does not bring it back
            got = (await service.search_memory(app_name="app", user_id="u", query="green")).memories
            assert got == []
            assert [e.operation for e in k.memory.history("adk:app.u", "e7")] == ["put", "delete"]

    asyncio.run(main())
