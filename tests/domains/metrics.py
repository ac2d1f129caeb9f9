"""Metrics' part of the workload: samples with and without tags, and retention of old ones."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

OPS = [
    st.builds(lambda n, v, t: ("metrics.record", n, v, t), st.sampled_from(["m.a", "m.b"]),
              st.one_of(st.integers(-5, 5), st.floats(-1e6, 1e6, allow_nan=False)),
              st.sampled_from([None, {"route": "x"}, {"route": "y", "region": "eu"}])),
    st.builds(lambda n: ("metrics.record_many", n), st.integers(1, 3)),
]


def resolve(k: Any, op: tuple) -> Any:
    if op[0] == "metrics.record":
        return k.metrics.record, {"name": op[1], "value": op[2], "tags": op[3]}
    return k.metrics.record_many, {"samples": [(f"m.{i % 2}", float(i), None) for i in range(op[1])]}


def exercise(k: Any, clock: Any) -> None:
    start = k.metrics.health().until
    for i in range(10):
        k.metrics.record("latency_ms", float(i), tags={"route": "a" if i % 2 else "b"})
        clock.advance(100)
    k.metrics.record_many([("tokens", 10, None), ("tokens", 20, {"model": "m"})])
    k.metrics.aggregate("latency_ms")
    k.metrics.aggregate("latency_ms", since=start, until=start + 500, tags={"route": "a"})
    k.metrics.aggregate("latency_ms", by="route")
    k.metrics.windows("latency_ms", window_ms=300, since=start)
    k.metrics.names()
    k.metrics.health(window_ms=60_000)
    k.retention.apply(policies={"metrics_samples": 1}, dry_run=True)
