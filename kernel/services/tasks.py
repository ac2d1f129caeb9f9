"""Tasks, workflows, tool executions and agents.

Task lifecycle: pending → running → completed | failed | cancelled (pending
may be cancelled too); terminal states never change. Agents: spawned →
running → completed | failed | terminated (spawned may end directly).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any

import apsw

from eventkernel.errors import InvalidArgument, InvalidTransition, NotFound, TerminalState
from eventkernel.events.tasks import (
    AgentSpawned,
    AgentStatusChanged,
    TaskCreated,
    TaskStatusChanged,
    ToolExecutionRecorded,
    WorkflowDefined,
    WorkflowTaskAdded,
)
from eventkernel.ids import new_id
from eventkernel.journal import Recorded
from eventkernel.projections import tasks
from eventkernel.projections.tasks import (
    AGENT_STATUSES,
    TASK_STATUSES,
    TOOL_STATUSES,
    Agent,
    Task,
    ToolExecution,
    Workflow,
    WorkflowTask,
)
from eventkernel.services.base import Context, after_row
from eventkernel.services.runner import NOTHING, Args, Decision, Reads, Spec, emit, run
from eventkernel.validate import (
    check_int,
    check_json_dict,
    check_json_value,
    check_limit,
    check_optional_text,
    check_text,
)

TASK_MOVES = {"pending": ("running", "cancelled"), "running": ("completed", "failed", "cancelled")}
AGENT_MOVES = {"spawned": ("running", "completed", "failed", "terminated"), "running": ("completed", "failed", "terminated")}


def _oldest(task: Task) -> tuple[int, str]:
    return task.created_at, task.task_id


def _one_of(where: str, name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InvalidArgument(f"{where} refused: {name} must be one of {', '.join(allowed)}, got {value!r}")
    return value  # type: ignore[no-any-return]


def _move(where: str, what: str, current: str, new: str, moves: dict[str, tuple[str, ...]]) -> None:
    if current not in moves:
        raise TerminalState(f"{where} refused: {what} is already {current}; terminal states never change")
    if new not in moves[current]:
        raise InvalidTransition(
            f"{where} refused: {what} cannot go from {current} to {new}; from {current} it may go to "
            f"{', '.join(moves[current])}"
        )


# --- the rules ---------------------------------------------------------------------------


def decide_create(state: tuple[str, bool, bool], a: Args, now: int) -> Decision:
    """``state``: (the task's id, whether it exists, whether the parent task (if any) exists)."""
    tid, exists, parent_exists = state
    if exists:
        raise InvalidArgument(f"tasks.create refused: task_id {tid!r} already exists")
    if a["parent_task_id"] is not None and not parent_exists:
        raise NotFound(f"tasks.create refused: no parent task {a['parent_task_id']!r}")
    return emit(
        f"task:{tid}",
        TaskCreated(task_id=tid, title=a["title"], task_type=a["task_type"], priority=a["priority"],
                    session_id=a["session_id"], parent_task_id=a["parent_task_id"], config=a["config"],
                    metadata=a["metadata"]),
        expected_version=0, correlation_id=tid,
    )


def decide_set_status(task: Task | None, a: Args, now: int) -> Decision:
    """The task lifecycle (TASK_MOVES); the same status again changes nothing."""
    tid, status = a["task_id"], a["status"]
    if task is None:
        raise NotFound(f"tasks.set_status refused: no task {tid!r}")
    if task.status == status:
        return NOTHING
    _move("tasks.set_status", f"task {tid}", task.status, status, TASK_MOVES)
    return emit(f"task:{tid}", TaskStatusChanged(task_id=tid, status=status, error=a["error"]), correlation_id=tid)


def decide_define_workflow(state: tuple[str, bool], a: Args, now: int) -> Decision:
    wid, exists = state
    if exists:
        raise InvalidArgument(f"tasks.define_workflow refused: workflow_id {wid!r} already exists")
    return emit(f"workflow:{wid}", WorkflowDefined(workflow_id=wid, name=a["name"], definition=a["definition"]),
                expected_version=0)


def decide_add_to_workflow(
    state: tuple[bool, bool, WorkflowTask | None, WorkflowTask | None], a: Args, now: int
) -> Decision:
    """``state``: (the workflow exists, the task exists, the member at that
    sequence, the task's membership). A task is in a workflow once, a
    sequence holds one task."""
    where, wid, tid, sequence = "tasks.add_to_workflow", a["workflow_id"], a["task_id"], a["sequence"]
    workflow_exists, task_exists, taken, member = state
    if not workflow_exists:
        raise NotFound(f"{where} refused: no workflow {wid!r}")
    if not task_exists:
        raise NotFound(f"{where} refused: no task {tid!r}")
    if taken is not None:
        raise InvalidArgument(f"{where} refused: sequence {sequence} of workflow {wid} is taken by task {taken.task_id}")
    if member is not None:
        raise InvalidArgument(f"{where} refused: task {tid} is already in workflow {wid}")
    return emit(f"workflow:{wid}", WorkflowTaskAdded(workflow_id=wid, task_id=tid, sequence=sequence),
                correlation_id=tid)


def decide_record_tool_execution(state: tuple[str, bool, bool], a: Args, now: int) -> Decision:
    """``state``: (the execution's id, whether it exists, whether the task exists)."""
    xid, exists, task_exists = state
    tid = a["task_id"]
    if not task_exists:
        raise NotFound(f"tasks.record_tool_execution refused: no task {tid!r}")
    if exists:
        raise InvalidArgument(f"tasks.record_tool_execution refused: execution_id {xid!r} already exists")
    return emit(
        f"task:{tid}",
        ToolExecutionRecorded(execution_id=xid, task_id=tid, tool_name=a["tool_name"], arguments=a["arguments"],
                              output=a["output"], status=a["status"], error=a["error"], duration_ms=a["duration_ms"]),
        correlation_id=tid,
    )


def decide_spawn_agent(state: tuple[str, bool, bool], a: Args, now: int) -> Decision:
    """``state``: (the agent's id, whether it exists, whether the task exists)."""
    aid, exists, task_exists = state
    tid = a["task_id"]
    if not task_exists:
        raise NotFound(f"tasks.spawn_agent refused: no task {tid!r}")
    if exists:
        raise InvalidArgument(f"tasks.spawn_agent refused: agent_id {aid!r} already exists")
    return emit(f"agent:{aid}", AgentSpawned(agent_id=aid, task_id=tid, name=a["name"], session_id=a["session_id"]),
                expected_version=0, correlation_id=tid)


def decide_set_agent_status(agent: Agent | None, a: Args, now: int) -> Decision:
    """The agent lifecycle (AGENT_MOVES); the same status again changes nothing."""
    aid, status = a["agent_id"], a["status"]
    if agent is None:
        raise NotFound(f"tasks.set_agent_status refused: no agent {aid!r}")
    if agent.status == status:
        return NOTHING
    _move("tasks.set_agent_status", f"agent {aid}", agent.status, status, AGENT_MOVES)
    return emit(f"agent:{aid}", AgentStatusChanged(agent_id=aid, status=status), correlation_id=agent.task_id)


# --- loading and answering ---------------------------------------------------------------


def _id(conn: apsw.Connection, given: str | None, prefix: str, now: int, exists: Callable[[str], object]) -> tuple[str, bool]:
    """A given id and whether it is taken, or a new one."""
    if given is None:
        return new_id(prefix, now), False
    return given, exists(given) is not None


def _load_create(conn: apsw.Connection, a: Args, now: int) -> tuple[str, bool, bool]:
    tid, exists = _id(conn, a["task_id"], "task", now, lambda i: tasks.get(conn, i))
    parent = a["parent_task_id"]
    return tid, exists, parent is not None and tasks.get(conn, parent) is not None


def _load_add(conn: apsw.Connection, a: Args, now: int) -> tuple[bool, bool, WorkflowTask | None, WorkflowTask | None]:
    wid, tid = a["workflow_id"], a["task_id"]
    return (tasks.workflow(conn, wid) is not None, tasks.get(conn, tid) is not None,
            tasks.member(conn, wid, sequence=a["sequence"]), tasks.member(conn, wid, task_id=tid))


def _load_execution(conn: apsw.Connection, a: Args, now: int) -> tuple[str, bool, bool]:
    xid, exists = _id(conn, a["execution_id"], "tx", now, lambda i: tasks.execution(conn, i))
    return xid, exists, tasks.get(conn, a["task_id"]) is not None


def _load_spawn(conn: apsw.Connection, a: Args, now: int) -> tuple[str, bool, bool]:
    aid, exists = _id(conn, a["agent_id"], "agent", now, lambda i: tasks.agent(conn, i))
    return aid, exists, tasks.get(conn, a["task_id"]) is not None


def _task(reads: Reads, a: Args, records: builtins.list[Recorded], outcome: str | None) -> Task:
    tid = a["task_id"] if a.get("task_id") is not None else records[0].event.task_id  # type: ignore[attr-defined]
    found = tasks.get(reads.conn, tid)
    assert found is not None
    return found


def _agent(reads: Reads, a: Args, records: builtins.list[Recorded], outcome: str | None) -> Agent:
    aid = a["agent_id"] if a.get("agent_id") is not None else records[0].event.agent_id  # type: ignore[attr-defined]
    found = tasks.agent(reads.conn, aid)
    assert found is not None
    return found


# Workflows, memberships and tool executions never change once written: the live row is the first answer.
def _workflow(reads: Reads, a: Args, records: builtins.list[Recorded], outcome: str | None) -> Workflow:
    found = tasks.workflow(reads.live, records[0].event.workflow_id)  # type: ignore[attr-defined]
    assert found is not None
    return found


def _member(reads: Reads, a: Args, records: builtins.list[Recorded], outcome: str | None) -> WorkflowTask:
    found = tasks.member(reads.live, a["workflow_id"], task_id=a["task_id"])
    assert found is not None
    return found


def _execution(reads: Reads, a: Args, records: builtins.list[Recorded], outcome: str | None) -> ToolExecution:
    found = tasks.execution(reads.live, records[0].event.execution_id)  # type: ignore[attr-defined]
    assert found is not None
    return found


def _task_stream(a: Args, records: builtins.list[Recorded]) -> builtins.list[str]:
    tid = a["task_id"] if a.get("task_id") is not None else records[0].event.task_id  # type: ignore[attr-defined]
    return [f"task:{tid}"]


def _agent_stream(a: Args, records: builtins.list[Recorded]) -> builtins.list[str]:
    aid = a["agent_id"] if a.get("agent_id") is not None else records[0].event.agent_id  # type: ignore[attr-defined]
    return [f"agent:{aid}"]


CREATE: Spec[tuple[str, bool, bool], Task] = Spec(
    "tasks.create", _load_create, decide_create, _task, tasks, _task_stream)
SET_STATUS: Spec[Task | None, Task] = Spec(
    "tasks.set_status", lambda conn, a, now: tasks.get(conn, a["task_id"]), decide_set_status, _task, tasks,
    _task_stream)
DEFINE_WORKFLOW: Spec[tuple[str, bool], Workflow] = Spec(
    "tasks.define_workflow",
    lambda conn, a, now: _id(conn, a["workflow_id"], "wf", now, lambda i: tasks.workflow(conn, i)),
    decide_define_workflow, _workflow)
ADD_TO_WORKFLOW: Spec[Any, WorkflowTask] = Spec("tasks.add_to_workflow", _load_add, decide_add_to_workflow, _member)
RECORD_TOOL_EXECUTION: Spec[tuple[str, bool, bool], ToolExecution] = Spec(
    "tasks.record_tool_execution", _load_execution, decide_record_tool_execution, _execution)
SPAWN_AGENT: Spec[tuple[str, bool, bool], Agent] = Spec(
    "tasks.spawn_agent", _load_spawn, decide_spawn_agent, _agent, tasks, _agent_stream)
SET_AGENT_STATUS: Spec[Agent | None, Agent] = Spec(
    "tasks.set_agent_status", lambda conn, a, now: tasks.agent(conn, a["agent_id"]), decide_set_agent_status,
    _agent, tasks, _agent_stream)


class Tasks:
    """``k.tasks``."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    # --- commands ----------------------------------------------------------------------

    def create(
        self,
        title: str,
        *,
        task_type: str = "generic",
        task_id: str | None = None,
        session_id: str | None = None,
        parent_task_id: str | None = None,
        priority: int = 0,
        config: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> Task:
        """Create a pending task. Raises InvalidArgument, NotFound (parent)."""
        where = "tasks.create"
        check_text(where, "title", title, max_len=4096)
        check_text(where, "task_type", task_type)
        check_optional_text(where, "task_id", task_id)
        check_optional_text(where, "session_id", session_id)
        check_optional_text(where, "parent_task_id", parent_task_id)
        check_int(where, "priority", priority)
        check_json_dict(where, "config", config)
        check_json_dict(where, "metadata", metadata)
        args = {"title": title, "task_type": task_type, "task_id": task_id, "session_id": session_id,
                "parent_task_id": parent_task_id, "priority": priority, "config": config, "metadata": metadata}
        return run(self._ctx, CREATE, args, command_id=command_id, actor=actor)

    def set_status(
        self, task_id: str, status: str, *, error: str | None = None, actor: str | None = None,
        command_id: str | None = None,
    ) -> Task:
        """Move a task through its lifecycle (the same status again is a no-op).
        Raises NotFound, InvalidTransition, TerminalState."""
        where = "tasks.set_status"
        check_text(where, "task_id", task_id)
        _one_of(where, "status", status, TASK_STATUSES)
        check_optional_text(where, "error", error, max_len=65_536)
        return run(self._ctx, SET_STATUS, {"task_id": task_id, "status": status, "error": error},
                   command_id=command_id, actor=actor)

    def define_workflow(
        self, name: str, *, definition: Any, workflow_id: str | None = None, actor: str | None = None,
        command_id: str | None = None,
    ) -> Workflow:
        """Define a workflow (its tasks are added with add_to_workflow)."""
        where = "tasks.define_workflow"
        check_text(where, "name", name, max_len=4096)
        check_json_value(where, "definition", definition)
        check_optional_text(where, "workflow_id", workflow_id)
        args = {"name": name, "definition": definition, "workflow_id": workflow_id}
        return run(self._ctx, DEFINE_WORKFLOW, args, command_id=command_id, actor=actor)

    def add_to_workflow(
        self, workflow_id: str, task_id: str, sequence: int, *, actor: str | None = None,
        command_id: str | None = None,
    ) -> WorkflowTask:
        """Place a task at ``sequence`` in a workflow. Raises NotFound, InvalidArgument."""
        where = "tasks.add_to_workflow"
        check_text(where, "workflow_id", workflow_id)
        check_text(where, "task_id", task_id)
        check_int(where, "sequence", sequence, minimum=0)
        args = {"workflow_id": workflow_id, "task_id": task_id, "sequence": sequence}
        return run(self._ctx, ADD_TO_WORKFLOW, args, command_id=command_id, actor=actor)

    def record_tool_execution(
        self,
        task_id: str,
        tool_name: str,
        *,
        arguments: Any,
        output: Any = None,
        status: str = "succeeded",
        error: str | None = None,
        duration_ms: int,
        execution_id: str | None = None,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> ToolExecution:
        """Record one call of a tool by a task. Raises NotFound, InvalidArgument."""
        where = "tasks.record_tool_execution"
        check_text(where, "task_id", task_id)
        check_text(where, "tool_name", tool_name)
        check_json_value(where, "arguments", arguments)
        check_json_value(where, "output", output)
        _one_of(where, "status", status, TOOL_STATUSES)
        check_optional_text(where, "error", error, max_len=65_536)
        check_int(where, "duration_ms", duration_ms, minimum=0)
        check_optional_text(where, "execution_id", execution_id)
        args = {"task_id": task_id, "tool_name": tool_name, "arguments": arguments, "output": output,
                "status": status, "error": error, "duration_ms": duration_ms, "execution_id": execution_id}
        return run(self._ctx, RECORD_TOOL_EXECUTION, args, command_id=command_id, actor=actor)

    def spawn_agent(
        self, task_id: str, *, name: str, agent_id: str | None = None, session_id: str | None = None,
        actor: str | None = None, command_id: str | None = None,
    ) -> Agent:
        """Record an agent working on a task. Raises NotFound, InvalidArgument."""
        where = "tasks.spawn_agent"
        check_text(where, "task_id", task_id)
        check_text(where, "name", name)
        check_optional_text(where, "agent_id", agent_id)
        check_optional_text(where, "session_id", session_id)
        args = {"task_id": task_id, "name": name, "agent_id": agent_id, "session_id": session_id}
        return run(self._ctx, SPAWN_AGENT, args, command_id=command_id, actor=actor)

    def set_agent_status(
        self, agent_id: str, status: str, *, actor: str | None = None, command_id: str | None = None
    ) -> Agent:
        """Move an agent through its lifecycle. Raises NotFound, InvalidTransition, TerminalState."""
        where = "tasks.set_agent_status"
        check_text(where, "agent_id", agent_id)
        _one_of(where, "status", status, AGENT_STATUSES)
        return run(self._ctx, SET_AGENT_STATUS, {"agent_id": agent_id, "status": status}, command_id=command_id,
                   actor=actor)

    # --- queries ------------------------------------------------------------------------

    def get(self, task_id: str) -> Task:
        """One task. Raises NotFound."""
        check_text("tasks.get", "task_id", task_id)
        with self._ctx.db.statement("tasks.get") as conn:
            found = tasks.get(conn, task_id)
        if found is None:
            raise NotFound(f"tasks.get refused: no task {task_id!r}")
        return found

    def list(
        self, *, status: str | None = None, session_id: str | None = None, limit: int | None = None,
        after_key: str | None = None,
    ) -> builtins.list[Task]:
        """Tasks by status and/or session, oldest first; at most ``limit``,
        after the task ``after_key`` (the id of the last task of the previous page)."""
        where = "tasks.list"
        if status is not None:
            _one_of(where, "status", status, TASK_STATUSES)
        check_optional_text(where, "session_id", session_id)
        check_limit(where, limit)
        check_optional_text(where, "after_key", after_key)
        with self._ctx.db.read(where) as conn:
            after = after_row(where, after_key, lambda i: tasks.get(conn, i), "task", _oldest)
            return tasks.list(conn, status=status, session_id=session_id, limit=limit, after=after)

    def children(
        self, parent_task_id: str, *, limit: int | None = None, after_key: str | None = None
    ) -> builtins.list[Task]:
        """The subtasks of a task, oldest first; at most ``limit``, after the task ``after_key``."""
        where = "tasks.children"
        check_text(where, "parent_task_id", parent_task_id)
        check_limit(where, limit)
        check_optional_text(where, "after_key", after_key)
        with self._ctx.db.read(where) as conn:
            after = after_row(where, after_key, lambda i: tasks.get(conn, i), "task", _oldest)
            return tasks.children(conn, parent_task_id, limit=limit, after=after)

    def workflow(self, workflow_id: str) -> Workflow:
        """One workflow. Raises NotFound."""
        check_text("tasks.workflow", "workflow_id", workflow_id)
        with self._ctx.db.read("tasks.workflow") as conn:
            found = tasks.workflow(conn, workflow_id)
        if found is None:
            raise NotFound(f"tasks.workflow refused: no workflow {workflow_id!r}")
        return found

    def workflow_tasks(
        self, workflow_id: str, *, limit: int | None = None, after_key: int | None = None
    ) -> builtins.list[WorkflowTask]:
        """A workflow's tasks in sequence order; at most ``limit``, after sequence ``after_key``."""
        where = "tasks.workflow_tasks"
        check_text(where, "workflow_id", workflow_id)
        check_limit(where, limit)
        if after_key is not None:
            check_int(where, "after_key", after_key)
        with self._ctx.db.read(where) as conn:
            return tasks.workflow_tasks(conn, workflow_id, limit=limit, after=after_key)

    def tool_executions(
        self, task_id: str, *, after: int = 0, limit: int | None = None
    ) -> builtins.list[ToolExecution]:
        """A task's tool calls in the order recorded; at most ``limit``,
        recorded after journal position ``after``."""
        where = "tasks.tool_executions"
        check_text(where, "task_id", task_id)
        check_int(where, "after", after, minimum=0)
        check_limit(where, limit)
        with self._ctx.db.read(where) as conn:
            return tasks.executions(conn, task_id, after=after, limit=limit)

    def agent(self, agent_id: str) -> Agent:
        """One agent. Raises NotFound."""
        check_text("tasks.agent", "agent_id", agent_id)
        with self._ctx.db.statement("tasks.agent") as conn:
            found = tasks.agent(conn, agent_id)
        if found is None:
            raise NotFound(f"tasks.agent refused: no agent {agent_id!r}")
        return found

    def agents(
        self, task_id: str, *, limit: int | None = None, after_key: str | None = None
    ) -> builtins.list[Agent]:
        """The agents spawned for a task, in order; at most ``limit``, after the agent ``after_key``."""
        where = "tasks.agents"
        check_text(where, "task_id", task_id)
        check_limit(where, limit)
        check_optional_text(where, "after_key", after_key)
        with self._ctx.db.read(where) as conn:
            after = after_row(where, after_key, lambda i: tasks.agent(conn, i), "agent",
                              lambda a: (a.spawned_at, a.agent_id))
            return tasks.agents(conn, task_id, limit=limit, after=after)
