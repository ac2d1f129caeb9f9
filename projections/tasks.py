"""Projection ``tasks``: tasks, workflows, workflow membership, tool
executions and agents."""

from __future__ import annotations

import builtins
from typing import Any

import apsw
import msgspec

from eventkernel.codec import Event
from eventkernel.events.tasks import (
    AgentSpawned,
    AgentStatusChanged,
    TaskCreated,
    TaskStatusChanged,
    ToolExecutionRecorded,
    WorkflowDefined,
    WorkflowTaskAdded,
)
from eventkernel.journal import Recorded
from eventkernel.projections.rows import (
    Order,
    Target,
    columns,
    dump,
    limit_of,
    loader,
    order_by,
    placeholders,
    where_equal,
)
from eventkernel.projections.rows import after as after_cursor

NAME = "tasks"
VERSION = 1
HANDLES = frozenset(
    c.__event_type__
    for c in (TaskCreated, TaskStatusChanged, WorkflowDefined, WorkflowTaskAdded, ToolExecutionRecorded,
              AgentSpawned, AgentStatusChanged)
)
TASK_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
TOOL_STATUSES = ("succeeded", "failed", "timeout", "cancelled")
AGENT_STATUSES = ("spawned", "running", "completed", "failed", "terminated")


class Task(msgspec.Struct, frozen=True):
    task_id: str
    title: str
    task_type: str
    status: str
    config: dict[str, Any] | None
    metadata: dict[str, Any] | None
    session_id: str | None
    parent_task_id: str | None
    priority: int
    created_at: int
    updated_at: int
    started_at: int | None
    finished_at: int | None
    error: str | None
    position: int


class Workflow(msgspec.Struct, frozen=True):
    workflow_id: str
    name: str
    definition: Any
    created_at: int
    position: int


class WorkflowTask(msgspec.Struct, frozen=True):
    workflow_id: str
    sequence: int
    task_id: str
    added_at: int
    position: int


class ToolExecution(msgspec.Struct, frozen=True):
    execution_id: str
    task_id: str
    tool_name: str
    arguments: Any
    output: Any
    status: str
    error: str | None
    duration_ms: int
    recorded_at: int
    position: int


class Agent(msgspec.Struct, frozen=True):
    agent_id: str
    task_id: str
    name: str
    session_id: str | None
    status: str
    spawned_at: int
    updated_at: int
    position: int


_T, _W, _WT = columns(Task), columns(Workflow), columns(WorkflowTask)
_X, _A = columns(ToolExecution), columns(Agent)
_load_task = loader(Task, json=["config", "metadata"])
_load_workflow = loader(Workflow, json=["definition"])
_load_member = loader(WorkflowTask)
_load_execution = loader(ToolExecution, json=["arguments", "output"])
_load_agent = loader(Agent)


def apply(conn: Target, recorded: Recorded, event: Event) -> None:
    at, pos = recorded.recorded_at, recorded.position
    if isinstance(event, TaskCreated):
        conn.execute(
            f"INSERT INTO tasks ({_T}) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, ?)",
            (event.task_id, event.title, event.task_type, dump(event.config), dump(event.metadata), event.session_id,
             event.parent_task_id, event.priority, at, at, pos),
        )
    elif isinstance(event, TaskStatusChanged):
        conn.execute(
            "UPDATE tasks SET status = ?, error = coalesce(?, error), updated_at = ?, position = ?, "
            "started_at = CASE WHEN ? = 'running' AND started_at IS NULL THEN ? ELSE started_at END, "
            "finished_at = CASE WHEN ? IN ('completed', 'failed', 'cancelled') THEN ? ELSE finished_at END "
            "WHERE task_id = ?",
            (event.status, event.error, at, pos, event.status, at, event.status, at, event.task_id),
        )
    elif isinstance(event, WorkflowDefined):
        conn.execute(f"INSERT INTO workflows ({_W}) VALUES (?, ?, ?, ?, ?)",
                     (event.workflow_id, event.name, dump(event.definition), at, pos))
    elif isinstance(event, WorkflowTaskAdded):
        conn.execute(f"INSERT INTO workflow_tasks ({_WT}) VALUES (?, ?, ?, ?, ?)",
                     (event.workflow_id, event.sequence, event.task_id, at, pos))
    elif isinstance(event, ToolExecutionRecorded):
        conn.execute(
            f"INSERT INTO tool_executions ({_X}) VALUES ({placeholders(ToolExecution)})",
            (event.execution_id, event.task_id, event.tool_name, dump(event.arguments), dump(event.output),
             event.status, event.error, event.duration_ms, at, pos),
        )
    elif isinstance(event, AgentSpawned):
        conn.execute(f"INSERT INTO agents ({_A}) VALUES (?, ?, ?, ?, 'spawned', ?, ?, ?)",
                     (event.agent_id, event.task_id, event.name, event.session_id, at, at, pos))
    elif isinstance(event, AgentStatusChanged):
        conn.execute("UPDATE agents SET status = ?, updated_at = ?, position = ? WHERE agent_id = ?",
                     (event.status, at, pos, event.agent_id))


