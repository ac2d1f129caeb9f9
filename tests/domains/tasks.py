"""Tasks, workflows, tool executions and agents' part of the workload."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

import eventkernel

TASKS = st.sampled_from(["t1", "t2", "t3"])

OPS = [
    st.builds(lambda t: ("tasks.create", t), TASKS),
    st.builds(lambda t, s: ("tasks.status", t, s), TASKS,
              st.sampled_from(["running", "completed", "failed", "cancelled"])),
    st.builds(lambda t: ("tasks.tool", t), TASKS),
    st.builds(lambda t: ("tasks.agent", t), TASKS),
    st.builds(lambda t: ("tasks.workflow", t), TASKS),
    st.builds(lambda t, n: ("tasks.add_to_workflow", t, n), TASKS, st.integers(0, 2)),
    st.builds(lambda s: ("tasks.agent_status", s), st.sampled_from(["running", "completed", "failed", "terminated"])),
]


def resolve(k: Any, op: tuple) -> Any:
    name, *a = op
    if name == "tasks.create":
        return k.tasks.create, {"title": a[0], "task_id": a[0]}
    if name == "tasks.status":
        return k.tasks.set_status, {"task_id": a[0], "status": a[1]}
    if name == "tasks.tool":
        return k.tasks.record_tool_execution, {"task_id": a[0], "tool_name": "search", "arguments": {"q": 1},
                                               "duration_ms": 5}
    if name == "tasks.agent":
        return k.tasks.spawn_agent, {"task_id": a[0], "name": "helper"}
    if name == "tasks.workflow":
        return k.tasks.define_workflow, {"name": a[0], "definition": {"steps": [a[0]]}, "workflow_id": "wf-" + a[0]}
    if name == "tasks.add_to_workflow":
        return k.tasks.add_to_workflow, {"workflow_id": "wf-" + a[0], "task_id": a[0], "sequence": a[1]}
    for task_id in ("t1", "t2", "t3"):
        try:
            agents = k.tasks.agents(task_id)
        except eventkernel.KernelError:
            continue
        for agent in agents[:1]:
            return k.tasks.set_agent_status, {"agent_id": agent.agent_id, "status": a[0]}
    return None


def exercise(k: Any, clock: Any) -> None:
    k.tasks.create("T", task_id="T", session_id="s")
    k.tasks.create("C", task_id="C", parent_task_id="T")
    k.tasks.set_status("T", "running")
    k.tasks.get("T")
    k.tasks.list(status="running")
    k.tasks.list(status="running", limit=1, after_key="T")
    k.tasks.list(session_id="s")
    k.tasks.list(session_id="s", after_key="T")
    k.tasks.children("T")
    k.tasks.children("T", after_key="C")
    k.tasks.define_workflow("wf", definition=None, workflow_id="wf")
    k.tasks.add_to_workflow("wf", "T", 1)
    k.tasks.workflow("wf")
    k.tasks.workflow_tasks("wf")
    k.tasks.workflow_tasks("wf", after_key=0, limit=1)
    k.tasks.record_tool_execution("T", "search", arguments=None, duration_ms=1)
    k.tasks.tool_executions("T")
    k.tasks.tool_executions("T", after=1, limit=1)
    agent = k.tasks.spawn_agent("T", name="a")
    k.tasks.set_agent_status(agent.agent_id, "running")
    k.tasks.agents("T")
    k.tasks.agents("T", after_key=agent.agent_id)
