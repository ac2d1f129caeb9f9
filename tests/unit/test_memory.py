from __future__ import annotations

import pytest

from eventkernel.errors import ConcurrencyConflict, InvalidArgument, InvalidTransition, NotFound

from support import refused, snapshot

BOTH_ENGINES = True  # the tests taking `k` run on a file and on PostgreSQL (conftest)


def test_each_put_is_a_new_version_and_the_stream_version(k, clock):
    v1 = k.memory.put("user:alice", "lang", "fr", actor="agent-1", metadata={"src": "chat"})
    clock.advance(10)
    v2 = k.memory.put("user:alice", "lang", "en", actor="agent-2")
    assert (v1.version, v2.version) == (1, 2)
    assert (v2.created_by, v2.updated_by, v2.created_at, v2.updated_at) == ("agent-1", "agent-2", v1.created_at, clock())
    assert k.stream_version("memory:user:alice/lang") == 2
    assert k.memory.get("user:alice", "lang") == v2
    assert k.memory.get("user:alice", "lang", version=1) == v1
    assert k.memory.get("user:alice", "lang", as_of=v1.position) == v1
    assert k.memory.get("user:alice", "lang", as_of=0) is None
    assert k.memory.get("user:alice", "nothing") is None
    assert k.memory.history("user:alice", "lang") == [v1, v2]


def test_soft_delete_and_restore(k):
    k.memory.put("ns", "k", {"a": 1})
    d = k.memory.delete("ns", "k", actor="admin")
    assert (d.version, d.is_deleted, d.operation, d.value) == (2, True, "delete", {"a": 1})
    assert k.memory.get("ns", "k") is None and k.memory.get("ns", "k", version=2) is None
    assert k.memory.get("ns", "k", version=1).value == {"a": 1}
    with refused(k, InvalidTransition, "ns/k is already deleted"):
        k.memory.delete("ns", "k")
    r = k.memory.restore("ns", "k")
    assert (r.version, r.is_deleted, r.value) == (3, False, {"a": 1})
    with refused(k, InvalidTransition, "ns/k is live"):
        k.memory.restore("ns", "k")
    k.memory.delete("ns", "k")
    assert k.memory.put("ns", "k", 2).is_deleted is False  # a put revives it


def test_rollback_writes_a_new_version_equal_to_an_old_one(k):
    k.memory.put("ns", "k", "one", memory_type="procedural", metadata={"m": 1})
    k.memory.put("ns", "k", "two")
    k.memory.delete("ns", "k")
    rb = k.memory.rollback("ns", "k", 1, actor="ops")
    assert (rb.version, rb.value, rb.memory_type, rb.metadata, rb.operation, rb.is_deleted) == (
        4, "one", "procedural", {"m": 1}, "rollback", False)
    with refused(k, NotFound, "has no version 9 before its current version 4"):
        k.memory.rollback("ns", "k", 9)
    with refused(k, NotFound, "no memory ns/none"):
        k.memory.rollback("ns", "none", 1)


def test_ttl_expiry_is_recorded_by_expire(k, clock):
    k.memory.put("session:s1", "scratch", "x", memory_type="episodic", ttl_ms=1_000)
    k.memory.put("session:s1", "keep", "y", memory_type="episodic")
    clock.advance(999)
    assert k.memory.expire() == 0
    clock.advance(1)
    assert k.memory.get("session:s1", "scratch").value == "x"  # until the reaper runs
    assert k.memory.expire() == 1
    assert k.memory.get("session:s1", "scratch") is None
    assert k.memory.history("session:s1", "scratch")[-1].operation == "expire"
    assert k.memory.expire() == 0
    restored = k.memory.restore("session:s1", "scratch")
    assert (restored.is_deleted, restored.expires_at) == (False, None)


