"""Several processes claim and complete over one file."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import spawn

import eventkernel

WORKERS = 4
ITEMS = 300


def test_each_item_is_completed_exactly_once_across_processes(db_path, child_env):
    with eventkernel.open(db_path) as k, k.transaction():
        ids = {k.work.enqueue("multi", {"n": i}, priority=i % 4) for i in range(ITEMS)}
    children = [spawn(child_env, "worker", db_path, f"p{i}") for i in range(WORKERS)]
    reported: list[str] = []
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
        reported.extend(line for line in out.splitlines() if line)
    # Every child's acknowledged completions are disjoint and cover the queue.
    assert Counter(reported).most_common(1)[0][1] == 1
    assert set(reported) == ids
    with eventkernel.open(db_path) as k:
        completions = Counter(r.event.work_item_id for r in k.read(types=["work_item.completed"]))
        assert set(completions) == ids and set(completions.values()) == {1}
        assert {i.status for i in k.work.list()} == {"completed"}
        assert [r.position for r in k.read()] == list(range(1, k.head + 1))
        report = k.verify()
        assert report.ok, report.problems


@pytest.mark.parametrize("round_", range(3))
def test_many_processes_opening_a_brand_new_file_at_once_all_succeed(db_path, child_env, round_):
    # Switching a new file to WAL from several processes can return BUSY even
    # with a busy timeout; the open retries it.
    import time

    start_at = str(time.time() + 1.5)  # after every interpreter has started
    children = [spawn(child_env, "opener", db_path, start_at) for _ in range(8)]
    outputs = [child.communicate(timeout=120) for child in children]  # all of them, before any assertion
    for child, (out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
        assert out.strip() == "opened"
    with eventkernel.open(db_path) as k:
        assert len(k.work.list()) == 8
        assert k.verify().ok
