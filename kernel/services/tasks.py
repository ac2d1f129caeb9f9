"""Tasks, workflows, tool executions and agents.

Task lifecycle: pending → running → completed | failed | cancelled (pending
may be cancelled too); terminal states never change. Agents: spawned →
running → completed | failed | terminated (spawned may end directly).
"""

from __future__ import annotations

import builtins
from typing import Any

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
from eventkernel.services.base import Command, Context, after_row
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


class Tasks:
    """``k.tasks``."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    # --- tasks --------------------------------------------------------------------

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
        with self._ctx.command(where, command_id, args) as cmd:
            if cmd.previous is not None:
                return self._task_as_of(cmd, cmd.previous[0].event.task_id)  # type: ignore[attr-defined]
            conn = self._ctx.db.conn
            tid = task_id or new_id("task", cmd.now)
            if task_id is not None and tasks.get(conn, tid) is not None:
                raise InvalidArgument(f"{where} refused: task_id {tid!r} already exists")
            if parent_task_id is not None and tasks.get(conn, parent_task_id) is None:
                raise NotFound(f"{where} refused: no parent task {parent_task_id!r}")
            cmd.emit(
                f"task:{tid}",
                [TaskCreated(task_id=tid, title=title, task_type=task_type, priority=priority, session_id=session_id,
                             parent_task_id=parent_task_id, config=config, metadata=metadata)],
                expected_version=0,
                correlation_id=tid,
            )
            return self._task(tid)

    def set_status(self, task_id: str, status: str, *, error: str | None = None, command_id: str | None = None) -> Task:
        """Move a task through its lifecycle (the same status again is a no-op).
        Raises NotFound, InvalidTransition, TerminalState."""
        where = "tasks.set_status"
        check_text(where, "task_id", task_id)
        _one_of(where, "status", status, TASK_STATUSES)
        check_optional_text(where, "error", error, max_len=65_536)
        with self._ctx.command(where, command_id, {"task_id": task_id, "status": status, "error": error}) as cmd:
            if cmd.previous is not None:
                return self._task_as_of(cmd, task_id)
            current = self._task(task_id, where)
            if current.status != status:
                _move(where, f"task {task_id}", current.status, status, TASK_MOVES)
                cmd.emit(f"task:{task_id}", [TaskStatusChanged(task_id=task_id, status=status, error=error)],
                         correlation_id=task_id)
            return self._task(task_id)

    def get(self, task_id: str) -> Task:
        """One task. Raises NotFound."""
        check_text("tasks.get", "task_id", task_id)
        with self._ctx.db.read("tasks.get"):
            return self._task(task_id, "tasks.get")

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

    # --- workflows --------------------------------------------------------------------

    def define_workflow(
        self, name: str, *, definition: Any, workflow_id: str | None = None, command_id: str | None = None
    ) -> Workflow:
        """Define a workflow (its tasks are added with add_to_workflow)."""
        where = "tasks.define_workflow"
        check_text(where, "name", name, max_len=4096)
        check_json_value(where, "definition", definition)
        check_optional_text(where, "workflow_id", workflow_id)
        args = {"name": name, "definition": definition, "workflow_id": workflow_id}
        with self._ctx.command(where, command_id, args) as cmd:
            conn = self._ctx.db.conn
            if cmd.previous is None:
                wid = workflow_id or new_id("wf", cmd.now)
                if workflow_id is not None and tasks.workflow(conn, wid) is not None:
                    raise InvalidArgument(f"{where} refused: workflow_id {wid!r} already exists")
                cmd.emit(f"workflow:{wid}", [WorkflowDefined(workflow_id=wid, name=name, definition=definition)],
                         expected_version=0)
            else:
                wid = cmd.previous[0].event.workflow_id  # type: ignore[attr-defined]
            found = tasks.workflow(conn, wid)
            assert found is not None
            return found

    def add_to_workflow(self, workflow_id: str, task_id: str, sequence: int, *, command_id: str | None = None) -> WorkflowTask:
        """Place a task at ``sequence`` in a workflow. Raises NotFound, InvalidArgument."""
        where = "tasks.add_to_workflow"
        check_text(where, "workflow_id", workflow_id)
        check_text(where, "task_id", task_id)
        check_int(where, "sequence", sequence, minimum=0)
        args = {"workflow_id": workflow_id, "task_id": task_id, "sequence": sequence}
        with self._ctx.command(where, command_id, args) as cmd:
            conn = self._ctx.db.conn
            if cmd.previous is None:
                if tasks.workflow(conn, workflow_id) is None:
                    raise NotFound(f"{where} refused: no workflow {workflow_id!r}")
                self._task(task_id, where)
                taken = tasks.member(conn, workflow_id, sequence=sequence)
                if taken is not None:
                    raise InvalidArgument(
                        f"{where} refused: sequence {sequence} of workflow {workflow_id} is taken by task {taken.task_id}"
                    )
                if tasks.member(conn, workflow_id, task_id=task_id) is not None:
                    raise InvalidArgument(f"{where} refused: task {task_id} is already in workflow {workflow_id}")
                cmd.emit(f"workflow:{workflow_id}",
                         [WorkflowTaskAdded(workflow_id=workflow_id, task_id=task_id, sequence=sequence)],
                         correlation_id=task_id)
            found = tasks.member(conn, workflow_id, task_id=task_id)
            assert found is not None
            return found

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

    # --- tool executions ------------------------------------------------------------------

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
        with self._ctx.command(where, command_id, args) as cmd:
            conn = self._ctx.db.conn
            if cmd.previous is None:
                self._task(task_id, where)
                xid = execution_id or new_id("tx", cmd.now)
                if execution_id is not None and tasks.execution(conn, xid) is not None:
                    raise InvalidArgument(f"{where} refused: execution_id {xid!r} already exists")
                cmd.emit(
                    f"task:{task_id}",
                    [ToolExecutionRecorded(execution_id=xid, task_id=task_id, tool_name=tool_name, arguments=arguments,
                                           output=output, status=status, error=error, duration_ms=duration_ms)],
                    correlation_id=task_id,
                )
            else:
                xid = cmd.previous[0].event.execution_id  # type: ignore[attr-defined]
            found = tasks.execution(conn, xid)
            assert found is not None
            return found

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

    # --- agents -------------------------------------------------------------------------

    def spawn_agent(
        self, task_id: str, *, name: str, agent_id: str | None = None, session_id: str | None = None,
        command_id: str | None = None,
    ) -> Agent:
        """Record an agent working on a task. Raises NotFound, InvalidArgument."""
        where = "tasks.spawn_agent"
        check_text(where, "task_id", task_id)
        check_text(where, "name", name)
        check_optional_text(where, "agent_id", agent_id)
        check_optional_text(where, "session_id", session_id)
        args = {"task_id": task_id, "name": name, "agent_id": agent_id, "session_id": session_id}
        with self._ctx.command(where, command_id, args) as cmd:
            if cmd.previous is not None:
                return self._agent_as_of(cmd, cmd.previous[0].event.agent_id)  # type: ignore[attr-defined]
            self._task(task_id, where)
            aid = agent_id or new_id("agent", cmd.now)
            if agent_id is not None and tasks.agent(self._ctx.db.conn, aid) is not None:
                raise InvalidArgument(f"{where} refused: agent_id {aid!r} already exists")
            cmd.emit(f"agent:{aid}", [AgentSpawned(agent_id=aid, task_id=task_id, name=name, session_id=session_id)],
                     expected_version=0, correlation_id=task_id)
            return self._agent(aid, where)

    def set_agent_status(self, agent_id: str, status: str, *, command_id: str | None = None) -> Agent:
        """Move an agent through its lifecycle. Raises NotFound, InvalidTransition, TerminalState."""
        where = "tasks.set_agent_status"
        check_text(where, "agent_id", agent_id)
        _one_of(where, "status", status, AGENT_STATUSES)
        with self._ctx.command(where, command_id, {"agent_id": agent_id, "status": status}) as cmd:
            if cmd.previous is not None:
                return self._agent_as_of(cmd, agent_id)
            current = self._agent(agent_id, where)
            if current.status != status:
                _move(where, f"agent {agent_id}", current.status, status, AGENT_MOVES)
                cmd.emit(f"agent:{agent_id}", [AgentStatusChanged(agent_id=agent_id, status=status)],
                         correlation_id=current.task_id)
            return self._agent(agent_id, where)

    def agent(self, agent_id: str) -> Agent:
        check_text("tasks.agent", "agent_id", agent_id)
        with self._ctx.db.read("tasks.agent"):
            return self._agent(agent_id, "tasks.agent")

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

    # --- helpers --------------------------------------------------------------------------

    def _task(self, task_id: str, where: str = "tasks") -> Task:
        found = tasks.get(self._ctx.db.conn, task_id)
        if found is None:
            raise NotFound(f"{where} refused: no task {task_id!r}")
        return found

    def _agent(self, agent_id: str, where: str) -> Agent:
        found = tasks.agent(self._ctx.db.conn, agent_id)
        if found is None:
            raise NotFound(f"{where} refused: no agent {agent_id!r}")
        return found

    def _task_as_of(self, cmd: Command, task_id: str) -> Task:
        assert cmd.previous is not None
        with self._ctx.folded(tasks, f"task:{task_id}", cmd.previous[-1].position) as mem:
            found = tasks.get(mem, task_id)
        assert found is not None
        return found

    def _agent_as_of(self, cmd: Command, agent_id: str) -> Agent:
        assert cmd.previous is not None
        with self._ctx.folded(tasks, f"agent:{agent_id}", cmd.previous[-1].position) as mem:
            found = tasks.agent(mem, agent_id)
        assert found is not None
        return found
