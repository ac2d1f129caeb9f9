"""Every list query takes ``limit=`` and a cursor: ``after=`` is a journal
position for lists in journal order, ``after_key=`` the key of the last row
of the previous page for lists in any other order. Paging through a list
gives exactly the whole list."""

from __future__ import annotations

import pytest

import eventkernel

BOTH_ENGINES = True  # the tests taking `k` run on a file and on PostgreSQL (conftest)


@pytest.fixture
def seeded(k, clock):
    for i in range(7):
        k.tasks.create(f"task {i}", task_id=f"t{i}", session_id="s" if i % 2 else None,
                       parent_task_id="t0" if i > 3 else None)
        k.work.enqueue("t0", {"n": i}, priority=i % 3)
        k.checkpoints.record("t0", "manual", {"n": i})
        k.memory.put(f"user:{i % 3}", f"key{i}", i)
        k.memory.put("user:0", "key0", i)
        k.sessions.create("app", f"user{i % 2}")
        k.recovery.record_failure(f"t{i}", f"type{i % 4}", "boom")
        k.tasks.record_tool_execution("t0", "search", arguments={"i": i}, duration_ms=i)
        k.tasks.spawn_agent("t0", name=f"agent {i}")
        clock.advance(1)
    wf = k.tasks.define_workflow("wf", definition=None, workflow_id="wf")
    for i in range(7):
        k.tasks.add_to_workflow(wf.workflow_id, f"t{i}", 10 - i)
    for i in range(5):
        a = k.recovery.start_attempt("t0", "retry")
        k.recovery.finish_attempt(a.attempt_id, success=True)
    for _ in range(4):
        k.work.claim("w", lease_ms=1_000 + k.head)
    return k


def _key(row, name):
    return tuple(getattr(row, n) for n in name) if isinstance(name, tuple) else getattr(row, name)


# (list call, cursor argument, the row attribute the cursor takes)
LISTS = {
    "work.list": (lambda k, **kw: k.work.list(**kw), "after_key", "work_item_id"),
    "work.list(status)": (lambda k, **kw: k.work.list(status="pending", **kw), "after_key", "work_item_id"),
    "work.expiring": (lambda k, **kw: k.work.expiring(10**13, **kw), "after_key", "work_item_id"),
    "checkpoints.list": (lambda k, **kw: k.checkpoints.list("t0", **kw), "after", "position"),
    "memory.list": (lambda k, **kw: k.memory.list("user:", **kw), "after_key", ("namespace", "key")),
    "memory.history": (lambda k, **kw: k.memory.history("user:0", "key0", **kw), "after", "position"),
    "sessions.list": (lambda k, **kw: k.sessions.list("app", **kw), "after_key", "session_id"),
    "sessions.list(user)": (lambda k, **kw: k.sessions.list("app", "user1", **kw), "after_key", "session_id"),
    "tasks.list": (lambda k, **kw: k.tasks.list(**kw), "after_key", "task_id"),
    "tasks.list(session)": (lambda k, **kw: k.tasks.list(session_id="s", **kw), "after_key", "task_id"),
    "tasks.children": (lambda k, **kw: k.tasks.children("t0", **kw), "after_key", "task_id"),
    "tasks.workflow_tasks": (lambda k, **kw: k.tasks.workflow_tasks("wf", **kw), "after_key", "sequence"),
    "tasks.tool_executions": (lambda k, **kw: k.tasks.tool_executions("t0", **kw), "after", "position"),
    "tasks.agents": (lambda k, **kw: k.tasks.agents("t0", **kw), "after_key", "agent_id"),
    "recovery.patterns": (lambda k, **kw: k.recovery.patterns(**({"limit": None} | kw)), "after_key",
                          "pattern_signature"),
    "recovery.attempts": (lambda k, **kw: k.recovery.attempts("t0", **kw), "after_key", "attempt_id"),
    "sessions.events": (lambda k, **kw: k.sessions.events(k.sessions.list("app")[0].session_id, **kw), "after_seq",
                        "seq"),
}


@pytest.mark.parametrize("name", sorted(LISTS))
@pytest.mark.parametrize("page", [1, 2, 3])
def test_paging_through_a_list_gives_the_whole_list(seeded, name, page):
    call, cursor, attribute = LISTS[name]
    k = seeded
    if name == "sessions.events":
        sid = k.sessions.list("app")[0].session_id
        for i in range(5):
            k.sessions.append_event(sid, actor="u", content=i)
    whole = call(k)
    assert len(whole) >= 3, name
    got, last = [], None
    while True:
        rows = call(k, limit=page, **({} if last is None else {cursor: last}))
        assert len(rows) <= page
        got += rows
        if len(rows) < page:
            break
        last = _key(rows[-1], attribute)
    assert got == whole
    assert call(k, limit=0) == []


def test_a_cursor_naming_nothing_is_refused(seeded):
    k = seeded
    for call in (lambda: k.work.list(after_key="nope"), lambda: k.sessions.list("app", after_key="nope"),
                 lambda: k.tasks.list(after_key="nope"), lambda: k.recovery.patterns(after_key="nope")):
        with pytest.raises(eventkernel.NotFound, match="after_key 'nope' names no"):
            call()
    with pytest.raises(eventkernel.InvalidArgument, match=r"after_key must be a \(namespace, key\) pair"):
        k.memory.list(after_key="user:0")


def test_memory_and_conversation_can_be_filed_under_a_task(k):
    k.checkpoints.record("t9", "manual", {"step": 1})
    k.memory.put("user:a", "fact", 1, correlation_id="t9")
    s = k.sessions.create("app", "u")
    k.sessions.append_event(s.session_id, actor="u", content="hi", correlation_id="t9")
    k.memory.put("user:a", "other", 2)  # not filed under the task
    resume = k.checkpoints.resume("t9")
    assert [r.type for r in resume.events] == ["memory.put", "session.event_appended"]
