"""A ``command_id`` names one command forever: a retry with the same id and
arguments returns exactly what the first call returned — whatever happened
since, and whether or not the first call changed anything — and appends
nothing. Checked over every command of every domain (tests/workload.py)."""

from __future__ import annotations

import inspect

from hypothesis import given
from hypothesis import strategies as st

import eventkernel
from eventkernel import registry
from eventkernel.events.commands import CommandRecorded

from workload import commands, resolve


def _seeded(clock: eventkernel.FrozenClock) -> eventkernel.Kernel:
    """Something for every command to act on (tests/workload.py's names)."""
    k = eventkernel.open(":memory:", clock=clock)
    for t in ("t1", "t2", "t3"):
        k.tasks.create(t, task_id=t)
        k.tasks.define_workflow(t, definition=None, workflow_id=f"wf-{t}")
        k.tasks.spawn_agent(t, name="helper")
        k.work.enqueue(t, {"n": 1})
    k.work.claim("w1", lease_ms=100)
    k.sessions.create("app", "alice", session_id="s1")
    k.memory.put("user:a", "k1", 1)
    k.idempotency.begin("i1", {"r": 0}, ttl_ms=200)
    k.recovery.start_attempt("t1", "retry")
    return k


@given(ops=st.lists(st.tuples(commands, st.booleans()), min_size=5, max_size=40), data=st.data())
def test_a_retry_returns_the_first_result_and_appends_nothing(ops, data):
    clock = eventkernel.FrozenClock(1_700_000_000_000)
    k = _seeded(clock)
    firsts = []
    for i, (op, with_id) in enumerate(ops):
        if op[0] == "advance":
            clock.advance(op[1])
            continue
        call = resolve(k, op)
        if call is None:
            continue
        fn, kwargs = call
        command_id = f"cmd-{i}" if with_id else None
        try:
            result = fn(**kwargs, command_id=command_id)
        except eventkernel.CommandRejected:
            continue
        if command_id is not None:
            firsts.append((fn, kwargs, command_id, result))
    for fn, kwargs, command_id, result in data.draw(st.permutations(firsts), label="retry order"):
        head = k.head
        assert fn(**kwargs, command_id=command_id) == result, f"{fn.__qualname__} retried as {command_id}"
        assert k.head == head, f"{fn.__qualname__} appended on a retry"
    assert k.verify().ok
    k.close()


def test_every_command_is_in_the_workload():
    """The property above covers every public command a service has."""
    k = eventkernel.open(":memory:")
    setup = [("tasks.create", "t1"), ("tasks.workflow", "t1"), ("tasks.agent", "t1"), ("work.enqueue", "t1", 1),
             ("work.claim", "w"), ("recovery.start", "t1"), ("idempotency.begin", "i", 1),
             ("sessions.create", "s", "u", {}), ("memory.put", "n", "k", 1, None),
             ("connections.open", "cl1", "http"), ("documents.index", "d/a.txt", ["agent"], None)]
    ops = [("work.complete_any",), ("work.heartbeat_any",), ("work.release_any",), ("work.fail_any", True),
           ("work.cancel_any",),
           ("work.expire",), ("checkpoints.record", "t", "manual", 1), ("idempotency.complete", "i"),
           ("idempotency.fail", "i"), ("sessions.event", "s", {}), ("sessions.status", "s", "active"),
           ("memory.delete", "n", "k"), ("memory.restore", "n", "k"), ("memory.rollback", "n", "k", 1),
           ("memory.publish", "n", "k", "m"), ("memory.expire", ""), ("memory.touch", "n", "k"),
           ("sessions.delete", "s"), ("recovery.failure", "t", "x", "y", {"tool": "x"}),
           ("recovery.finish", "t1", True), ("recovery.explain", "t"), ("recovery.auto", "t", True),
           ("tasks.status", "t1", "running"), ("tasks.tool", "t1"), ("tasks.add_to_workflow", "t1", 1),
           ("tasks.agent_status", "running"), ("graphs.put", "th-1", "", {}, "run-a", 0),
           ("graphs.put_writes", "th-1", "", [], "task-1"), ("graphs.delete_thread", "th-1"),
           ("graphs.delete_runs", ["run-a"]), ("graphs.prune", ["th-1"], "keep_latest"),
           ("graphs.copy_thread", "th-1", "th-2"), ("retention.set_policies", {"work_items_finished": 0}),
           ("retention.apply", None), ("config.set", "c.a", 1, None), ("config.delete", "c.a"),
           ("config.rotate_key", 0), ("connections.heartbeat", 0), ("connections.close", 0),
           ("connections.reap", 0), ("metrics.record", "m", 1.0, None), ("metrics.record_many", 2),
           ("documents.mark", "d/a.txt", "synced"), ("documents.mark", "d/a.txt", "failed"),
           ("documents.mark", "d/a.txt", "stale"), ("documents.delete", "d/a.txt")]
    covered = set()
    for op in setup:
        fn, kwargs = resolve(k, op)
        covered.add(fn.__qualname__)
        fn(**kwargs)
    for op in ops:
        call = resolve(k, op)
        assert call is not None, op
        covered.add(call[0].__qualname__)
    public = set()
    for service in registry.DOMAINS:
        for name, fn in inspect.getmembers(type(getattr(k, service)), inspect.isfunction):
            if not name.startswith("_") and "command_id" in inspect.signature(fn).parameters:
                public.add(fn.__qualname__)
    k.close()
    assert public - covered == set()


