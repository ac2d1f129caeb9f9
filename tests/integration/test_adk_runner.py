"""ADK's Runner on EventKernelSessionService end to end (a custom agent: no
model, no network), the conversation read back by a second process and as it
was mid-way, and two writers racing on one session."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncGenerator

from google.adk.agents import BaseAgent
from google.adk.agents.invocation_context import InvocationContext
from google.adk.errors._stale_session_error import StaleSessionError
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.runners import Runner
from google.adk.sessions.base_session_service import GetSessionConfig
from google.genai import types

import eventkernel
import eventkernel.aio
from eventkernel.integrations.adk import EventKernelSessionService, session_key

from support import live_tables, rebuilt_tables


class Counter(BaseAgent):
    """Answers each message with how many it has seen, kept in session state;
    remembers the user's last word in user: state and scribbles in temp:."""

    async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
        seen = ctx.session.state.get("seen", 0) + 1
        word = ctx.user_content.parts[0].text if ctx.user_content else ""
        yield Event(invocation_id=ctx.invocation_id, author=self.name, branch=ctx.branch,
                    content=types.Content(role="model", parts=[types.Part(text=f"message {seen}: {word}")]),
                    actions=EventActions(state_delta={"seen": seen, "user:last_word": word, "temp:scratch": seen}))


def user(text: str) -> types.Content:
    return types.Content(role="user", parts=[types.Part(text=text)])


async def converse(path: str, words: list[str]) -> list[int]:
    """Run the conversation; return the journal head after each turn."""
    heads = []
    async with eventkernel.aio.open(path) as k:
        service = EventKernelSessionService(k)
        runner = Runner(app_name="counter", agent=Counter(name="counter"), session_service=service)
        await service.create_session(app_name="counter", user_id="alice", session_id="chat")
        for word in words:
            replies = [e async for e in runner.run_async(user_id="alice", session_id="chat", new_message=user(word))]
            assert replies[-1].content.parts[0].text.endswith(word)
            heads.append(await k.head)
    return heads


READ_BACK = """
import asyncio, json, sys
import eventkernel
from eventkernel.integrations.adk import EventKernelSessionService
async def main():
    with eventkernel.open(sys.argv[1], read_only=True) as k:
        s = await EventKernelSessionService(k).get_session(app_name="counter", user_id="alice", session_id="chat")
        print(json.dumps({"texts": [e.content.parts[0].text for e in s.events], "state": s.state}))
asyncio.run(main())
"""


