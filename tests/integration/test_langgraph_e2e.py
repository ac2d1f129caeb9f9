"""LangGraph end to end on EventKernelSaver, LangGraph's InMemorySaver the
oracle: a conditional edge, parallel branches, an interrupt resumed from a
second process, time travel, and a run killed with SIGKILL mid-step then
resumed. Every case ends with the journal verified (chain and every table
against a rebuild)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

import eventkernel
from eventkernel.integrations.langgraph import EventKernelSaver

import graphs_app as app
from support import deaf

APP = Path(__file__).with_name("graphs_app.py")


def history(graph: Any, thread: str) -> list[tuple[Any, ...]]:
    """A thread's checkpoints as LangGraph shows them, without ids and times."""
    return [(tuple(s.next), s.values, s.metadata["step"], s.metadata["source"],
             [(t.name, [i.value for i in t.interrupts]) for t in s.tasks])
            for s in graph.get_state_history(app.config(thread))]


def both(tmp_path: Path) -> tuple[EventKernelSaver, InMemorySaver]:
    return EventKernelSaver(eventkernel.open(str(tmp_path / "graphs.db"))), InMemorySaver()


def test_branches_writes_and_an_interrupt_run_as_on_langgraphs_own_saver(tmp_path):
    ours, theirs = both(tmp_path)
    try:
        results = []
        for saver in (ours, theirs):
            graph = app.build(saver)
            first = graph.invoke({"log": [], "route": "both"}, app.config("t"))
            assert [i.value["question"] for i in first.pop("__interrupt__")] == ["approve?"]
            single = graph.invoke({"log": [], "route": "left"}, app.config("u"))
            single.pop("__interrupt__")
            final = graph.invoke(Command(resume="yes"), app.config("t"))
            results.append((first, single, final, history(graph, "t"), history(graph, "u")))
        assert results[0] == results[1]
        assert results[0][2] == {"log": ["start", "left", "right", "review:yes", "finish"], "route": "both"}
        # the parallel step's writes: two tasks, each its own event
        writes = [e for e in ours.kernel.log(correlation_id="t") if e.type == "graph.writes_saved"]
        assert {w.data["task_path"] for w in writes} >= {"~__pregel_pull, left", "~__pregel_pull, right"}
        assert ours.kernel.verify().ok
    finally:
        ours.kernel.close()


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_an_interrupt_is_resumed_by_another_process(engine, tmp_path, child_env, request):
    """The first process stays open and reads at once the state the other
    process left (on PostgreSQL too, where its replica never hears of it:
    its following thread is stopped), then a process opened afterwards."""
    path = request.getfixturevalue("pg_url") if engine == "postgres" else str(tmp_path / "graphs.db")
    with EventKernelSaver.from_conn_string(path) as saver:
        if engine == "postgres":
            deaf(saver.kernel)
        app.build(saver).invoke({"log": [], "route": "both"}, app.config("t"))
        done = subprocess.run([sys.executable, str(APP), "resume", path, "t", "from another process"],
                              env=child_env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"log": ["start", "left", "right", "review:from another process",
                                                   "finish"], "route": "both"}
        state = app.build(saver).get_state(app.config("t"))
        assert state.next == () and state.values["log"][-1] == "finish"
    with EventKernelSaver.from_conn_string(path) as saver:
        state = app.build(saver).get_state(app.config("t"))
        assert state.next == () and state.values["log"][-1] == "finish"
        assert saver.kernel.verify().ok


def test_time_travel_forks_from_an_earlier_checkpoint(tmp_path):
    ours, theirs = both(tmp_path)
    try:
        outcomes = []
        for saver in (ours, theirs):
            graph = app.build(saver)
            graph.invoke({"log": [], "route": "both"}, app.config("t"))
            graph.invoke(Command(resume="first"), app.config("t"))
            # back to the checkpoint before the branches ran, and take the other road
            before = next(s for s in graph.get_state_history(app.config("t")) if s.next == ("left", "right"))
            forked = graph.update_state(before.config, {"route": "left"}, as_node="start")
            graph.invoke(None, forked)
            final = graph.invoke(Command(resume="second"), app.config("t"))
            # and replay the original road from its own checkpoint, untouched
            replayed = graph.get_state(before.config)
            outcomes.append((final, replayed.values, replayed.next, history(graph, "t")))
        assert outcomes[0] == outcomes[1]
        assert outcomes[0][0]["log"][-2:] == ["review:second", "finish"]
        assert ours.kernel.verify().ok
    finally:
        ours.kernel.close()


def test_a_run_killed_mid_step_resumes_from_its_last_checkpoint(tmp_path, child_env):
    path = str(tmp_path / "graphs.db")
    marker = tmp_path / "in-review"
    child = subprocess.Popen([sys.executable, str(APP), "slow", path, "t", str(marker)], env=child_env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            assert time.monotonic() < deadline, "the child never reached the review step"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(30)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    with EventKernelSaver.from_conn_string(path) as saver:
        assert saver.kernel.verify().ok
        graph = app.build(saver)
        state = graph.get_state(app.config("t"))
        assert state.next == ("review",) and state.values["log"] == ["start", "left", "right"]
        paused = graph.invoke(None, app.config("t"))  # the step that was killed runs again
        assert "__interrupt__" in paused
        final = graph.invoke(Command(resume="after the crash"), app.config("t"))
        assert final["log"] == ["start", "left", "right", "review:after the crash", "finish"]
        assert saver.kernel.verify().ok


def test_one_saver_serves_graphs_running_on_many_threads(tmp_path):
    with EventKernelSaver.from_conn_string(str(tmp_path / "graphs.db")) as saver:
        graph = app.build(saver)
        errors: list[BaseException] = []

        def run(i: int) -> None:
            try:
                for j in range(3):
                    thread = f"t{i}-{j}"
                    graph.invoke({"log": [], "route": "both" if (i + j) % 2 else "left"}, app.config(thread))
                    graph.invoke(Command(resume=thread), app.config(thread))
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        for i in range(8):
            for j in range(3):
                thread = f"t{i}-{j}"
                values = graph.get_state(app.config(thread)).values
                branches = ["left", "right"] if (i + j) % 2 else ["left"]
                assert values["log"] == ["start", *branches, f"review:{thread}", "finish"]
                assert len(list(graph.get_state_history(app.config(thread)))) == 6
        assert saver.kernel.verify().ok
