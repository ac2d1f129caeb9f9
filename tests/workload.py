"""A workload over every domain, shared by the property tests: a hypothesis
strategy of commands and the driver that runs one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

import eventkernel

from strategies import json_values

TASKS = st.sampled_from(["t1", "t2", "t3"])
SESSIONS = st.sampled_from(["s1", "s2"])
NAMESPACES = st.sampled_from(["user:a", "user:b", "session:s1"])
KEYS = st.sampled_from(["k1", "k2"])
STATE = st.dictionaries(st.sampled_from(["x", "app:theme", "user:lang", "temp:t"]), st.integers(0, 3), max_size=3)

commands = st.one_of(
    st.builds(lambda t, p: ("work.enqueue", t, p), TASKS, json_values),
    st.builds(lambda w: ("work.claim", w), st.sampled_from(["w1", "w2"])),
    st.just(("work.complete_any",)),
    st.just(("work.heartbeat_any",)),
    st.builds(lambda r: ("work.fail_any", r), st.booleans()),
    st.just(("work.cancel_any",)),
    st.just(("work.expire",)),
    st.builds(lambda t, c, s: ("cp.record", t, c, s), TASKS,
              st.sampled_from(["manual", "tool_executed", "llm_response", "bogus"]), json_values),
    st.builds(lambda key, r: ("idem.begin", key, r), st.sampled_from(["i1", "i2"]), st.integers(0, 2)),
    st.builds(lambda key: ("idem.complete", key), st.sampled_from(["i1", "i2"])),
    st.builds(lambda key: ("idem.fail", key), st.sampled_from(["i1", "i2"])),
    st.builds(lambda s, u, st_: ("ses.create", s, u, st_), SESSIONS, st.sampled_from(["alice", "bob"]), STATE),
    st.builds(lambda s, d: ("ses.event", s, d), SESSIONS, STATE),
    st.builds(lambda s, status: ("ses.status", s, status), SESSIONS,
              st.sampled_from(["active", "paused", "terminated", "archived"])),
    st.builds(lambda n, key, v, ttl: ("mem.put", n, key, v, ttl), NAMESPACES, KEYS, json_values,
              st.sampled_from([None, 100])),
    st.builds(lambda n, key: ("mem.delete", n, key), NAMESPACES, KEYS),
    st.builds(lambda n, key: ("mem.restore", n, key), NAMESPACES, KEYS),
    st.builds(lambda n, key, v: ("mem.rollback", n, key, v), NAMESPACES, KEYS, st.integers(1, 3)),
    st.builds(lambda n, key, to: ("mem.publish", n, key, to), NAMESPACES, KEYS, NAMESPACES),
    st.just(("mem.expire",)),
    st.builds(lambda t, f, m: ("rec.failure", t, f, m), TASKS, st.sampled_from(["timeout", "crash"]),
              st.sampled_from(["took 10 ms", "took 20 ms", "disk full"])),
    st.builds(lambda t: ("rec.start", t), TASKS),
    st.builds(lambda t, ok: ("rec.finish", t, ok), TASKS, st.booleans()),
    st.builds(lambda t: ("rec.explain", t), TASKS),
    st.builds(lambda t, on: ("rec.auto", t, on), TASKS, st.booleans()),
    st.builds(lambda t: ("task.create", t), TASKS),
    st.builds(lambda t, s: ("task.status", t, s), TASKS, st.sampled_from(["running", "completed", "failed", "cancelled"])),
    st.builds(lambda t: ("task.tool", t), TASKS),
    st.builds(lambda t: ("task.agent", t), TASKS),
    st.builds(lambda t: ("task.workflow", t), TASKS),
    st.builds(lambda t, n: ("task.add_to_workflow", t, n), TASKS, st.integers(0, 2)),
    st.builds(lambda s: ("agent.status", s), st.sampled_from(["running", "completed", "failed", "terminated"])),
    st.builds(lambda ms: ("advance", ms), st.sampled_from([0, 50, 100, 40_000])),
)
step = st.one_of(
    st.tuples(st.just("one"), commands, st.booleans()),
    st.tuples(st.just("txn"), st.lists(commands, max_size=5), st.booleans()),
)


class Abort(Exception):
    pass


Call = tuple[Callable[..., Any], dict[str, Any]]


def resolve(k: eventkernel.Kernel, op: tuple) -> Call | None:
    """The kernel method an op calls and its arguments, decided against the
    current state (an op like 'complete any in-progress item' picks one), or
    None when the op is not a command (advancing the clock) or has no target."""
    name, *a = op
    if name == "work.enqueue":
        return k.work.enqueue, {"task_id": a[0], "input": a[1]}
    if name == "work.claim":
        return k.work.claim, {"worker": a[0], "lease_ms": 100}
    if name == "work.complete_any":
        for item in k.work.list(status="in_progress", limit=1):
            return k.work.complete, {"work_item_id": item.work_item_id, "worker": item.lease_holder,
                                     "token": item.token}
        return None
    if name in ("work.heartbeat_any", "work.fail_any"):
        for item in k.work.list(status="in_progress", limit=1):
            holder = {"work_item_id": item.work_item_id, "worker": item.lease_holder, "token": item.token}
            if name == "work.heartbeat_any":
                return k.work.heartbeat, holder
            return k.work.fail, {**holder, "error": "boom", "retryable": a[0]}
        return None
    if name == "work.cancel_any":
        for item in k.work.list(limit=1):
            return k.work.cancel, {"work_item_id": item.work_item_id, "reason": "not needed"}
        return None
    if name == "work.expire":
        return k.work.expire_leases, {}
    if name == "cp.record":
        return k.checkpoints.record, {"task_id": a[0], "checkpoint_type": a[1], "snapshot": a[2]}
    if name == "idem.begin":
        return k.idempotency.begin, {"key": a[0], "request": {"r": a[1]}, "ttl_ms": 200, "task_id": "t1"}
    if name == "idem.complete":
        return k.idempotency.complete, {"key": a[0], "response": {"ok": True}}
    if name == "idem.fail":
        return k.idempotency.fail, {"key": a[0], "error": "declined"}
    if name == "ses.create":
        return k.sessions.create, {"app_name": "app", "user_id": a[1], "session_id": a[0], "state": a[2]}
    if name == "ses.event":
        return k.sessions.append_event, {"session_id": a[0], "author": "user", "content": "hi", "state_delta": a[1]}
    if name == "ses.status":
        return k.sessions.set_status, {"session_id": a[0], "status": a[1]}
    if name == "mem.put":
        return k.memory.put, {"namespace": a[0], "key": a[1], "value": a[2], "ttl_ms": a[3]}
    if name == "mem.delete":
        return k.memory.delete, {"namespace": a[0], "key": a[1]}
    if name == "mem.restore":
        return k.memory.restore, {"namespace": a[0], "key": a[1]}
    if name == "mem.rollback":
        return k.memory.rollback, {"namespace": a[0], "key": a[1], "to_version": a[2]}
    if name == "mem.publish":
        return k.memory.publish, {"namespace": a[0], "key": a[1], "to_namespace": a[2]}
    if name == "mem.expire":
        return k.memory.expire, {}
    if name == "rec.failure":
        return k.recovery.record_failure, {"task_id": a[0], "failure_type": a[1], "error_message": a[2]}
    if name == "rec.start":
        return k.recovery.start_attempt, {"task_id": a[0], "strategy": "retry"}
    if name == "rec.finish":
        for attempt in k.recovery.attempts(a[0])[-1:]:
            return k.recovery.finish_attempt, {"attempt_id": attempt.attempt_id, "success": a[1]}
        return None
    if name == "rec.explain":
        return k.recovery.explain, {"task_id": a[0], "failure_summary": "s", "root_cause": "r", "retry_decision": "d"}
    if name == "rec.auto":
        return k.recovery.set_auto_recovery, {"task_id": a[0], "enabled": a[1]}
    if name == "task.create":
        return k.tasks.create, {"title": a[0], "task_id": a[0]}
    if name == "task.status":
        return k.tasks.set_status, {"task_id": a[0], "status": a[1]}
    if name == "task.tool":
        return k.tasks.record_tool_execution, {"task_id": a[0], "tool_name": "search", "arguments": {"q": 1},
                                               "duration_ms": 5}
    if name == "task.agent":
        return k.tasks.spawn_agent, {"task_id": a[0], "name": "helper"}
    if name == "task.workflow":
        return k.tasks.define_workflow, {"name": a[0], "definition": {"steps": [a[0]]}, "workflow_id": "wf-" + a[0]}
    if name == "task.add_to_workflow":
        return k.tasks.add_to_workflow, {"workflow_id": "wf-" + a[0], "task_id": a[0], "sequence": a[1]}
    if name == "agent.status":
        for task_id in ("t1", "t2", "t3"):
            try:
                agents = k.tasks.agents(task_id)
            except eventkernel.KernelError:
                continue
            for agent in agents[:1]:
                return k.tasks.set_agent_status, {"agent_id": agent.agent_id, "status": a[0]}
        return None
    if name == "advance":
        return None
    raise AssertionError(f"unknown op {name}")


def run_one(k: eventkernel.Kernel, clock: eventkernel.FrozenClock, op: tuple, command_id: str | None) -> Any:
    """Run one op (a command with ``command_id``, or a clock step); returns its result."""
    if op[0] == "advance":
        clock.advance(op[1])
        return None
    call = resolve(k, op)
    if call is None:
        return None
    fn, kwargs = call
    return fn(**kwargs, command_id=command_id)
