"""The versioned memory's part of the workload."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from strategies import json_values

NAMESPACES = st.sampled_from(["user:a", "user:b", "session:s1"])
KEYS = st.sampled_from(["k1", "k2"])

OPS = [
    st.builds(lambda n, key, v, ttl: ("memory.put", n, key, v, ttl), NAMESPACES, KEYS, json_values,
              st.sampled_from([None, 100])),
    st.builds(lambda n, key: ("memory.delete", n, key), NAMESPACES, KEYS),
    st.builds(lambda n, key: ("memory.restore", n, key), NAMESPACES, KEYS),
    st.builds(lambda n, key, v: ("memory.rollback", n, key, v), NAMESPACES, KEYS, st.integers(1, 3)),
    st.builds(lambda n, key, to: ("memory.publish", n, key, to), NAMESPACES, KEYS, NAMESPACES),
    st.builds(lambda n, key: ("memory.touch", n, key), NAMESPACES, KEYS),
    st.builds(lambda prefix: ("memory.expire", prefix), st.sampled_from(["", "user:", "session:"])),
]


def resolve(k: Any, op: tuple) -> Any:
    name, *a = op
    if name == "memory.expire":
        return k.memory.expire, {"prefix": a[0]}
    address = {"namespace": a[0], "key": a[1]}
    if name == "memory.put":
        return k.memory.put, {**address, "value": a[2], "ttl_ms": a[3]}
    if name == "memory.delete":
        return k.memory.delete, address
    if name == "memory.restore":
        return k.memory.restore, address
    if name == "memory.touch":
        return k.memory.touch, address
    if name == "memory.rollback":
        return k.memory.rollback, {**address, "to_version": a[2]}
    return k.memory.publish, {**address, "to_namespace": a[2]}


def exercise(k: Any, clock: Any) -> None:
    k.memory.put("user:alice", "lang", "fr", ttl_ms=5)
    k.memory.put("user:alice", "lang", "en")
    k.memory.get("user:alice", "lang")
    k.memory.get("user:alice", "lang", version=1)
    k.memory.get("user:alice", "lang", as_of=k.head)
    k.memory.history("user:alice", "lang")
    k.memory.list("user:")
    k.memory.list("user:", memory_type="semantic", include_deleted=True)
    k.memory.list("user:", limit=1, after_key=("user:alice", "lang"))
    k.memory.recent("user:", limit=1, before=k.head)
    k.memory.recent(namespace="user:alice", memory_type="semantic", include_deleted=True)
    k.memory.history("user:alice", "lang", after=1, limit=1)
    k.memory.delete("user:alice", "lang")
    k.memory.restore("user:alice", "lang")
    k.memory.rollback("user:alice", "lang", 1)
    k.memory.publish("user:alice", "lang", "org:acme")
    k.memory.put("user:alice", "draft", "x", ttl_ms=5)
    k.memory.touch("user:alice", "draft")
    k.memory.namespaces("user:")
    clock.advance(10)
    k.memory.expire("user:")
    k.memory.expire()