# --- queries ----------------------------------------------------------------------


def get(conn: apsw.Connection, task_id: str) -> Task | None:
    row = conn.execute(f"SELECT {_T} FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
    return None if row is None else _load_task(row)


OLDEST: Order = (("created_at", False), ("task_id", False))
SPAWNED: Order = (("spawned_at", False), ("agent_id", False))


def _filtered(where: str, args: builtins.list[Any], order: Order, after: tuple[Any, ...] | None) -> tuple[str, builtins.list[Any]]:
    cursor, cursor_args = after_cursor(order, after)
    if cursor:
        where = f"{where} AND {cursor}" if where else f" WHERE {cursor}"
    return where, [*args, *cursor_args]


def list(
    conn: apsw.Connection, *, status: str | None = None, session_id: str | None = None, limit: int | None = None,
    after: tuple[Any, ...] | None = None,
) -> builtins.list[Task]:
    """Tasks by status and/or session, oldest first, after the task whose (created_at, task_id) is ``after``."""
    where, args = _filtered(*where_equal(status=status, session_id=session_id), OLDEST, after)
    rows = conn.execute(f"SELECT {_T} FROM tasks{where} ORDER BY {order_by(OLDEST)} LIMIT ?", (*args, limit_of(limit)))
    return [_load_task(r) for r in rows]


def children(
    conn: apsw.Connection, parent_task_id: str, *, limit: int | None = None, after: tuple[Any, ...] | None = None
) -> builtins.list[Task]:
    where, args = _filtered(*where_equal(parent_task_id=parent_task_id), OLDEST, after)
    rows = conn.execute(f"SELECT {_T} FROM tasks{where} ORDER BY {order_by(OLDEST)} LIMIT ?", (*args, limit_of(limit)))
    return [_load_task(r) for r in rows]


def workflow(conn: apsw.Connection, workflow_id: str) -> Workflow | None:
    row = conn.execute(f"SELECT {_W} FROM workflows WHERE workflow_id = ?", (workflow_id,)).fetchone()
    return None if row is None else _load_workflow(row)


def workflow_tasks(
    conn: apsw.Connection, workflow_id: str, *, limit: int | None = None, after: int | None = None
) -> builtins.list[WorkflowTask]:
    """A workflow's tasks by sequence, after sequence ``after``."""
    rows = conn.execute(
        f"SELECT {_WT} FROM workflow_tasks WHERE workflow_id = ? AND sequence > ? ORDER BY sequence LIMIT ?",
        (workflow_id, -(2**63) if after is None else after, limit_of(limit)),
    )
    return [_load_member(r) for r in rows]


def member(conn: apsw.Connection, workflow_id: str, *, sequence: int | None = None, task_id: str | None = None) -> WorkflowTask | None:
    if sequence is not None:
        row = conn.execute(f"SELECT {_WT} FROM workflow_tasks WHERE workflow_id = ? AND sequence = ?", (workflow_id, sequence)).fetchone()
    else:
        row = conn.execute(f"SELECT {_WT} FROM workflow_tasks WHERE workflow_id = ? AND task_id = ?", (workflow_id, task_id)).fetchone()
    return None if row is None else _load_member(row)


def execution(conn: apsw.Connection, execution_id: str) -> ToolExecution | None:
    row = conn.execute(f"SELECT {_X} FROM tool_executions WHERE execution_id = ?", (execution_id,)).fetchone()
    return None if row is None else _load_execution(row)


def executions(
    conn: apsw.Connection, task_id: str, *, after: int = 0, limit: int | None = None
) -> builtins.list[ToolExecution]:
    """A task's tool calls recorded after journal position ``after``, in order."""
    rows = conn.execute(
        f"SELECT {_X} FROM tool_executions WHERE task_id = ? AND position > ? ORDER BY position LIMIT ?",
        (task_id, after, limit_of(limit)),
    )
    return [_load_execution(r) for r in rows]


def agent(conn: apsw.Connection, agent_id: str) -> Agent | None:
    row = conn.execute(f"SELECT {_A} FROM agents WHERE agent_id = ?", (agent_id,)).fetchone()
    return None if row is None else _load_agent(row)


def agents(
    conn: apsw.Connection, task_id: str, *, limit: int | None = None, after: tuple[Any, ...] | None = None
) -> builtins.list[Agent]:
    """A task's agents in the order spawned, after the agent whose (spawned_at, agent_id) is ``after``."""
    where, args = _filtered(*where_equal(task_id=task_id), SPAWNED, after)
    rows = conn.execute(f"SELECT {_A} FROM agents{where} ORDER BY {order_by(SPAWNED)} LIMIT ?",
                        (*args, limit_of(limit)))
    return [_load_agent(r) for r in rows]
