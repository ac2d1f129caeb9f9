"""Failures and recovery's part of the workload."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

TASKS = st.sampled_from(["t1", "t2", "t3"])

OPS = [
    st.builds(lambda t, f, m, c: ("recovery.failure", t, f, m, c), TASKS, st.sampled_from(["timeout", "crash"]),
              st.sampled_from(["took 10 ms", "took 20 ms", "disk full"]),
              st.sampled_from([None, {}, {"tool": "search", "tries": [1, 2.5, None]}])),
    st.builds(lambda t: ("recovery.start", t), TASKS),
    st.builds(lambda t, ok: ("recovery.finish", t, ok), TASKS, st.booleans()),
    st.builds(lambda t: ("recovery.explain", t), TASKS),
    st.builds(lambda t, on: ("recovery.auto", t, on), TASKS, st.booleans()),
]


def resolve(k: Any, op: tuple) -> Any:
    name, task_id, *a = op
    if name == "recovery.failure":
        return k.recovery.record_failure, {"task_id": task_id, "failure_type": a[0], "error_message": a[1],
                                         "context": a[2]}
    if name == "recovery.start":
        return k.recovery.start_attempt, {"task_id": task_id, "strategy": "retry"}
    if name == "recovery.finish":
        for attempt in k.recovery.attempts(task_id)[-1:]:
            return k.recovery.finish_attempt, {"attempt_id": attempt.attempt_id, "success": a[0]}
        return None
    if name == "recovery.explain":
        return k.recovery.explain, {"task_id": task_id, "failure_summary": "s", "root_cause": "r",
                                    "retry_decision": "d"}
    return k.recovery.set_auto_recovery, {"task_id": task_id, "enabled": a[0]}


def exercise(k: Any, clock: Any) -> None:
    k.recovery.record_failure("t1", "timeout", "took 5 ms")
    a = k.recovery.start_attempt("t1", "retry")
    k.recovery.finish_attempt(a.attempt_id, success=True)
    k.recovery.explain("t1", failure_summary="s", root_cause="r", retry_decision="d")
    k.recovery.set_auto_recovery("t1", False)
    k.recovery.stats()
    k.recovery.patterns(5)
    k.recovery.attempts("t1")
    k.recovery.attempts("t1", after_key=a.attempt_id)
    k.recovery.explanation("t1")
    k.recovery.task("t1")
