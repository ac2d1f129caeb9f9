"""Metrics: recorded samples, aggregates checked against NumPy, windows,
tags, and the kernel's health figures read from the journal."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eventkernel
from eventkernel.errors import InvalidArgument
from eventkernel.services.metrics import percentile, summarize

from support import refused

BOTH_ENGINES = True  # the tests taking `k` run on a file and on PostgreSQL (conftest)


@given(st.lists(st.floats(-1e9, 1e9, allow_nan=False), min_size=1, max_size=200))
def test_summaries_match_numpy(values):
    s = summarize(values)
    arr = np.array(values, dtype=float)
    assert s.count == len(values) and (s.min, s.max) == (arr.min(), arr.max())
    assert s.sum == pytest.approx(float(np.sum(arr)), rel=1e-9, abs=1e-6)
    for q, got in ((50, s.p50), (95, s.p95), (99, s.p99)):
        assert got == pytest.approx(float(np.percentile(arr, q)), rel=1e-9, abs=1e-6)


def test_percentile_of_one_value():
    assert percentile([3.0], 99) == 3.0
    assert summarize([]).count == 0 and summarize([]).p50 is None


@settings(max_examples=25)
@given(st.lists(st.tuples(st.integers(0, 5_000), st.floats(-100, 100, allow_nan=False),
                          st.sampled_from(["a", "b", None])), min_size=1, max_size=40),
       st.integers(0, 5_000), st.integers(0, 5_000))
def test_aggregates_equal_a_brute_force_oracle(samples, lo, span):
    clock = eventkernel.FrozenClock(1_000_000)
    with eventkernel.open(":memory:", clock=clock) as k:
        recorded = []
        for gap, value, route in samples:
            clock.advance(gap)
            tags = None if route is None else {"route": route}
            k.metrics.record("lat", value, tags=tags)
            recorded.append((clock.now, value, route))
        since, until = 1_000_000 + lo, 1_000_000 + lo + span
        inside = [(at, v, r) for at, v, r in recorded if since <= at <= until]
        assert k.metrics.aggregate("lat", since=since, until=until) == summarize(v for _, v, _ in inside)
        assert k.metrics.aggregate("lat", since=since, until=until, tags={"route": "a"}) == summarize(
            v for _, v, r in inside if r == "a")
        by = k.metrics.aggregate("lat", since=since, until=until, by="route")
        assert by == {r: summarize(v for _, v, rr in inside if rr == r) for r in sorted({r for *_, r in inside} - {None})}
        windows = k.metrics.windows("lat", window_ms=700, since=since, until=until)
        assert sum(w.summary.count for w in windows) == len(inside)
        for w in windows:
            assert w.summary == summarize(v for at, v, _ in inside if w.start <= at < w.start + 700)


def test_record_many_and_names(k):
    positions = k.metrics.record_many([("tokens", 5, {"model": "m"}), ("cost", 0.25, None), ("tokens", 7, None)])
    assert len(positions) == 3 and len(set(positions)) == 3
    assert k.metrics.names() == ["cost", "tokens"]
    assert k.metrics.aggregate("tokens").sum == 12.0


def test_bad_samples_are_refused(k):
    with refused(k, InvalidArgument, "value must be a finite int or float"):
        k.metrics.record("m", float("inf"))
    with refused(k, InvalidArgument, "value must be a finite int or float"):
        k.metrics.record("m", True)
    with refused(k, InvalidArgument, r"tags\['a'\] must be a str"):
        k.metrics.record("m", 1, tags={"a": 1})
    with refused(k, InvalidArgument, "no samples given"):
        k.metrics.record_many([])
    with refused(k, InvalidArgument, "must be a .name, value, tags. tuple"):
        k.metrics.record_many([("m", 1)])
    with pytest.raises(InvalidArgument, match="window_ms must be"):
        k.metrics.windows("m", window_ms=0, since=0)


def test_health_figures_come_from_the_journal(k, clock):
    start = clock.now
    for i in range(4):
        k.work.enqueue("t", {"i": i}, max_retries=1)
    a = k.work.claim("w1", lease_ms=1000)
    b = k.work.claim("w2", lease_ms=1000)
    k.work.fail(a.work_item_id, "w1", a.token, "boom", retryable=True)  # retried
    clock.advance(2000)
    assert k.work.expire_leases() == 1  # b's lease: retried too
    c = k.work.claim("w3", lease_ms=1000)
    k.work.fail(c.work_item_id, "w3", c.token, "fatal", retryable=False)  # not retried
    first = k.recovery.start_attempt("t", "retry")
    k.recovery.finish_attempt(first.attempt_id, success=False)
    attempt = k.recovery.start_attempt("t", "restart")
    k.recovery.finish_attempt(attempt.attempt_id, success=True)
    health = k.metrics.health(window_ms=10 * 60_000)
    assert health.until == clock.now and health.since == clock.now - 10 * 60_000 and health.head == k.head
    assert health.events == k.head
    assert health.commands_per_minute["work.enqueue"] == pytest.approx(4 / 10)
    assert health.commands_per_minute["work.claim"] == pytest.approx(3 / 10)
    assert health.commands_per_minute["work.expire_leases"] == pytest.approx(1 / 10)
    assert (health.lease_expiries, health.work_claims) == (1, 3)
    assert health.retry_rate == pytest.approx(2 / 3)
    assert (health.recovery_attempts, health.recovery_success_rate) == (2, 0.5)
    assert set(health.projection_lag) == set(k._projector.by_name) and not any(health.projection_lag.values())
    # A window that starts after the work: only what happened since
    later = k.metrics.health(window_ms=1, now=clock.now)
    assert later.events == sum(1 for e in k.log() if e.recorded_at >= clock.now - 1)
    assert k.metrics.health(window_ms=1000, now=start - 5000).events == 0


def test_a_command_of_many_events_counts_once(k, clock):
    k.metrics.record_many([("a", 1, None), ("b", 2, None), ("a", 3, None)])
    k.metrics.record_many([("a", 1, None), ("b", 2, None)])  # the same metadata and time: still another command
    k.metrics.record("a", 4)
    health = k.metrics.health(window_ms=60_000)
    assert health.commands_per_minute == {"metrics.record": 3.0} and health.events == 6
    meta = [e.meta for e in k.log()]
    assert meta[0] == {"command": "metrics.record", "events": 3} and meta[5] == {"command": "metrics.record"}
