"""Connection tracking: open, heartbeat, close, and the reaper."""

from __future__ import annotations

from eventkernel.errors import InvalidArgument, NotFound, TerminalState

from support import refused

BOTH_ENGINES = True  # the tests taking `k` run on a file and on PostgreSQL (conftest)


def test_open_heartbeat_close(k, clock):
    c = k.connections.open("client-1", connection_type="websocket", user_id="alice", metadata={"ip": "10.0.0.1"})
    assert (c.is_active, c.client_id, c.user_id, c.created_at, c.last_heartbeat_at) == (
        True, "client-1", "alice", clock.now, clock.now)
    clock.advance(500)
    beat = k.connections.heartbeat(c.connection_id, metadata={"ip": "10.0.0.2"})
    assert (beat.last_heartbeat_at, beat.metadata) == (clock.now, {"ip": "10.0.0.2"})
    assert k.connections.heartbeat(c.connection_id).metadata == {"ip": "10.0.0.2"}  # kept without new metadata
    closed = k.connections.close(c.connection_id)
    assert (closed.is_active, closed.close_reason, closed.closed_at) == (False, "closed", clock.now)
    with refused(k, TerminalState, "was closed at"):
        k.connections.heartbeat(c.connection_id)
    with refused(k, TerminalState, "was closed at"):
        k.connections.close(c.connection_id)
    with refused(k, NotFound, "no connection 'nope'"):
        k.connections.heartbeat("nope")


def test_the_reaper_closes_silent_connections_only(k, clock):
    quiet = k.connections.open("a", connection_type="http")
    lively = k.connections.open("b", connection_type="http")
    clock.advance(30_000)
    k.connections.heartbeat(lively.connection_id)
    clock.advance(30_000)
    assert k.connections.reap(timeout_ms=60_000) == [quiet.connection_id]  # silent for exactly the timeout
    assert k.connections.reap(timeout_ms=60_000) == []
    row = k.connections.get(quiet.connection_id)
    assert (row.is_active, row.close_reason) == (False, "timed_out")
    with refused(k, TerminalState, "timed out at"):
        k.connections.heartbeat(quiet.connection_id)
    assert [c.connection_id for c in k.connections.list(active=True)] == [lively.connection_id]
    assert [c.connection_id for c in k.connections.list(active=False)] == [quiet.connection_id]
    with refused(k, InvalidArgument, "timeout_ms must be"):
        k.connections.reap(timeout_ms=-1)


def test_lists_filter_and_page(k):
    ids = sorted(k.connections.open(f"c{i % 2}", connection_type="grpc", user_id=f"u{i % 3}").connection_id
                 for i in range(6))
    assert [c.connection_id for c in k.connections.list()] == ids
    assert [c.connection_id for c in k.connections.list(limit=2, after_key=ids[1])] == ids[2:4]
    assert {c.client_id for c in k.connections.list(client_id="c1")} == {"c1"}
    assert len(k.connections.list(user_id="u0")) == 2
    with refused(k, InvalidArgument, "active must be a bool"):
        k.connections.list(active="yes")
    with refused(k, NotFound, "after_key 'zz' names no connection"):
        k.connections.list(after_key="zz")


def test_open_refuses_bad_input(k):
    with refused(k, InvalidArgument, "connection_type"):
        k.connections.open("c", connection_type="")
    with refused(k, InvalidArgument, "metadata must be a dict"):
        k.connections.open("c", connection_type="ws", metadata=[1])


def test_retention_forgets_closed_connections(k, clock):
    c = k.connections.open("a", connection_type="ws")
    live = k.connections.open("b", connection_type="ws")
    k.connections.close(c.connection_id)
    clock.advance(1000)
    report = k.retention.apply(policies={"connections_closed": 0})
    assert report.results[0].keys == [c.connection_id]
    assert [x.connection_id for x in k.connections.list()] == [live.connection_id]
