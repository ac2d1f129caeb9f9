"""Retention's part of the workload: policies set and applied among every
other domain's commands (the rows it forgets must be forgotten by a rebuild too)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from eventkernel import RETENTION_RULES

POLICIES = st.dictionaries(st.sampled_from(sorted(RETENTION_RULES)), st.integers(0, 1), max_size=3)

OPS = [
    st.builds(lambda p: ("retention.set_policies", p), POLICIES),
    st.builds(lambda p: ("retention.apply", p), st.one_of(st.none(), POLICIES)),
]


def resolve(k: Any, op: tuple) -> Any:
    name, policies = op
    if name == "retention.set_policies":
        return k.retention.set_policies, {"policies": policies}
    return k.retention.apply, {"policies": policies}


def exercise(k: Any, clock: Any) -> None:
    k.retention.set_policies({"work_items_finished": 0, "idempotency_keys_expired": 0, "sessions_archived": 0})
    clock.advance(1)
    k.retention.apply(dry_run=True)
    k.retention.apply()
    k.retention.apply(policies={"recovery_attempts_succeeded": 0, "failure_patterns_single": 0,
                                "recovery_attempts_failed": 0, "work_items_failed": 0})
    k.retention.policies()
    k.retention.log()
