"""Events of tasks, workflows, tool executions and agents."""

from __future__ import annotations

from typing import Any

from eventkernel.events.base import KernelEvent


class TaskCreated(KernelEvent, tag="task.created"):
    task_id: str
    title: str
    task_type: str
    priority: int = 0
    session_id: str | None = None
    parent_task_id: str | None = None
    config: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class TaskStatusChanged(KernelEvent, tag="task.status_changed"):
    task_id: str
    status: str
    error: str | None = None


class WorkflowDefined(KernelEvent, tag="workflow.defined"):
    workflow_id: str
    name: str
    definition: Any = None


class WorkflowTaskAdded(KernelEvent, tag="workflow.task_added"):
    workflow_id: str
    task_id: str
    sequence: int


class ToolExecutionRecorded(KernelEvent, tag="tool_execution.recorded"):
    execution_id: str
    task_id: str
    tool_name: str
    arguments: Any = None
    output: Any = None
    status: str = "succeeded"
    error: str | None = None
    duration_ms: int = 0


class AgentSpawned(KernelEvent, tag="agent.spawned"):
    agent_id: str
    task_id: str
    name: str
    session_id: str | None = None


class AgentStatusChanged(KernelEvent, tag="agent.status_changed"):
    agent_id: str
    status: str
