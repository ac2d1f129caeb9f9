"""The idempotency keys' part of the workload."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

KEYS = st.sampled_from(["i1", "i2"])

OPS = [
    st.builds(lambda key, r: ("idempotency.begin", key, r), KEYS, st.integers(0, 2)),
    st.builds(lambda key: ("idempotency.complete", key), KEYS),
    st.builds(lambda key: ("idempotency.fail", key), KEYS),
]


def resolve(k: Any, op: tuple) -> Any:
    name, key, *a = op
    if name == "idempotency.begin":
        return k.idempotency.begin, {"key": key, "request": {"r": a[0]}, "ttl_ms": 200, "task_id": "t1"}
    if name == "idempotency.complete":
        return k.idempotency.complete, {"key": key, "response": {"ok": True}}
    return k.idempotency.fail, {"key": key, "error": "declined"}


def exercise(k: Any, clock: Any) -> None:
    k.idempotency.begin("key", {"r": 1}, ttl_ms=10)
    k.idempotency.begin("key", {"r": 1})
    k.idempotency.complete("key", "ok")
    k.idempotency.get("key")
