from __future__ import annotations

import pytest

from eventkernel.errors import ConcurrencyConflict, InvalidArgument, InvalidTransition, NotFound

from support import refused, snapshot

BOTH_ENGINES = True  # the tests taking `k` run on a file and on PostgreSQL (conftest)


def test_create_keeps_own_and_shared_keys_and_drops_temp(k, clock):
    s = k.sessions.create("app", "alice", project_id="p1", metadata={"channel": "web"},
                          state={"topic": "tax", "app:theme": "dark", "user:lang": "fr", "temp:draft": "x"})
    assert (s.status, s.project_id, s.metadata, s.event_count) == ("created", "p1", {"channel": "web"}, 0)
    assert s.state == {"topic": "tax", "app:theme": "dark", "user:lang": "fr"}
    assert s.created_at == s.updated_at == clock()
    (r,) = k.read()
    assert "temp:" not in r.event.state and "temp:draft" not in str(list(k.read()))


def test_app_keys_are_shared_by_the_app_and_user_keys_by_the_user(k):
    a1 = k.sessions.create("app", "alice", state={"app:theme": "dark", "user:lang": "fr", "own": 1})
    a2 = k.sessions.create("app", "alice")
    bob = k.sessions.create("app", "bob")
    other_app = k.sessions.create("other", "alice")
    assert k.sessions.get(a2.session_id).state == {"app:theme": "dark", "user:lang": "fr"}
    assert k.sessions.get(bob.session_id).state == {"app:theme": "dark"}
    assert k.sessions.get(other_app.session_id).state == {}
    k.sessions.append_event(bob.session_id, actor="bob", content="hi", state_delta={"app:theme": "light", "user:lang": "de"})
    assert k.sessions.get(a1.session_id).state == {"app:theme": "light", "user:lang": "fr", "own": 1}
    assert k.sessions.get(bob.session_id).state == {"app:theme": "light", "user:lang": "de"}


def test_events_are_chronological_and_apply_their_state_delta(k, clock):
    s = k.sessions.create("app", "u")
    e1 = k.sessions.append_event(s.session_id, actor="user", content={"text": "hi"}, state_delta={"n": 1, "temp:t": 0})
    clock.advance(5)
    e2 = k.sessions.append_event(s.session_id, actor="agent", content={"text": "hello"}, state_delta={"n": 2})
    assert (e1.seq, e2.seq, e2.recorded_at - e1.recorded_at) == (1, 2, 5)
    assert e1.state_delta == {"n": 1}
    assert k.sessions.events(s.session_id) == [e1, e2]
    assert k.sessions.events(s.session_id, after_seq=1) == [e2]
    assert k.sessions.events(s.session_id, limit=1) == [e1]
    assert k.sessions.event_positions(s.session_id) == [e1.position, e2.position]
    assert e1.position < e2.position
    assert k.sessions.event_positions(s.session_id, after_seq=1) == [e2.position]
    assert k.sessions.event_positions(s.session_id, limit=1) == [e1.position]
    got = k.sessions.get(s.session_id)
    assert (got.status, got.state, got.event_count, got.updated_at) == ("active", {"n": 2}, 2, clock())


def test_lifecycle(k, clock):
    sid = k.sessions.create("app", "u").session_id
    assert k.sessions.set_status(sid, "active").status == "active"
    assert k.sessions.set_status(sid, "paused").status == "paused"
    with refused(k, InvalidTransition, "is paused; set_status"):
        k.sessions.append_event(sid, actor="u", content="x")
    assert k.sessions.set_status(sid, "active").status == "active"
    before = snapshot(k)
    assert k.sessions.set_status(sid, "active").status == "active"  # a no-op
    assert snapshot(k) == before
    clock.advance(1)
    t = k.sessions.set_status(sid, "terminated")
    assert (t.status, t.terminated_at) == ("terminated", clock())
    with refused(k, InvalidTransition, "is terminated"):
        k.sessions.append_event(sid, actor="u", content="x")
    with refused(k, InvalidTransition, "cannot go from terminated to active; from terminated it may go to archived"):
        k.sessions.set_status(sid, "active")
    assert k.sessions.set_status(sid, "archived").archived_at == clock()
    with refused(k, InvalidTransition, "archived is final"):
        k.sessions.set_status(sid, "active")


def test_list_by_app_and_user(k, clock):
    a = k.sessions.create("app", "alice").session_id
    clock.advance(1)
    b = k.sessions.create("app", "bob").session_id
    clock.advance(1)
    k.sessions.create("other", "alice")
    k.sessions.append_event(a, actor="alice", content="later")
    assert [s.session_id for s in k.sessions.list("app")] == [a, b]
    assert [s.session_id for s in k.sessions.list("app", "bob")] == [b]
    assert k.sessions.list("none") == []


def test_list_merges_the_shared_keys_into_each_session_on_its_own(k):
    """The shared keys are read once per app and user; each session's state
    still holds values of its own (changing one leaves the others alone)."""
    a1 = k.sessions.create("app", "alice", state={"app:cfg": {"theme": "dark"}, "user:tags": ["a"], "own": 1})
    a2 = k.sessions.create("app", "alice").session_id
    bob = k.sessions.create("app", "bob").session_id
    listed = {s.session_id: s.state for s in k.sessions.list("app")}
    assert listed == {
        a1.session_id: {"app:cfg": {"theme": "dark"}, "user:tags": ["a"], "own": 1},
        a2: {"app:cfg": {"theme": "dark"}, "user:tags": ["a"]},
        bob: {"app:cfg": {"theme": "dark"}},
    }
    listed[a2]["app:cfg"]["theme"] = "changed"
    listed[a2]["user:tags"].append("b")
    assert listed[a1.session_id]["app:cfg"] == listed[bob]["app:cfg"] == {"theme": "dark"}
    assert listed[a1.session_id]["user:tags"] == ["a"]
    assert [s.state for s in k.sessions.list("app", "bob")] == [{"app:cfg": {"theme": "dark"}}]