def test_a_command_that_changed_nothing_is_recorded_so_its_id_stays_bound(clock):
    k = eventkernel.open(":memory:", clock=clock)
    assert k.work.claim("w1", command_id="c-1") is None
    (record,) = list(k.read())
    assert isinstance(record.event, CommandRecorded) and record.event.command == "work.claim"
    k.work.enqueue("t", {"n": 1})
    head = k.head
    assert k.work.claim("w1", command_id="c-1") is None  # the retry does not claim the new item
    assert k.head == head
    assert k.work.claim("w1") is not None
    k.close()


def test_record_failure_retried_returns_the_pattern_as_it_was(clock):
    k = eventkernel.open(":memory:", clock=clock)
    first = k.recovery.record_failure("t1", "timeout", "took 10 ms", command_id="f-1")
    k.recovery.record_failure("t2", "timeout", "took 20 ms")  # the same pattern, seen again
    assert first.occurrence_count == 1
    assert k.recovery.record_failure("t1", "timeout", "took 10 ms", command_id="f-1") == first
    k.close()


def test_set_auto_recovery_retried_returns_the_flag_as_it_was(clock):
    k = eventkernel.open(":memory:", clock=clock)
    first = k.recovery.set_auto_recovery("t1", False, command_id="a-1")
    k.recovery.set_auto_recovery("t1", True)
    assert k.recovery.set_auto_recovery("t1", False, command_id="a-1") == first
    assert first.auto_recovery_enabled is False
    k.close()


def test_begin_retried_returns_in_flight_even_after_the_key_completed(clock):
    k = eventkernel.open(":memory:", clock=clock)
    k.idempotency.begin("key", {"r": 1})
    first = k.idempotency.begin("key", {"r": 1}, command_id="b-1")
    assert first.status == "in_flight"
    k.idempotency.complete("key", {"ok": True})
    head = k.head
    assert k.idempotency.begin("key", {"r": 1}, command_id="b-1") == first
    assert k.head == head
    k.close()


def test_an_expiry_sweep_that_found_nothing_retried_finds_nothing(clock):
    k = eventkernel.open(":memory:", clock=clock)
    assert k.memory.expire(command_id="e-1") == 0
    assert k.work.expire_leases(command_id="e-2") == 0
    k.memory.put("ns", "k", 1, ttl_ms=10)
    k.work.enqueue("t", None)
    k.work.claim("w", lease_ms=10)
    clock.advance(20)
    assert (k.memory.expire(command_id="e-1"), k.work.expire_leases(command_id="e-2")) == (0, 0)
    assert (k.memory.expire(), k.work.expire_leases()) == (1, 1)
    k.close()
