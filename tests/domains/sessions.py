"""The sessions' part of the workload."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

SESSIONS = st.sampled_from(["s1", "s2"])
STATE = st.dictionaries(st.sampled_from(["x", "app:theme", "user:lang", "temp:t"]), st.integers(0, 3), max_size=3)

OPS = [
    st.builds(lambda s, u, st_: ("sessions.create", s, u, st_), SESSIONS, st.sampled_from(["alice", "bob"]), STATE),
    st.builds(lambda s, d: ("sessions.event", s, d), SESSIONS, STATE),
    st.builds(lambda s, status: ("sessions.status", s, status), SESSIONS,
              st.sampled_from(["active", "paused", "terminated", "archived"])),
    st.builds(lambda s: ("sessions.delete", s), SESSIONS),
    st.builds(lambda s, d, v: ("sessions.event_at", s, d, v), SESSIONS, STATE, st.integers(1, 4)),
]


def resolve(k: Any, op: tuple) -> Any:
    name, sid, *a = op
    if name == "sessions.create":
        return k.sessions.create, {"app_name": "app", "user_id": a[0], "session_id": sid, "state": a[1]}
    if name == "sessions.event":
        return k.sessions.append_event, {"session_id": sid, "actor": "user", "content": "hi", "state_delta": a[0]}
    if name == "sessions.event_at":
        return k.sessions.append_event, {"session_id": sid, "actor": "user", "content": "hi", "state_delta": a[0],
                                         "expected_version": a[1]}
    if name == "sessions.delete":
        return k.sessions.delete, {"session_id": sid}
    return k.sessions.set_status, {"session_id": sid, "status": a[0]}


def exercise(k: Any, clock: Any) -> None:
    s = k.sessions.create("app", "alice", state={"app:a": 1, "user:b": 2, "c": 3})
    k.sessions.append_event(s.session_id, actor="u", content="hi", state_delta={"app:a": 2})
    k.sessions.set_status(s.session_id, "paused")
    k.sessions.get(s.session_id)
    k.sessions.list("app")
    k.sessions.list("app", "alice")
    k.sessions.list("app", "alice", limit=1, after_key=s.session_id)
    k.sessions.list("app", limit=1, after_key=s.session_id)
    k.sessions.events(s.session_id, after_seq=0)
    k.sessions.shared_state("app", "alice")
    k.sessions.set_status(s.session_id, "active")
    k.sessions.append_event(s.session_id, actor="u", content="again", expected_version=k.sessions.get(s.session_id).version)
    k.sessions.delete(s.session_id)
    k.sessions.create("app", "bob", session_id=s.session_id)
