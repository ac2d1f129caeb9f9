"""The checkpoints' part of the workload."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from strategies import json_values

TASKS = st.sampled_from(["t1", "t2", "t3"])

OPS = [
    st.builds(lambda t, c, s: ("checkpoints.record", t, c, s), TASKS,
              st.sampled_from(["manual", "tool_executed", "llm_response", "bogus"]), json_values),
]


def resolve(k: Any, op: tuple) -> Any:
    _, task_id, checkpoint_type, snapshot = op
    return k.checkpoints.record, {"task_id": task_id, "checkpoint_type": checkpoint_type, "snapshot": snapshot}


def exercise(k: Any, clock: Any) -> None:
    k.checkpoints.record("t1", "manual", {"s": 1})
    k.checkpoints.latest("t1")
    k.checkpoints.list("t1")
    k.checkpoints.list("t1", after=1, limit=1)
    k.checkpoints.resume("t1")
