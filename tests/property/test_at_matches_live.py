"""k.at(position) answers exactly what the live kernel answered when its head
was that position — checked against answers recorded after every command,
with views replayed from position 1 and views started from snapshots."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eventkernel

from support import live_tables, open_kernel, rebuilt_tables
from workload import commands, run_one

TASKS, SESSIONS = ("t1", "t2", "t3"), ("s1", "s2")
ADDRESSES = [(ns, key) for ns in ("user:a", "user:b", "session:s1", "team:t") for key in ("k1", "k2")]


def _or_missing(call: Any) -> Any:
    try:
        return call()
    except eventkernel.NotFound:
        return "not found"


def answers(k: Any) -> dict[str, Any]:
    """Everything a caller can read, as one comparable value."""
    out: dict[str, Any] = {"head": k.head, "journal": [r.hash for r in k.read()]}
    out["work"] = k.work.list()
    out["pending"] = k.work.list(status="pending")
    for t in TASKS:
        out[f"cp {t}"] = (k.checkpoints.list(t), k.checkpoints.latest(t), k.checkpoints.resume(t))
        out[f"rec {t}"] = (k.recovery.attempts(t), k.recovery.explanation(t), k.recovery.task(t))
        out[f"task {t}"] = (_or_missing(lambda t=t: k.tasks.get(t)), k.tasks.agents(t), k.tasks.tool_executions(t))
    out["recovery"] = (k.recovery.stats(), k.recovery.patterns(10))
    out["tasks"] = k.tasks.list()
    for key in ("i1", "i2"):
        out[f"idem {key}"] = k.idempotency.get(key)
    for s in SESSIONS:
        out[f"ses {s}"] = (_or_missing(lambda s=s: k.sessions.get(s)), _or_missing(lambda s=s: k.sessions.events(s)))
    out["sessions"] = k.sessions.list("app")
    for ns, key in ADDRESSES:
        out[f"mem {ns}/{key}"] = (k.memory.get(ns, key), k.memory.history(ns, key))
    out["memory"] = k.memory.list(include_deleted=True)
    return out


def _after(checkpoints: tuple[Any, Any, Any], base: int) -> tuple[Any, Any, Any]:
    """A task's checkpoint answers with its resume's events cut to those after
    the base (a resume reads the events still in the journal)."""
    listed, latest, resume = checkpoints
    return listed, latest, msgspec.structs.replace(resume, events=[r for r in resume.events if r.position > base])


@pytest.mark.parametrize("where", ["file", "memory", "snapshots", "compacted", "postgres", "postgres compacted"])
@settings(max_examples=max(25, settings().max_examples // 4))
@given(ops=st.lists(commands, min_size=1, max_size=15))
def test_a_view_of_the_past_answers_what_the_live_kernel_answered(where, ops):
    clock = eventkernel.FrozenClock(1_000)
    with tempfile.TemporaryDirectory() as tmp:
        path = ":memory:" if where == "memory" else str(Path(tmp) / "at.db")
        opened = open_kernel("postgres", clock=clock, snapshot_every=0, replica=path) \
            if where.startswith("postgres") else eventkernel.open(path, clock=clock, snapshot_every=0)
        with opened as k:
            recorded = [answers(k)]
            base = before_compaction = 0
            for i, op in enumerate(ops):
                try:
                    run_one(k, clock, op, None)
                except eventkernel.CommandRejected:
                    pass
                recorded.append(answers(k))
                if where == "snapshots" and len(recorded) % 4 == 0:
                    k.snapshot()  # views start from the snapshot nearest before them
                if where.endswith("compacted") and i == len(ops) // 2 and k.head >= 2:
                    base = k.head // 2  # the events up to it move to an archive, the commands go on
                    k.compact(before=base + 1, archive=str(Path(tmp) / "archive.db"))
                    before_compaction = len(recorded)
            if where == "snapshots":
                k.snapshot(every=3)  # and from snapshots made after the fact
            for n, then in enumerate(recorded):
                if then["head"] < base:
                    with pytest.raises(eventkernel.InvalidArgument, match="archive"):
                        k.at(then["head"])
                    continue
                with k.at(then["head"]) as view:
                    now = answers(view)
                    if base and n < before_compaction:  # answered before the events up to the base moved
                        now["journal"] = then["journal"][:base] + now["journal"]
                        then = {name: _after(value, base) if name.startswith("cp ") else value
                                for name, value in then.items()}
                    assert now == then
            if base:
                assert live_tables(k) == rebuilt_tables(k) == rebuilt_tables(k, bulk=False)
                assert k.verify().ok
                if where == "postgres compacted":  # a new replica starts from the base the server stored
                    with eventkernel.open(k._replica.pg.url, schema=k._replica.pg.schema, clock=clock,
                                          snapshot_every=0) as other:
                        assert live_tables(other) == live_tables(k)
