"""The central property: for any sequence of commands — rejected ones,
transactions, rolled-back transactions and repeated command ids included —
the live projections equal a rebuild from the journal, row for row, by the
rebuild's bulk path (a projection's Fold) and by applying every event."""

from __future__ import annotations

import contextlib
import os
import tempfile
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eventkernel

from strategies import json_values, lease_ms, workers
from support import live_tables, rebuilt_tables


class Remark(eventkernel.Event, tag="test_property.remark"):
    text: str


item_ref = st.integers(0, 7)
token_shift = st.sampled_from([0, 0, 0, -1, 1])

single = st.one_of(
    st.tuples(st.just("enqueue"), st.sampled_from(["t1", "t2"]), st.integers(-2, 2), st.integers(0, 2), json_values),
    st.tuples(st.just("claim"), workers, lease_ms),
    st.tuples(st.just("heartbeat"), item_ref, workers, token_shift, lease_ms),
    st.tuples(st.just("complete"), item_ref, workers, token_shift, json_values),
    st.tuples(st.just("fail"), item_ref, workers, token_shift, st.booleans()),
    st.tuples(st.just("cancel"), item_ref),
    st.tuples(st.just("expire")),
    st.tuples(st.just("advance"), st.integers(0, 3_000)),
    st.tuples(st.just("remark"), st.text(max_size=10)),
    st.tuples(st.just("bad_enqueue"), st.sampled_from([float("nan"), b"x", {1: 1}, 2**70])),
)
operation = st.one_of(
    single,
    st.tuples(st.just("transaction"), st.lists(single, max_size=6), st.booleans()),
)


class Aborted(Exception):
    pass


def run(k: eventkernel.Kernel, clock: eventkernel.FrozenClock, ops, ids: list[str], n: list[int]) -> None:
    for op in ops:
        name = op[0]
        if name == "transaction":
            try:
                with k.transaction():
                    run(k, clock, op[1], ids, n)
                    if op[2]:
                        raise Aborted
            except Aborted:
                pass
            continue
        n[0] += 1
        command_id = f"c{n[0] // 2}"  # every other command repeats the previous id
        try:
            if name == "enqueue":
                ids.append(k.work.enqueue(op[1], op[4], priority=op[2], max_retries=op[3]))
            elif name == "claim":
                k.work.claim(op[1], lease_ms=op[2], command_id=command_id)
            elif name in ("heartbeat", "complete", "fail", "cancel"):
                if not ids:
                    continue
                item = k.work.get(ids[op[1] % len(ids)])
                if name == "cancel":
                    k.work.cancel(item.work_item_id, "stop", command_id=command_id)
                    continue
                token = max(1, item.token + op[3])
                if name == "heartbeat":
                    k.work.heartbeat(item.work_item_id, op[2], token, lease_ms=op[4], command_id=command_id)
                elif name == "complete":
                    k.work.complete(item.work_item_id, op[2], token, output=op[4], command_id=command_id)
                else:
                    k.work.fail(item.work_item_id, op[2], token, "boom", retryable=op[4], command_id=command_id)
            elif name == "expire":
                k.work.expire_leases(command_id=command_id)
            elif name == "advance":
                clock.advance(op[1])
            elif name == "remark":
                k.append("remark:1", [Remark(text=op[1])])
            elif name == "bad_enqueue":
                k.work.enqueue("t", op[1])
        except eventkernel.CommandRejected:
            pass


@given(st.lists(operation, max_size=30))
def test_rebuilt_projections_equal_live_ones_row_for_row(ops):
    clock = eventkernel.FrozenClock(1_000_000)
    with eventkernel.open(":memory:", clock=clock) as k:
        run(k, clock, ops, [], [0])
        live = live_tables(k)
        assert live == rebuilt_tables(k, second_thread=True)  # the bulk path: folds, some written by a second thread
        assert live == rebuilt_tables(k, second_thread=False)  # ... or all by the building thread
        assert live == rebuilt_tables(k, bulk=False)  # every event applied, as live commands do
        report = k.verify()
        assert report.ok, report.problems
        k.rebuild()
        assert live_tables(k) == rebuilt_tables(k)


def _remarked(conn, recorded, event) -> None:
    kind = "remark" if isinstance(event, Remark) else "completed"
    conn.execute("INSERT INTO remarks (kind, n, last) VALUES (?, 1, ?) ON CONFLICT (kind) DO UPDATE SET "
                 "n = n + 1, last = excluded.last", (kind, recorded.position))


