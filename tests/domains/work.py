"""The work queue's part of the workload."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from strategies import json_values

TASKS = st.sampled_from(["t1", "t2", "t3"])

OPS = [
    st.builds(lambda t, p: ("work.enqueue", t, p), TASKS, json_values),
    st.builds(lambda w: ("work.claim", w), st.sampled_from(["w1", "w2"])),
    st.just(("work.complete_any",)),
    st.just(("work.heartbeat_any",)),
    st.builds(lambda r: ("work.fail_any", r), st.booleans()),
    st.just(("work.cancel_any",)),
    st.just(("work.release_any",)),
    st.just(("work.expire",)),
]


def resolve(k: Any, op: tuple) -> Any:
    name, *a = op
    if name == "work.enqueue":
        return k.work.enqueue, {"task_id": a[0], "input": a[1]}
    if name == "work.claim":
        return k.work.claim, {"worker": a[0], "lease_ms": 100}
    if name == "work.expire":
        return k.work.expire_leases, {}
    if name == "work.cancel_any":
        for item in k.work.list(limit=1):
            return k.work.cancel, {"work_item_id": item.work_item_id, "reason": "not needed"}
        return None
    for item in k.work.list(status="in_progress", limit=1):
        holder = {"work_item_id": item.work_item_id, "worker": item.lease_holder, "token": item.token}
        if name == "work.complete_any":
            return k.work.complete, holder
        if name == "work.heartbeat_any":
            return k.work.heartbeat, holder
        if name == "work.release_any":
            return k.work.release, holder
        return k.work.fail, {**holder, "error": "boom", "retryable": a[0]}
    return None


def exercise(k: Any, clock: Any) -> None:
    item = k.work.enqueue("t1", {"n": 1})
    k.work.enqueue("t1", {"n": 2}, priority=2)
    claimed = k.work.claim("w")
    k.work.heartbeat(claimed.work_item_id, "w", claimed.token)
    k.work.fail(claimed.work_item_id, "w", claimed.token, "e")
    k.work.claim("w", lease_ms=10)
    clock.advance(20)
    k.work.expire_leases()
    k.work.get(item)
    k.work.list(status="pending")
    k.work.list(status="pending", limit=1, after_key=item)
    k.work.list(task_id="t1")
    k.work.list(task_id="t1", limit=1, after_key=item)
    k.work.expiring(clock())
    k.work.claim("w2", kinds=["task"])
    k.work.claim("w2", task_id="t1")
    again = k.work.enqueue("t2", None, kind="other")
    held = k.work.claim("w3", kinds=["other"], task_id="t2")
    k.work.release(again, "w3", held.token)
    k.work.cancel(item, "stop")
