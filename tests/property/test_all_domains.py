"""The central property over every domain at once: random mixed command
sequences (rejected ones, transactions, command-id repeats included) leave
live projections equal to a rebuild, row for row, and verify() ok."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import eventkernel

from support import live_tables, rebuilt_tables
from workload import Abort, run_one, step


@settings(max_examples=max(100, settings().max_examples))
@given(st.lists(step, max_size=25))
def test_every_domain_rebuilds_to_the_live_tables(steps):
    clock = eventkernel.FrozenClock(1_000)
    n = 0
    with eventkernel.open(":memory:", clock=clock) as k:
        for kind, payload, flag in steps:
            ops = [payload] if kind == "one" else payload
            try:
                if kind == "txn":
                    with k.transaction():
                        for op in ops:
                            n += 1
                            try:
                                run_one(k, clock, op, None)
                            except eventkernel.CommandRejected:
                                pass
                        if flag:
                            raise Abort
                else:
                    n += 1
                    cid = f"c{n}" if flag else None
                    for _ in range(2 if flag else 1):  # with a command id, run it twice
                        try:
                            run_one(k, clock, payload, cid)
                        except eventkernel.CommandRejected:
                            pass
            except Abort:
                pass
        assert live_tables(k) == rebuilt_tables(k)
        report = k.verify()
        assert report.ok, report.problems