REMARKS = SimpleNamespace(
    NAME="remarks", VERSION=1, HANDLES=frozenset({"test_property.remark", "work_item.completed"}),
    DDL="CREATE TABLE remarks (kind TEXT PRIMARY KEY, n INTEGER NOT NULL, last INTEGER NOT NULL) STRICT",
    apply=_remarked,
)


TURNS = st.lists(st.tuples(st.sampled_from(["with", "without", "read", "compact", "erase", "reopen",
                                            "compact without"]), operation), max_size=24)


@given(TURNS)
def test_a_process_without_an_application_projection_never_makes_another_skip_events(steps):
    """Two kernels on one file, one with an application projection and one
    without it, taking turns at random: after every turn in which the first
    appended (so folded what the second had appended), after every read of
    its table (which folds it first) and after every compaction or erasure
    it makes (a compaction folds first what it moves away), its projections
    equal a rebuild from the journal; the second, opened again at any time
    (after a compaction, from the projections at the base), too, and its
    compactions are refused (it would store a base without the application
    projection)."""
    with tempfile.TemporaryDirectory() as where:
        _two_processes(steps, where, lambda **options: eventkernel.open(f"{where}/journal.db", **options))


@settings(max_examples=max(25, settings().max_examples // 4))
@given(TURNS)
def test_the_same_two_processes_on_postgresql(steps):
    """The same turns with the journal on PostgreSQL: each kernel's replica
    folds the other's events (its own projections, the application's or
    not) before its next command, a compaction's base holds the application
    projection for the process that lacks it, and an erasure reaching the
    archive is made by the process that has it."""
    import uuid

    from benchmarks.pgcluster import shared

    url, schema = shared().url(), "p_" + uuid.uuid4().hex[:12]
    with tempfile.TemporaryDirectory() as where:
        _two_processes(steps, where, lambda **options: eventkernel.open(url, schema=schema, **options))


def _two_processes(steps, where: str, opener) -> None:
    clock = eventkernel.FrozenClock(1_000_000)
    with opener(clock=clock, projections=[REMARKS]) as with_it, contextlib.ExitStack() as stack:
        without = stack.enter_context(opener(clock=clock))
        ids: list[str] = []
        archives: list[str] = []
        n = [0]
        for i, (who, op) in enumerate(steps):
            if who == "reopen":  # the process without it starts again (after a compaction: from the base)
                stack.close()
                without = stack.enter_context(opener(clock=clock))
                assert live_tables(without) == rebuilt_tables(without)
                continue
            if who == "read":
                assert with_it.table("remarks")[1] == rebuilt_tables(with_it)["remarks"]
                assert live_tables(with_it) == rebuilt_tables(with_it)
                continue
            if who == "compact without":  # it could not store the application projection at a base: refused
                heads = (with_it.catch_up(), without.catch_up())
                with pytest.raises(eventkernel.CommandRejected, match="this process does not apply .'remarks'"):
                    without.compact(before=without.head, archive=f"{where}/refused-{i}.db")
                assert (with_it.catch_up(), without.catch_up()) == heads
                assert not os.path.exists(f"{where}/refused-{i}.db")
                continue
            if who == "compact":
                try:
                    with_it.compact(before=with_it.head, archive=f"{where}/archive-{i}.db")
                except eventkernel.InvalidArgument:
                    continue  # too few events after the base
                archives.append(f"{where}/archive-{i}.db")
                assert live_tables(with_it) == rebuilt_tables(with_it)
                continue
            if who == "erase":  # every remark so far (one the other process just made), in the latest archive too
                without.append("remark:1", [Remark(text="to forget")])
                try:
                    with_it.erase(stream="remark:1", reason="asked", archive=archives[-1] if archives else None)
                except eventkernel.InvalidArgument:
                    continue  # some in an older archive than the latest
                assert live_tables(with_it) == rebuilt_tables(with_it)
                continue
            head = with_it.head
            run(with_it if who == "with" else without, clock, [op], ids, n)
            if who == "with" and with_it.head > head:
                assert live_tables(with_it) == rebuilt_tables(with_it)
        run(with_it, clock, [("remark", "last")], ids, n)
        live = live_tables(with_it)
        assert live == rebuilt_tables(with_it) == rebuilt_tables(with_it, bulk=False)
        for k in (with_it, without):
            report = k.verify()
            assert report.ok, report.problems
