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
