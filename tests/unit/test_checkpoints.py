from __future__ import annotations

import pytest

from eventkernel.errors import InvalidArgument, NotFound
from eventkernel.projections.checkpoints import TYPES

from support import refused, snapshot

BOTH_ENGINES = True  # the tests taking `k` run on a file and on PostgreSQL (conftest)


def test_sequence_numbers_count_per_task_without_gaps(k):
    a1 = k.checkpoints.record("task-a", "iteration_start", {"i": 0})
    b1 = k.checkpoints.record("task-b", "manual", None)
    a2 = k.checkpoints.record("task-a", "iteration_end", {"i": 0, "done": True}, work_item_id="wi-1", session_id="s-1")
    assert (a1.sequence_number, b1.sequence_number, a2.sequence_number) == (1, 1, 2)
    assert (a2.work_item_id, a2.session_id, a2.snapshot) == ("wi-1", "s-1", {"i": 0, "done": True})
    assert k.stream_version("checkpoint:task-a") == 2  # the sequence number is the stream version


def test_latest_list_and_get(k):
    assert k.checkpoints.latest("t") is None and k.checkpoints.list("t") == []
    cps = [k.checkpoints.record("t", kind, {"n": n}) for n, kind in enumerate(TYPES)]
    assert k.checkpoints.latest("t") == cps[-1]
    assert k.checkpoints.list("t") == cps
    assert k.checkpoints.get(cps[3].checkpoint_id) == cps[3]
    with pytest.raises(NotFound, match="no checkpoint 'nope'"):
        k.checkpoints.get("nope")


def test_resume_is_the_latest_checkpoint_and_what_happened_after(k):
    item = k.work.enqueue("t", None)
    k.checkpoints.record("t", "iteration_start", {"step": 1})
    claimed = k.work.claim("w")
    cp = k.checkpoints.record("t", "tool_executed", {"step": 2})
    k.work.heartbeat(item, "w", claimed.token)
    k.work.enqueue("other-task", None)  # not correlated with t
    k.work.complete(item, "w", claimed.token)
    resume = k.checkpoints.resume("t")
    assert resume.checkpoint == cp
    assert [r.type for r in resume.events] == ["work_item.lease_extended", "work_item.completed"]
    assert all(r.position > cp.position and r.correlation_id == "t" for r in resume.events)


def test_resume_without_a_checkpoint_is_every_event_of_the_task(k):
    k.work.enqueue("t", None)
    k.work.enqueue("t", None)
    resume = k.checkpoints.resume("t")
    assert resume.checkpoint is None and [r.position for r in resume.events] == [1, 2]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"checkpoint_type": "nap"}, "checkpoint_type must be one of iteration_start, .*; got 'nap'"),
        ({"task_id": ""}, "task_id must not be empty"),
        ({"snapshot": {"x": float("inf")}}, "no NaN or infinity"),
        ({"work_item_id": 3}, "work_item_id must be a str"),
        ({"checkpoint_id": "cp-1"}, "checkpoint_id 'cp-1' already exists"),
    ],
)
def test_bad_checkpoints_are_refused(k, kwargs, match):
    k.checkpoints.record("t", "manual", None, checkpoint_id="cp-1")
    args = {"task_id": "t", "checkpoint_type": "manual", "snapshot": {}} | kwargs
    with refused(k, InvalidArgument, match):
        k.checkpoints.record(args.pop("task_id"), args.pop("checkpoint_type"), args.pop("snapshot"), **args)


def test_a_repeated_command_id_records_once(k):
    cp = k.checkpoints.record("t", "manual", {"a": 1}, command_id="c")
    before = snapshot(k)
    assert k.checkpoints.record("t", "manual", {"a": 1}, command_id="c") == cp
    assert snapshot(k) == before
