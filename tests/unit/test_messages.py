"""Refusals speak in the caller's terms, and one rule governs every id."""

from __future__ import annotations

import pytest

import eventkernel

from support import refused

BOTH_ENGINES = True  # the tests taking `k` run on a file and on PostgreSQL (conftest)


@pytest.mark.parametrize("last", ["\U0010ffff", "\ud7ff", "\uffff", "z"])
def test_prefixes_ending_at_the_top_of_a_code_point_range_select_exactly_their_namespaces(k, last):
    prefix = "ns:" + last
    inside = sorted({prefix, prefix + "a", prefix + "\U0010ffff", prefix + last})
    outside = ["ns:", "ns:" + chr(ord(last) - 1), "ns:\U0010ffff" if last != "\U0010ffff" else "ns:\ue000",
               "ns;" + last]
    for namespace in inside + outside:
        k.memory.put(namespace, "k", namespace)
    assert sorted(e.namespace for e in k.memory.list(prefix)) == sorted(inside)
    streams = {e.stream for e in k.log(stream_prefix=f"memory:{prefix}")}
    assert streams == {f"memory:{n}/k" for n in inside}


def test_a_prefix_of_only_the_last_code_point_has_no_upper_bound(k):
    k.memory.put("\U0010ffff", "k", 1)
    k.memory.put("\U0010ffff\U0010ffff", "k", 2)
    k.memory.put("\uffff", "k", 3)
    assert [e.value for e in k.memory.list("\U0010ffff")] == [1, 2]


def test_one_id_rule_for_every_id(k):
    longest = "t" * 256
    item = k.work.enqueue(longest, None)
    assert k.work.list(task_id=longest)[0].work_item_id == item
    assert k.tasks.create("title", task_id=longest).task_id == longest
    assert k.tasks.get(longest).task_id == longest
    assert k.checkpoints.record(longest, "manual", None).task_id == longest
    too_long = "t" * 257
    for call in (lambda: k.work.enqueue(too_long, None), lambda: k.tasks.create("x", task_id=too_long),
                 lambda: k.checkpoints.record(too_long, "manual", None), lambda: k.tasks.get(too_long)):
        with refused(k, eventkernel.InvalidArgument, "task_id is 257 characters long; at most 256, as for every id"):
            call()


def test_a_long_key_is_refused_as_a_key_not_as_a_stream(k):
    with refused(k, eventkernel.InvalidArgument, r"^idempotency.begin refused: key is 1024 characters long"):
        k.idempotency.begin("k" * 1024, {"r": 1})
    with refused(k, eventkernel.InvalidArgument, r"^memory.put refused: key is 1024 characters long"):
        k.memory.put("ns", "k" * 1024, 1)


def test_a_number_too_big_is_told_the_range(k):
    with pytest.raises(eventkernel.InvalidArgument,
                       match=r"limit must be between 0 and 9223372036854775807, got 99999999999999999999"):
        list(k.read(limit=99999999999999999999))
    with pytest.raises(eventkernel.InvalidArgument, match=r"after must be >= 0, got -1"):
        list(k.read(after=-1))


def test_a_query_that_finds_nothing_behaves_the_same_in_every_domain(k):
    # An entity looked up by its id: NotFound, naming what was asked.
    for call, what in ((lambda: k.work.get("x"), "no work item 'x'"), (lambda: k.sessions.get("x"), "no session 'x'"),
                       (lambda: k.tasks.get("x"), "no task 'x'"), (lambda: k.tasks.workflow("x"), "no workflow 'x'"),
                       (lambda: k.tasks.agent("x"), "no agent 'x'"),
                       (lambda: k.checkpoints.get("x"), "no checkpoint 'x'")):
        with pytest.raises(eventkernel.NotFound, match=what):
            call()
    # What a thing may or may not have yet (a value, a latest, an explanation): None.
    assert k.memory.get("ns", "k") is None and k.idempotency.get("x") is None
    assert k.checkpoints.latest("t") is None and k.recovery.explanation("t") is None and k.recovery.task("t") is None
    # A list: empty.
    assert k.work.list(task_id="t") == k.checkpoints.list("t") == k.memory.list("ns") == k.tasks.agents("t") == []
