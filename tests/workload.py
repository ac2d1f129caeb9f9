"""A workload over every domain of the registry, shared by the property
tests: a hypothesis strategy of ops and the driver that runs one. Each
domain's ops live in tests/domains/<name>.py, found by the registry's name."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from hypothesis import strategies as st

import eventkernel
from eventkernel import registry

DOMAINS: dict[str, ModuleType] = {name: importlib.import_module(f"domains.{name}") for name in registry.DOMAINS}

commands = st.one_of(
    *(op for module in DOMAINS.values() for op in module.OPS),
    st.builds(lambda ms: ("advance", ms), st.sampled_from([0, 50, 100, 40_000])),
)
step = st.one_of(
    st.tuples(st.just("one"), commands, st.booleans()),
    st.tuples(st.just("txn"), st.lists(commands, max_size=5), st.booleans()),
)


class Abort(Exception):
    pass


Call = tuple[Callable[..., Any], dict[str, Any]]


def resolve(k: eventkernel.Kernel, op: tuple) -> Call | None:
    """The kernel method an op calls and its arguments, decided against the
    current state (an op like 'complete any in-progress item' picks one), or
    None when the op is not a command (advancing the clock) or has no target."""
    if op[0] == "advance":
        return None
    return DOMAINS[op[0].split(".")[0]].resolve(k, op)  # type: ignore[no-any-return]


def run_one(k: eventkernel.Kernel, clock: eventkernel.FrozenClock, op: tuple, command_id: str | None) -> Any:
    """Run one op (a command with ``command_id``, or a clock step); returns its result."""
    if op[0] == "advance":
        clock.advance(op[1])
        return None
    call = resolve(k, op)
    if call is None:
        return None
    fn, kwargs = call
    return fn(**kwargs, command_id=command_id)


def run_steps(k: eventkernel.Kernel, clock: eventkernel.FrozenClock, steps: list[tuple[str, Any, bool]],
              before: Callable[[int], None] | None = None) -> None:
    """Run ``step`` draws: single commands (with a flag, under a command id,
    twice) and transactions (with a flag, aborted), refusals ignored.
    ``before(i)`` runs before step ``i``."""
    n = 0
    for i, (kind, payload, flag) in enumerate(steps):
        if before is not None:
            before(i)
        try:
            if kind == "txn":
                with k.transaction():
                    for op in payload:
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
