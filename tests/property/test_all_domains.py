"""The central property over every domain at once: random mixed command
sequences (rejected ones, transactions, command-id repeats included) leave
live projections equal to a rebuild, row for row, and verify() ok."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import eventkernel

from support import live_tables, rebuilt_tables
from workload import run_steps, step


@settings(max_examples=max(100, settings().max_examples))
@given(st.lists(step, max_size=25))
def test_every_domain_rebuilds_to_the_live_tables(steps):
    clock = eventkernel.FrozenClock(1_000)
    with eventkernel.open(":memory:", clock=clock) as k:
        run_steps(k, clock, steps)
        assert live_tables(k) == rebuilt_tables(k)
        report = k.verify()
        assert report.ok, report.problems
