"""Every query the kernel runs on a projection table is served by an index:
each SELECT issued during a workload over all domains is explained, and a
full scan of a projection table fails the test."""

from __future__ import annotations

import re

import eventkernel

# Listing everything, unfiltered, is a scan by nature; these calls are not made.
FULL_SCAN = re.compile(r"^SCAN (\w+)(?! USING)")
# A table named in FROM/JOIN and the alias it goes by, if any: a plan speaks of the alias.
_NAMED = re.compile(
    r"\b(?:FROM|JOIN)\s+\"?(\w+)\"?(?:\s+(?:AS\s+)?(?!(?:WHERE|ORDER|GROUP|LIMIT|JOIN|ON|INNER|LEFT|CROSS|USING|"
    r"WINDOW|UNION|EXCEPT|INTERSECT)\b)(\w+))?",
    re.IGNORECASE,
)


def tables_by_name(sql: str) -> dict[str, str]:
    """What each name a plan may use stands for: table names and their aliases."""
    out = {}
    for table, alias in _NAMED.findall(sql):
        out[table] = table
        if alias:
            out[alias] = table
    return out


def test_aliases_are_resolved():
    sql = "SELECT a FROM sessions s WHERE s.x = (SELECT max(y) FROM session_shared_state AS x JOIN t ON 1) ORDER BY a"
    assert tables_by_name(sql) == {"sessions": "sessions", "s": "sessions", "session_shared_state":
                                   "session_shared_state", "x": "session_shared_state", "t": "t"}


def workload(k: eventkernel.Kernel, clock: eventkernel.FrozenClock) -> None:
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
    k.work.cancel(item, "stop")
    k.checkpoints.record("t1", "manual", {"s": 1})
    k.checkpoints.latest("t1")
    k.checkpoints.list("t1")
    k.checkpoints.list("t1", after=1, limit=1)
    k.checkpoints.resume("t1")
    k.idempotency.begin("key", {"r": 1}, ttl_ms=10)
    k.idempotency.begin("key", {"r": 1})
    k.idempotency.complete("key", "ok")
    k.idempotency.get("key")
    s = k.sessions.create("app", "alice", state={"app:a": 1, "user:b": 2, "c": 3})
    k.sessions.append_event(s.session_id, author="u", content="hi", state_delta={"app:a": 2})
    k.sessions.set_status(s.session_id, "paused")
    k.sessions.get(s.session_id)
    k.sessions.list("app")
    k.sessions.list("app", "alice")
    k.sessions.list("app", "alice", limit=1, after_key=s.session_id)
    k.sessions.list("app", limit=1, after_key=s.session_id)
    k.sessions.events(s.session_id, after_seq=0)
    k.memory.put("user:alice", "lang", "fr", ttl_ms=5)
    k.memory.put("user:alice", "lang", "en")
    k.memory.get("user:alice", "lang")
    k.memory.get("user:alice", "lang", version=1)
    k.memory.get("user:alice", "lang", as_of=k.head)
    k.memory.history("user:alice", "lang")
    k.memory.list("user:")
    k.memory.list("user:", memory_type="semantic", include_deleted=True)
    k.memory.list("user:", limit=1, after_key=("user:alice", "lang"))
    k.memory.history("user:alice", "lang", after=1, limit=1)
    k.memory.delete("user:alice", "lang")
    k.memory.restore("user:alice", "lang")
    k.memory.rollback("user:alice", "lang", 1)
    k.memory.publish("user:alice", "lang", "org:acme")
    clock.advance(10)
    k.memory.expire()
    k.recovery.record_failure("t1", "timeout", "took 5 ms")
    a = k.recovery.start_attempt("t1", "retry")
    k.recovery.finish_attempt(a.attempt_id, success=True)
    k.recovery.explain("t1", failure_summary="s", root_cause="r", retry_decision="d")
    k.recovery.set_auto_recovery("t1", False)
    k.recovery.stats()
    k.recovery.patterns(5)
    k.recovery.attempts("t1")
    k.recovery.explanation("t1")
    k.recovery.task("t1")
    k.tasks.create("T", task_id="T", session_id="s")
    k.tasks.create("C", task_id="C", parent_task_id="T")
    k.tasks.set_status("T", "running")
    k.tasks.get("T")
    k.tasks.list(status="running")
    k.tasks.list(status="running", limit=1, after_key="T")
    k.tasks.list(session_id="s")
    k.tasks.list(session_id="s", after_key="T")
    k.tasks.children("T")
    k.tasks.children("T", after_key="C")
    k.tasks.define_workflow("wf", definition=None, workflow_id="wf")
    k.tasks.add_to_workflow("wf", "T", 1)
    k.tasks.workflow("wf")
    k.tasks.workflow_tasks("wf")
    k.tasks.record_tool_execution("T", "search", arguments=None, duration_ms=1)
    k.tasks.tool_executions("T")
    agent = k.tasks.spawn_agent("T", name="a")
    k.tasks.set_agent_status(agent.agent_id, "running")
    k.tasks.agents("T")
    k.tasks.agents("T", after_key=agent.agent_id)
    k.tasks.tool_executions("T", after=1, limit=1)
    k.tasks.workflow_tasks("wf", after_key=0, limit=1)
    k.recovery.attempts("t1", after_key=a.attempt_id)


def test_no_projection_query_scans_a_table(db_path, clock):
    with eventkernel.open(db_path, clock=clock) as k:
        tables = {t for names in k._projector.tables.values() for t in names}
        seen: dict[str, tuple] = {}

        def trace(cursor, sql, bindings):
            if sql.lstrip().upper().startswith("SELECT"):
                seen.setdefault(sql, bindings)
            return True

        k._db.conn.exec_trace = trace
        workload(k, clock)
        k._db.conn.exec_trace = None
        scans = []
        for sql, bindings in seen.items():
            plan = [row[3] for row in k._db.conn.execute(f"EXPLAIN QUERY PLAN {sql}", bindings)]
            names = tables_by_name(sql)
            for detail in plan:
                m = FULL_SCAN.match(detail)
                if m and names.get(m.group(1), m.group(1)) in tables:
                    scans.append(f"{detail}  <-  {sql}")
        projection_queries = [s for s in seen if any(t in s for t in tables)]
        assert len(projection_queries) > 40, "the workload did not exercise the queries"
        assert not scans, "\n".join(scans)