def test_a_touch_counts_the_ttl_again_without_a_version(k, clock):
    put = k.memory.put("session:s1", "scratch", "x", ttl_ms=1_000)
    assert (put.expires_at, put.ttl_ms) == (clock() + 1_000, 1_000)
    clock.advance(600)
    touched = k.memory.touch("session:s1", "scratch")
    assert (touched.version, touched.value, touched.expires_at, touched.ttl_ms) == (1, "x", clock() + 1_000, 1_000)
    assert k.stream_version("memory:session:s1/scratch") == 1
    assert k.stream_version("memory_ttl:session:s1/scratch") == 1
    assert [e.version for e in k.memory.history("session:s1", "scratch")] == [1]
    clock.advance(600)
    assert k.memory.expire() == 0  # 1,200 ms after the put, 600 after the touch
    clock.advance(400)
    assert k.memory.expire() == 1
    assert k.memory.history("session:s1", "scratch")[-1].expires_at == touched.expires_at
    assert k.memory.restore("session:s1", "scratch").ttl_ms is None


def test_a_touch_of_nothing_writes_nothing(k):
    k.memory.put("ns", "no-ttl", 1)
    k.memory.put("ns", "gone", 1, ttl_ms=50)
    k.memory.delete("ns", "gone")
    before = snapshot(k)
    for key in ("no-ttl", "gone", "missing"):
        assert k.memory.touch("ns", key) is None
    assert snapshot(k) == before
    with refused(k, InvalidArgument, "must not contain '/'"):
        k.memory.touch("a/b", "k")


def test_expire_and_namespaces_by_prefix(k, clock):
    k.memory.put("session:s1", "a", 1, ttl_ms=10)
    k.memory.put("user:u", "a", 1, ttl_ms=10)
    k.memory.put("user:v", "a", 1)
    k.memory.put("user:w", "a", 1)
    k.memory.delete("user:w", "a")
    assert k.memory.namespaces() == ["session:s1", "user:u", "user:v"]
    assert k.memory.namespaces("user:", limit=1) == ["user:u"]
    clock.advance(10)
    assert k.memory.expire("user:") == 1
    assert k.memory.namespaces("user:") == ["user:v"]
    assert k.memory.get("session:s1", "a") is not None
    assert k.memory.expire() == 1


def test_list_by_namespace_prefix_and_type(k):
    k.memory.put("user:alice:prefs", "lang", "fr")
    k.memory.put("user:alice:facts", "city", "Lyon", memory_type="episodic")
    k.memory.put("user:alicia", "x", 1)
    k.memory.put("user:bob", "lang", "de")
    k.memory.put("user:alice:prefs", "gone", 0)
    k.memory.delete("user:alice:prefs", "gone")
    keys = lambda entries: [(e.namespace, e.key) for e in entries]
    assert keys(k.memory.list("user:alice:")) == [("user:alice:facts", "city"), ("user:alice:prefs", "lang")]
    assert keys(k.memory.list("user:ali")) == [("user:alice:facts", "city"), ("user:alice:prefs", "lang"), ("user:alicia", "x")]
    assert keys(k.memory.list("user:alice:", memory_type="episodic")) == [("user:alice:facts", "city")]
    assert ("user:alice:prefs", "gone") in keys(k.memory.list("user:alice:", include_deleted=True))
    assert len(k.memory.list()) == 4


def test_recent_lists_the_newest_first_and_pages_by_position(k):
    k.memory.put("user:alice:prefs", "lang", "fr")
    k.memory.put("user:alice:facts", "city", "Lyon", memory_type="episodic")
    k.memory.put("user:alicia", "x", 1)
    k.memory.put("user:alice:prefs", "gone", 0)
    k.memory.put("user:alice:prefs", "lang", "en")  # a new version: the most recent now
    k.memory.delete("user:alice:prefs", "gone")
    keys = lambda entries: [(e.namespace, e.key) for e in entries]
    newest = [("user:alice:prefs", "lang"), ("user:alicia", "x"), ("user:alice:facts", "city")]
    assert keys(k.memory.recent("user:ali")) == newest
    assert [e.value for e in k.memory.recent("user:alice:prefs")] == ["en"]
    assert keys(k.memory.recent("user:ali", include_deleted=True)) == [("user:alice:prefs", "gone"), *newest]
    assert keys(k.memory.recent("user:ali", memory_type="episodic")) == [("user:alice:facts", "city")]
    assert keys(k.memory.recent(namespace="user:alice:prefs")) == [("user:alice:prefs", "lang")]
    assert k.memory.recent(namespace="user:alice") == []  # exactly that namespace, not a prefix
    page, seen = k.memory.recent("user:", limit=2), []
    while page:
        seen += keys(page)
        page = k.memory.recent("user:", limit=2, before=page[-1].position)
    assert seen == newest
    assert k.memory.recent("user:", before=1) == []
    for call, match in ((lambda: k.memory.recent("user:", namespace="user:alicia"), "not both"),
                        (lambda: k.memory.recent(before=0), "before must be >= 1"),
                        (lambda: k.memory.recent(namespace=""), "namespace must not be empty"),
                        (lambda: k.memory.recent(limit=-1), "limit must be >= 0")):
        with refused(k, InvalidArgument, match):
            call()


