from __future__ import annotations

import pytest

from eventkernel.errors import InvalidArgument, InvalidTransition, NotFound, TerminalState

from support import refused, snapshot

BOTH_ENGINES = True  # the tests taking `k` run on a file and on PostgreSQL (conftest)


def test_task_lifecycle(k, clock):
    t = k.tasks.create("summarise", task_type="llm", priority=3, config={"model": "m"}, metadata={"team": "a"},
                       session_id="s1", task_id="t1")
    assert (t.status, t.priority, t.config, t.session_id, t.started_at) == ("pending", 3, {"model": "m"}, "s1", None)
    clock.advance(10)
    assert k.tasks.set_status("t1", "running").started_at == clock()
    clock.advance(10)
    failed = k.tasks.set_status("t1", "failed", error="model timeout")
    assert (failed.status, failed.error, failed.finished_at) == ("failed", "model timeout", clock())
    with refused(k, TerminalState, "task t1 is already failed; terminal states never change"):
        k.tasks.set_status("t1", "running")
    k.tasks.create("other", task_id="t2")
    with refused(k, InvalidTransition, "cannot go from pending to completed; from pending it may go to running, cancelled"):
        k.tasks.set_status("t2", "completed")
    assert k.tasks.set_status("t2", "cancelled").status == "cancelled"
    before = snapshot(k)
    k.tasks.set_status("t2", "cancelled")  # the same status: a no-op
    assert snapshot(k) == before


def test_list_get_and_children(k, clock):
    parent = k.tasks.create("parent", task_id="p", session_id="s1")
    clock.advance(1)
    child = k.tasks.create("child", task_id="c", parent_task_id="p", session_id="s2")
    k.tasks.set_status("c", "running")
    assert k.tasks.get("p") == parent
    assert [t.task_id for t in k.tasks.list()] == ["p", "c"]
    assert [t.task_id for t in k.tasks.list(status="running")] == ["c"]
    assert [t.task_id for t in k.tasks.list(session_id="s1")] == ["p"]
    assert [t.task_id for t in k.tasks.children("p")] == [child.task_id]
    with refused(k, NotFound, "no parent task 'ghost'"):
        k.tasks.create("x", parent_task_id="ghost")
    with pytest.raises(NotFound, match="no task 'ghost'"):
        k.tasks.get("ghost")


def test_workflows_keep_their_tasks_in_order(k):
    wf = k.tasks.define_workflow("pipeline", definition={"steps": ["a", "b"]}, workflow_id="wf1")
    assert (wf.name, wf.definition) == ("pipeline", {"steps": ["a", "b"]})
    for tid in ("a", "b", "c"):
        k.tasks.create(tid, task_id=tid)
    k.tasks.add_to_workflow("wf1", "b", 2)
    k.tasks.add_to_workflow("wf1", "a", 1)
    assert [(m.sequence, m.task_id) for m in k.tasks.workflow_tasks("wf1")] == [(1, "a"), (2, "b")]
    with refused(k, InvalidArgument, "sequence 2 of workflow wf1 is taken by task b"):
        k.tasks.add_to_workflow("wf1", "c", 2)
    with refused(k, InvalidArgument, "task a is already in workflow wf1"):
        k.tasks.add_to_workflow("wf1", "a", 5)
    with refused(k, NotFound, "no workflow 'nope'"):
        k.tasks.add_to_workflow("nope", "a", 1)
    with refused(k, NotFound, "no task 'zz'"):
        k.tasks.add_to_workflow("wf1", "zz", 9)
    assert k.tasks.workflow("wf1") == wf


def test_tool_executions(k):
    k.tasks.create("t", task_id="t")
    ok = k.tasks.record_tool_execution("t", "search", arguments={"q": "tea"}, output=["r1"], duration_ms=120)
    bad = k.tasks.record_tool_execution("t", "fetch", arguments={"url": "u"}, status="timeout",
                                        error="30 s elapsed", duration_ms=30_000)
    assert k.tasks.tool_executions("t") == [ok, bad]
    assert (bad.status, bad.error, bad.output) == ("timeout", "30 s elapsed", None)
    assert [r.correlation_id for r in k.read(types=["tool_execution.recorded"])] == ["t", "t"]
    with refused(k, NotFound, "no task 'ghost'"):
        k.tasks.record_tool_execution("ghost", "x", arguments=None, duration_ms=1)
    with refused(k, InvalidArgument, "status must be one of succeeded, failed, timeout, cancelled"):
        k.tasks.record_tool_execution("t", "x", arguments=None, status="meh", duration_ms=1)
    with refused(k, InvalidArgument, "duration_ms must be >= 0"):
        k.tasks.record_tool_execution("t", "x", arguments=None, duration_ms=-1)


def test_agents(k):
    k.tasks.create("t", task_id="t")
    a = k.tasks.spawn_agent("t", name="planner", agent_id="ag1", session_id="s")
    assert (a.status, a.name, a.session_id) == ("spawned", "planner", "s")
    assert k.tasks.set_agent_status("ag1", "running").status == "running"
    assert k.tasks.set_agent_status("ag1", "terminated").status == "terminated"
    with refused(k, TerminalState, "agent ag1 is already terminated"):
        k.tasks.set_agent_status("ag1", "running")
    assert k.tasks.agents("t") == [k.tasks.agent("ag1")]
    with refused(k, NotFound, "no agent 'x'"):
        k.tasks.set_agent_status("x", "running")
    with refused(k, InvalidArgument, "agent_id 'ag1' already exists"):
        k.tasks.spawn_agent("t", name="again", agent_id="ag1")


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda k: k.tasks.create(""), "title must not be empty"),
        (lambda k: k.tasks.create("t", priority="high"), "priority must be an int"),
        (lambda k: k.tasks.create("t", config=[1]), "config must be a dict"),
        (lambda k: k.tasks.create("t", task_id="dup"), "task_id 'dup' already exists"),
        (lambda k: k.tasks.set_status("dup", "done"), "status must be one of pending, running"),
        (lambda k: k.tasks.define_workflow("w", definition=float("nan")), "NaN"),
    ],
)
def test_bad_arguments(k, call, match):
    k.tasks.create("x", task_id="dup")
    with refused(k, InvalidArgument, match):
        call(k)


def test_repeated_command_ids(k):
    t = k.tasks.create("t", task_id="t", command_id="c1")
    k.tasks.set_status("t", "running")
    before = snapshot(k)
    assert k.tasks.create("t", task_id="t", command_id="c1") == t  # pending, as then
    assert snapshot(k) == before