def test_last_events_of_many_sessions_in_one_read(k):
    ids = [k.sessions.create("app", f"u{i % 3}").session_id for i in range(205)]
    last = {}
    for n, sid in enumerate(ids[::2]):
        for turn in range(1 + n % 3):
            last[sid] = k.sessions.append_event(sid, actor="a", content={"turn": turn}, state_delta={"t": turn})
    found = k.sessions.last_events([*ids, "nope", ids[0]])
    assert found == last
    assert k.sessions.last_events([]) == {}
    for bad in ("s1", 7, [1]):
        with refused(k, InvalidArgument, "session_ids"):
            k.sessions.last_events(bad)


def test_unknown_sessions(k):
    for call in (
        lambda: k.sessions.get("nope"),
        lambda: k.sessions.events("nope"),
        lambda: k.sessions.event_positions("nope"),
        lambda: k.sessions.append_event("nope", actor="a", content=1),
        lambda: k.sessions.set_status("nope", "active"),
    ):
        with refused(k, NotFound, "no session 'nope'"):
            call()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda k: k.sessions.create("", "u"), "app_name must not be empty"),
        (lambda k: k.sessions.create("a", "u", state={"x": float("nan")}), "NaN"),
        (lambda k: k.sessions.create("a", "u", state=[1]), "state must be a dict"),
        (lambda k: k.sessions.create("a", "u", session_id="s1"), "session_id 's1' already exists"),
        (lambda k: k.sessions.set_status("s1", "sleeping"), "status must be one of"),
        (lambda k: k.sessions.append_event("s1", actor="", content=1), "actor must not be empty"),
        (lambda k: k.sessions.append_event("s1", actor="a", content=1, state_delta={2: 1}), "keys must be str"),
    ],
)
def test_bad_arguments(k, call, match):
    k.sessions.create("a", "u", session_id="s1")
    with refused(k, InvalidArgument, match):
        call(k)


def test_repeated_command_ids_return_the_original_result(k):
    s = k.sessions.create("app", "u", state={"app:x": 1}, command_id="c1")
    k.sessions.append_event(s.session_id, actor="a", content=1, state_delta={"app:x": 2})
    before = snapshot(k)
    assert k.sessions.create("app", "u", state={"app:x": 1}, command_id="c1") == s  # app:x was 1 then
    e = k.sessions.append_event(s.session_id, actor="a", content=2, command_id="c2")
    assert k.sessions.append_event(s.session_id, actor="a", content=2, command_id="c2") == e
    assert snapshot(k) != before and k.head == 3


def test_the_old_names_still_work_and_warn(k):
    s = k.sessions.create("app", "u")
    with pytest.warns(DeprecationWarning, match=r"append_event\(author=…\) is deprecated.*use actor="):
        e = k.sessions.append_event(s.session_id, author="u", content="hi")
    assert e.actor == "u"
    with pytest.warns(DeprecationWarning, match="SessionEvent.author is deprecated"):
        assert e.author == "u"
    with pytest.warns(DeprecationWarning, match="SessionEvent.timestamp is deprecated"):
        assert e.timestamp == e.recorded_at
    with pytest.warns(DeprecationWarning, match="Session.last_update_time is deprecated"):
        assert k.sessions.get(s.session_id).last_update_time == e.recorded_at
    p = k.recovery.record_failure("t", "x", "y")
    with pytest.warns(DeprecationWarning, match="FailurePattern.first_seen is deprecated"):
        assert p.first_seen == p.first_seen_at
    with pytest.warns(DeprecationWarning, match="FailurePattern.last_seen is deprecated"):
        assert p.last_seen == p.last_seen_at


def test_append_at_a_version_is_compare_and_set(k):
    s = k.sessions.create("app", "alice", session_id="s1")
    assert s.version == 1
    k.sessions.append_event("s1", actor="u", content="one", expected_version=1)
    assert k.sessions.get("s1").version == 2
    with refused(k, ConcurrencyConflict, "expected version 1, the stream is at version 2"):
        k.sessions.append_event("s1", actor="u", content="late", expected_version=1)
    k.sessions.set_status("s1", "paused")
    assert k.sessions.get("s1").version == 3


def test_delete_forgets_the_session_but_not_the_shared_keys(k):
    k.sessions.create("app", "alice", session_id="s1", state={"app:theme": "dark", "user:lang": "fr", "own": 1})
    k.sessions.append_event("s1", actor="u", content="hi", state_delta={"own": 2})
    k.sessions.delete("s1")
    with pytest.raises(NotFound):
        k.sessions.get("s1")
    assert k.sessions.list("app") == []
    assert k.sessions.shared_state("app", "alice") == {"app:theme": "dark", "user:lang": "fr"}
    assert k.sessions.shared_state("app") == {"app:theme": "dark"}
    with refused(k, NotFound, "no session 's1'"):
        k.sessions.delete("s1")
    again = k.sessions.create("app", "bob", session_id="s1")  # the id is free again
    assert (again.user_id, again.event_count, again.version, again.state) == ("bob", 0, 4, {"app:theme": "dark"})
    assert k.sessions.events("s1") == []
    assert [e.type for e in k.log(stream="session:s1")] == [
        "session.created", "session.event_appended", "session.deleted", "session.created"]
