"""The framework backends on PostgreSQL, shared by processes: what one
process saves, another reads at once (LangGraph's and ADK's own backends on
a database server give that; a replica's reads alone lag other processes by
about a notification, so each backend catches up before a read). The
reading process here never hears the notifications."""

from __future__ import annotations

import asyncio

from google.adk.events.event import Event
from google.adk.sessions.session import Session
from google.genai import types
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.store.base import GetOp, PutOp

import eventkernel
from eventkernel.integrations.adk import EventKernelMemoryService, EventKernelSessionService
from eventkernel.integrations.langgraph import EventKernelSaver, EventKernelStore

from support import deaf

ROUNDS = 40


def test_a_checkpoint_saved_by_one_process_is_the_latest_for_another_at_once(pg_url: str) -> None:
    with eventkernel.open(pg_url) as a, deaf(eventkernel.open(pg_url)) as b:
        mine, theirs = EventKernelSaver(a), EventKernelSaver(b)
        config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
        for i in range(ROUNDS):
            checkpoint = empty_checkpoint()
            checkpoint["channel_values"], checkpoint["channel_versions"] = {"n": i}, {"n": i + 1}
            saved = mine.put(config, checkpoint, {"step": i}, {"n": i + 1})
            latest = theirs.get_tuple(config)
            assert latest is not None and latest.config == saved and latest.checkpoint["channel_values"] == {"n": i}
            assert [t.config for t in theirs.list(config, limit=1)] == [saved]


def test_a_store_item_put_by_one_process_is_read_by_another_at_once(pg_url: str) -> None:
    with eventkernel.open(pg_url) as a, deaf(eventkernel.open(pg_url)) as b:
        mine, theirs = EventKernelStore(a), EventKernelStore(b)
        for i in range(ROUNDS):
            mine.batch([PutOp(("users", "u1"), "prefs", {"n": i})])
            (item,) = theirs.batch([GetOp(("users", "u1"), "prefs")])
            assert item is not None and item.value == {"n": i}


def test_an_adk_session_appended_by_one_process_is_read_by_another_at_once(pg_url: str) -> None:
    async def main() -> None:
        with eventkernel.open(pg_url) as a, deaf(eventkernel.open(pg_url)) as b:
            mine, theirs = EventKernelSessionService(a), EventKernelSessionService(b)
            memory_a, memory_b = EventKernelMemoryService(a), EventKernelMemoryService(b)
            session = await mine.create_session(app_name="app", user_id="u", session_id="s")
            assert (await theirs.list_sessions(app_name="app", user_id="u")).sessions[0].id == "s"
            for i in range(ROUNDS):
                event = Event(invocation_id="inv", author="user", content=types.Content(
                    role="user", parts=[types.Part(text=f"green tea {i}")]))
                await mine.append_event(session, event)
                read = await theirs.get_session(app_name="app", user_id="u", session_id="s")
                assert read is not None and [e.id for e in read.events] == [e.id for e in session.events]
            await memory_a.add_session_to_memory(session)
            found = await memory_b.search_memory(app_name="app", user_id="u", query="tea")
            assert len(found.memories) == min(ROUNDS, 10)
            # what one process added to memory and deleted, another adding the session then does not bring back
            other = Session(app_name="app", user_id="u", id="s2", events=[Event(
                invocation_id="inv", author="user", content=types.Content(role="user", parts=[
                    types.Part(text=f"oolong {i}")])) for i in range(3)])
            await memory_a.add_session_to_memory(other)
            await memory_a.delete_memory(app_name="app", user_id="u", memory_id=other.events[0].id)
            await memory_b.add_session_to_memory(other)
            found = await memory_a.search_memory(app_name="app", user_id="u", query="oolong")
            assert sorted(m.id for m in found.memories) == sorted(e.id for e in other.events[1:])

    asyncio.run(main())
