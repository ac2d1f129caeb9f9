"""Connection tracking's part of the workload: opens, heartbeats, closes and the reaper."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

CLIENTS = st.sampled_from(["cl1", "cl2"])

OPS = [
    st.builds(lambda c, t: ("connections.open", c, t), CLIENTS, st.sampled_from(["websocket", "http"])),
    st.builds(lambda i: ("connections.heartbeat", i), st.integers(0, 3)),
    st.builds(lambda i: ("connections.close", i), st.integers(0, 3)),
    st.builds(lambda t: ("connections.reap", t), st.sampled_from([0, 100, 40_000])),
]


def _pick(k: Any, i: int) -> str | None:
    rows = k.connections.list()
    return rows[i % len(rows)].connection_id if rows else None


def resolve(k: Any, op: tuple) -> Any:
    name, a = op[0], op[1:]
    if name == "connections.open":
        return k.connections.open, {"client_id": a[0], "connection_type": a[1], "user_id": "u1",
                                    "metadata": {"n": 1}}
    if name == "connections.reap":
        return k.connections.reap, {"timeout_ms": a[0]}
    target = _pick(k, a[0])
    if target is None:
        return None
    if name == "connections.heartbeat":
        return k.connections.heartbeat, {"connection_id": target}
    return k.connections.close, {"connection_id": target}


def exercise(k: Any, clock: Any) -> None:
    a = k.connections.open("client-a", connection_type="websocket", user_id="alice", metadata={"ip": "10.0.0.1"})
    b = k.connections.open("client-b", connection_type="http")
    clock.advance(1000)
    k.connections.heartbeat(a.connection_id, metadata={"ip": "10.0.0.2"})
    k.connections.heartbeat(a.connection_id)
    clock.advance(1000)
    k.connections.reap(timeout_ms=1500)
    k.connections.close(a.connection_id)
    k.connections.get(b.connection_id)
    k.connections.list()
    k.connections.list(active=True)
    k.connections.list(active=False, limit=1)
    k.connections.list(client_id="client-a")
    k.connections.list(user_id="alice", after_key=a.connection_id)
    k.retention.apply(policies={"connections_closed": 0})
