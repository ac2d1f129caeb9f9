"""A workload over every domain, shared by the property tests: a hypothesis
strategy of commands and the driver that runs one."""

from __future__ import annotations

from hypothesis import strategies as st
from strategies import json_values

import eventkernel

TASKS = st.sampled_from(["t1", "t2", "t3"])
SESSIONS = st.sampled_from(["s1", "s2"])
NAMESPACES = st.sampled_from(["user:a", "user:b", "session:s1"])
KEYS = st.sampled_from(["k1", "k2"])
STATE = st.dictionaries(st.sampled_from(["x", "app:theme", "user:lang", "temp:t"]), st.integers(0, 3), max_size=3)

commands = st.one_of(
    st.builds(lambda t, p: ("work.enqueue", t, p), TASKS, json_values),
    st.builds(lambda w: ("work.claim", w), st.sampled_from(["w1", "w2"])),
    st.just(("work.complete_any",)),
    st.just(("work.expire",)),
    st.builds(lambda t, c, s: ("cp.record", t, c, s), TASKS,
              st.sampled_from(["manual", "tool_executed", "llm_response", "bogus"]), json_values),
    st.builds(lambda key, r: ("idem.begin", key, r), st.sampled_from(["i1", "i2"]), st.integers(0, 2)),
    st.builds(lambda key: ("idem.complete", key), st.sampled_from(["i1", "i2"])),
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
    st.builds(lambda t: ("task.create", t), TASKS),
    st.builds(lambda t, s: ("task.status", t, s), TASKS, st.sampled_from(["running", "completed", "failed", "cancelled"])),
    st.builds(lambda t: ("task.tool", t), TASKS),
    st.builds(lambda t: ("task.agent", t), TASKS),
    st.builds(lambda ms: ("advance", ms), st.sampled_from([0, 50, 100, 40_000])),
)
step = st.one_of(
    st.tuples(st.just("one"), commands, st.booleans()),
    st.tuples(st.just("txn"), st.lists(commands, max_size=5), st.booleans()),
)


class Abort(Exception):
    pass


def run_one(k: eventkernel.Kernel, clock: eventkernel.FrozenClock, op: tuple, command_id: str | None) -> None:
    name, *a = op
    cid = {"command_id": command_id}
    if name == "work.enqueue":
        k.work.enqueue(a[0], a[1], **cid)
    elif name == "work.claim":
        k.work.claim(a[0], lease_ms=100, **cid)
    elif name == "work.complete_any":
        for item in k.work.list(status="in_progress", limit=1):
            k.work.complete(item.work_item_id, item.lease_holder, item.token, **cid)
    elif name == "work.expire":
        k.work.expire_leases(**cid)
    elif name == "cp.record":
        k.checkpoints.record(a[0], a[1], a[2], **cid)
    elif name == "idem.begin":
        k.idempotency.begin(a[0], {"r": a[1]}, ttl_ms=200, task_id="t1", **cid)
    elif name == "idem.complete":
        k.idempotency.complete(a[0], {"ok": True}, **cid)
    elif name == "ses.create":
        k.sessions.create("app", a[1], session_id=a[0], state=a[2], **cid)
    elif name == "ses.event":
        k.sessions.append_event(a[0], author="user", content="hi", state_delta=a[1], **cid)
    elif name == "ses.status":
        k.sessions.set_status(a[0], a[1], **cid)
    elif name == "mem.put":
        k.memory.put(a[0], a[1], a[2], ttl_ms=a[3], **cid)
    elif name == "mem.delete":
        k.memory.delete(a[0], a[1], **cid)
    elif name == "mem.restore":
        k.memory.restore(a[0], a[1], **cid)
    elif name == "mem.rollback":
        k.memory.rollback(a[0], a[1], a[2], **cid)
    elif name == "mem.publish":
        k.memory.publish(a[0], a[1], a[2], **cid)
    elif name == "mem.expire":
        k.memory.expire(**cid)
    elif name == "rec.failure":
        k.recovery.record_failure(a[0], a[1], a[2], **cid)
    elif name == "rec.start":
        k.recovery.start_attempt(a[0], "retry", **cid)
    elif name == "rec.finish":
        for attempt in k.recovery.attempts(a[0])[-1:]:
            k.recovery.finish_attempt(attempt.attempt_id, success=a[1], **cid)
    elif name == "rec.explain":
        k.recovery.explain(a[0], failure_summary="s", root_cause="r", retry_decision="d", **cid)
    elif name == "task.create":
        k.tasks.create(a[0], task_id=a[0], **cid)
    elif name == "task.status":
        k.tasks.set_status(a[0], a[1], **cid)
    elif name == "task.tool":
        k.tasks.record_tool_execution(a[0], "search", arguments={"q": 1}, duration_ms=5, **cid)
    elif name == "task.agent":
        k.tasks.spawn_agent(a[0], name="helper", **cid)
    elif name == "advance":
        clock.advance(a[0])
