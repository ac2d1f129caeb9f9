"""The central property over every domain at once: random mixed command
sequences (rejected ones, transactions, command-id repeats included) leave
live projections equal to a rebuild, row for row, and verify() ok — on a
file and on PostgreSQL."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import eventkernel

from support import kept_tables, live_tables, open_kernel, rebuilt_tables, server_tables
from workload import run_steps, step


@settings(max_examples=max(100, settings().max_examples))
@given(steps=st.lists(step, max_size=25))
def test_every_domain_rebuilds_to_the_live_tables(steps):
    _rebuilds_to_the_live_tables("sqlite", steps)


@settings(max_examples=40)  # each example opens a kernel on the server: a schema and a replica of its own
@given(steps=st.lists(step, max_size=25))
def test_on_postgres_every_domain_rebuilds_to_the_live_tables(steps):
    _rebuilds_to_the_live_tables("postgres", steps)


@settings(max_examples=20)
@given(steps=st.lists(step, max_size=25))
def test_on_postgres_taking_the_lock_first_every_domain_rebuilds_to_the_live_tables(steps):
    """The same with every write taking the server's lock first (as with the
    server's clock by default; a caller's clock commits in one round trip)."""
    _rebuilds_to_the_live_tables("postgres", steps, one_round_trip=False)


def _rebuilds_to_the_live_tables(engine, steps, **options):
    clock = eventkernel.FrozenClock(1_000)
    with open_kernel(engine, clock=clock, **options) as k:
        run_steps(k, clock, steps)
        assert live_tables(k) == rebuilt_tables(k)
        report = k.verify()
        assert report.ok, report.problems
        if k._replica is not None:  # the server holds the same journal, row for row
            assert k._replica.pg.head_hash() == (report.head, report.head_hash)
            assert k._replica.pg.verify().ok
            # and the server's copy of every projection table is the replica's, row for row
            assert server_tables(k) == kept_tables(k)