def test_a_runner_conversation_read_back_by_another_process_and_as_it_was(tmp_path, child_env):
    path = str(tmp_path / "adk.db")
    heads = asyncio.run(converse(path, ["tea", "cats", "rain"]))
    done = subprocess.run([sys.executable, "-c", READ_BACK, path], env=child_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    read = json.loads(done.stdout)
    assert read["texts"] == ["tea", "message 1: tea", "cats", "message 2: cats", "rain", "message 3: rain"]
    assert read["state"] == {"seen": 3, "user:last_word": "rain"}  # temp: was never stored
    with eventkernel.open(path) as k:
        with k.at(heads[0]) as then:
            old = asyncio.run(EventKernelSessionService(then).get_session(
                app_name="counter", user_id="alice", session_id="chat"))
        assert [e.content.parts[0].text for e in old.events] == ["tea", "message 1: tea"]
        assert old.state == {"seen": 1, "user:last_word": "tea"}
        assert [e.type for e in k.log(stream="session:" + session_key("counter", "alice", "chat"))] == [
            "session.created", *["session.event_appended"] * 6]
        assert k.verify().ok
        assert rebuilt_tables(k) == live_tables(k)


def test_two_writers_on_one_session_one_wins_each_revision(tmp_path):
    """Each writer appends from the copy it read; the loser re-reads and
    tries again. Every append lands once, none is lost."""

    async def main() -> tuple[int, list[str]]:
        async with eventkernel.aio.open(str(tmp_path / "race.db")) as k:
            service = EventKernelSessionService(k)
            await service.create_session(app_name="app", user_id="u", session_id="s")
            stale = 0

            async def writer(name: str) -> None:
                nonlocal stale
                for i in range(15):
                    while True:
                        copy = await service.get_session(app_name="app", user_id="u", session_id="s")
                        await asyncio.sleep(0)  # let the other writer read the same revision
                        try:
                            await service.append_event(copy, Event(invocation_id="i", author=name,
                                                                   actions=EventActions(state_delta={name: i})))
                            break
                        except StaleSessionError:
                            stale += 1

            await asyncio.gather(writer("a"), writer("b"))
            final = await service.get_session(app_name="app", user_id="u", session_id="s")
            assert final.state == {"a": 14, "b": 14}
            assert k.kernel.verify().ok
            return stale, [e.author for e in final.events]

    stale, authors = asyncio.run(main())
    assert sorted(authors) == ["a"] * 15 + ["b"] * 15
    assert stale > 0  # the writers did collide, and each collision was caught


def test_a_session_given_out_by_another_service_is_checked_against_the_stored_events(tmp_path):
    """A Session object that carries no revision of ours (built by hand, or by
    another service) may append only if it has the stored session's last event."""

    async def main() -> None:
        with eventkernel.open(str(tmp_path / "x.db")) as k:
            service = EventKernelSessionService(k)
            made = await service.create_session(app_name="app", user_id="u", session_id="s")
            handmade, foreign = made.model_copy(deep=True), made.model_copy(deep=True)
            handmade._storage_update_marker = foreign._storage_update_marker = None
            await service.append_event(handmade, Event(invocation_id="i", author="a"))
            try:
                await service.append_event(foreign, Event(invocation_id="i", author="b"))
            except StaleSessionError:
                pass
            else:
                raise AssertionError("a copy without the stored last event appended")
            assert [e.author for e in (await service.get_session(app_name="app", user_id="u",
                                                                 session_id="s")).events] == ["a"]

    asyncio.run(main())


def test_events_read_are_the_callers_own(tmp_path):
    """Built events are kept between reads: each read must still get its own copies."""

    async def main() -> None:
        with eventkernel.open(str(tmp_path / "c.db")) as k:
            service = EventKernelSessionService(k)
            s = await service.create_session(app_name="app", user_id="u", session_id="s")
            sent = Event(invocation_id="i", author="a", actions=EventActions(state_delta={"k": [1]}),
                         content=types.Content(role="model", parts=[types.Part(text="original")]))
            await service.append_event(s, sent)
            sent.content.parts[0].text = "changed by the writer afterwards"
            first = await service.get_session(app_name="app", user_id="u", session_id="s")
            first.events[0].content.parts[0].text = "changed by a reader"
            first.events[0].actions.state_delta["k"].append(2)
            again = await service.get_session(app_name="app", user_id="u", session_id="s")
            assert again.events[0].content.parts[0].text == "original"
            assert again.events[0].actions.state_delta == {"k": [1]}
            fresh = await EventKernelSessionService(k).get_session(app_name="app", user_id="u", session_id="s")
            assert fresh.events == again.events

    asyncio.run(main())


def _rich(i: int) -> Event:
    """An event with a value in every kind of mutable field: lists, dicts
    nested in dicts, a set, bytes, models in lists."""
    return Event(
        invocation_id=f"inv-{i}", author="planner", timestamp=1_700_000_000.5 + i,
        content=types.Content(role="model", parts=[
            types.Part(text=f"turn {i}"),
            types.Part.from_bytes(data=bytes([i]) * 8, mime_type="image/png"),
            types.Part(function_call=types.FunctionCall(id=f"c{i}", name="search", args={"q": {"deep": [i]}})),
        ]),
        actions=EventActions(state_delta={"k": [i, {"n": i}]}, artifact_delta={"a.png": i}),
        long_running_tool_ids={f"c{i}"}, custom_metadata={"trace": {"ids": [i]}},
        usage_metadata=types.GenerateContentResponseUsageMetadata(prompt_token_count=i),
    )


def _spoil(event: Event) -> None:
    """Change every mutable part of ``event`` in place."""
    event.content.parts[0].text = "spoilt"
    event.content.parts[1].inline_data.data = b"spoilt"
    event.content.parts[2].function_call.args["q"]["deep"].append("spoilt")
    event.content.parts.append(types.Part(text="extra"))
    event.actions.state_delta["k"][1]["n"] = "spoilt"
    event.actions.artifact_delta.clear()
    event.long_running_tool_ids.add("spoilt")
    event.custom_metadata["trace"]["ids"].append("spoilt")
    event.usage_metadata.prompt_token_count = -1


def test_every_mutable_part_of_a_read_event_is_the_callers_own(tmp_path):
    """A read's copies share nothing mutable with the events the service
    keeps, whether the event was kept when appended or built from the
    journal, and they equal what ADK's own deep copy makes (field sets
    included, for the kept ones); filtered reads agree between a warm service and a new one."""

    async def main() -> None:
        with eventkernel.open(str(tmp_path / "c.db")) as k:
            service = EventKernelSessionService(k)
            s = await service.create_session(app_name="app", user_id="u", session_id="s")
            sent = [_rich(i) for i in range(4)]
            for event in sent:
                await service.append_event(s, event)
            expected = [e.model_copy(deep=True) for e in sent]
            for event in sent:
                _spoil(event)  # the writer's own objects, changed after the append
            for reader in (service, EventKernelSessionService(k)):  # kept at append; built from the journal
                first = await reader.get_session(app_name="app", user_id="u", session_id="s")
                assert first.events == expected
                for got, want in zip(first.events, expected):
                    if reader is service:  # the copy of a copy: pydantic's record of the fields given, too
                        assert got.model_fields_set == want.model_fields_set
                        assert got.content.parts[2].model_fields_set == want.content.parts[2].model_fields_set
                    _spoil(got)
                again = await reader.get_session(app_name="app", user_id="u", session_id="s")
                assert again.events == expected
            cold = EventKernelSessionService(k)
            for config in (GetSessionConfig(num_recent_events=2), GetSessionConfig(num_recent_events=0),
                           GetSessionConfig(after_timestamp=1_700_000_002.0),
                           GetSessionConfig(after_timestamp=1_700_000_001.0, num_recent_events=1)):
                warm_read = await service.get_session(app_name="app", user_id="u", session_id="s", config=config)
                cold_read = await EventKernelSessionService(k).get_session(
                    app_name="app", user_id="u", session_id="s", config=config)
                assert warm_read.events == cold_read.events
                assert warm_read.last_update_time == cold_read.last_update_time == sent[-1].timestamp
            assert [e.invocation_id for e in (await cold.get_session(
                app_name="app", user_id="u", session_id="s", config=GetSessionConfig(num_recent_events=2))).events] \
                == ["inv-2", "inv-3"]

    asyncio.run(main())