def test_publish_copies_into_another_namespace(k):
    src = k.memory.put("session:s1", "fact", {"likes": "tea"}, memory_type="semantic", metadata={"c": 0.9})
    k.memory.put("user:alice", "fact", "old")
    pub = k.memory.publish("session:s1", "fact", "user:alice", actor="consolidator")
    assert (pub.namespace, pub.version, pub.value, pub.metadata, pub.operation) == (
        "user:alice", 2, {"likes": "tea"}, {"c": 0.9}, "publish")
    (r,) = k.read(after=k.head - 1)
    assert (r.event.from_namespace, r.event.from_version) == ("session:s1", src.version)
    k.memory.delete("session:s1", "fact")
    with refused(k, NotFound, "session:s1/fact is deleted; nothing to publish"):
        k.memory.publish("session:s1", "fact", "user:alice")


def test_compare_and_set(k):
    k.memory.put("ns", "k", 1, expected_version=0)
    with refused(k, ConcurrencyConflict, "expected version 0, the stream is at version 1"):
        k.memory.put("ns", "k", 2, expected_version=0)
    assert k.memory.put("ns", "k", 2, expected_version=1).version == 2


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda k: k.memory.put("a/b", "k", 1), "must not contain '/'"),
        (lambda k: k.memory.put("", "k", 1), "namespace must not be empty"),
        (lambda k: k.memory.put("ns", "k", 1, memory_type="dream"), "memory_type must be one of semantic, episodic, procedural"),
        (lambda k: k.memory.put("ns", "k", float("nan")), "NaN"),
        (lambda k: k.memory.put("ns", "k", 1, ttl_ms=-5), "ttl_ms must be between 1"),
        (lambda k: k.memory.get("ns", "k", version=1, as_of=1), "not both"),
        (lambda k: k.memory.get("ns", "k", version=0), "version must be >= 1"),
        (lambda k: k.memory.list(memory_type="x"), "memory_type must be one of"),
        (lambda k: k.memory.publish("ns", "k", "ns"), "same as namespace"),
    ],
)
def test_bad_arguments(k, call, match):
    with refused(k, InvalidArgument, match):
        call(k)


def test_unknown_memories_are_not_found(k):
    for call in (lambda: k.memory.delete("ns", "k"), lambda: k.memory.restore("ns", "k"),
                 lambda: k.memory.publish("ns", "k", "other")):
        with refused(k, NotFound, "no memory ns/k"):
            call()


def test_repeated_command_ids_return_the_original_version(k):
    v1 = k.memory.put("ns", "k", 1, command_id="p1")
    k.memory.put("ns", "k", 2)
    before = snapshot(k)
    assert k.memory.put("ns", "k", 1, command_id="p1") == v1
    assert snapshot(k) == before


def test_a_touch_retried_returns_what_the_first_call_returned(k, clock):
    k.memory.put("ns", "k", 1, ttl_ms=1_000)
    clock.advance(10)
    first = k.memory.touch("ns", "k", command_id="t-1")
    clock.advance(10)
    k.memory.touch("ns", "k")
    k.memory.put("ns", "k", 2, ttl_ms=1_000)
    head = k.head
    assert k.memory.touch("ns", "k", command_id="t-1") == first
    assert k.head == head
