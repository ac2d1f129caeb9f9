"""Versioned memory against a model: a dict of version lists. After every
command, get(version=) and get(as_of=) must answer what get() answered then."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import eventkernel

ADDRESSES = [("user:a", "x"), ("user:a", "y"), ("user:b", "x")]
address = st.sampled_from(ADDRESSES)
operation = st.one_of(
    st.tuples(st.just("put"), address, st.integers(0, 9), st.sampled_from([None, 100, 1_000])),
    st.tuples(st.just("delete"), address),
    st.tuples(st.just("restore"), address),
    st.tuples(st.just("rollback"), address, st.integers(1, 6)),
    st.tuples(st.just("publish"), address, st.sampled_from(["user:a", "user:b", "team:t"])),
    st.tuples(st.just("expire")),
    st.tuples(st.just("advance"), st.sampled_from([50, 100, 1_000])),
)


@settings(max_examples=max(300, settings().max_examples))
@given(st.lists(operation, max_size=40))
def test_memory_matches_a_dict_of_version_lists(ops):
    clock = eventkernel.FrozenClock(0)
    # model: address -> list of (value, live) per version
    model: dict[tuple[str, str], list[tuple[int, bool]]] = {}
    ttl: dict[tuple[str, str], int | None] = {}
    seen: list[tuple[int, dict[tuple[str, str], object]]] = []  # (head, what get() returned)
    with eventkernel.open(":memory:", clock=clock) as k:
        for op in ops:
            name = op[0]
            try:
                if name == "put":
                    _, addr, value, ttl_ms = op
                    k.memory.put(*addr, value, ttl_ms=ttl_ms)
                    model.setdefault(addr, []).append((value, True))
                    ttl[addr] = None if ttl_ms is None else clock() + ttl_ms
                elif name == "delete":
                    k.memory.delete(*op[1])
                    value, _ = model[op[1]][-1]
                    model[op[1]].append((value, False))
                elif name == "restore":
                    k.memory.restore(*op[1])
                    value, _ = model[op[1]][-1]
                    model[op[1]].append((value, True))
                elif name == "rollback":
                    _, addr, to = op
                    k.memory.rollback(*addr, to)
                    model[addr].append((model[addr][to - 1][0], True))
                    ttl[addr] = None
                elif name == "publish":
                    _, (ns, key), to_ns = op
                    k.memory.publish(ns, key, to_ns)
                    model.setdefault((to_ns, key), []).append((model[(ns, key)][-1][0], True))
                    ttl[(to_ns, key)] = None
                elif name == "expire":
                    due = [a for a, versions in model.items()
                           if versions[-1][1] and ttl.get(a) is not None and ttl[a] <= clock()]
                    assert k.memory.expire() == len(due)
                    for a in due:
                        model[a].append((model[a][-1][0], False))
                        ttl[a] = None  # a memory restored after expiring lives on without a TTL
                else:
                    clock.advance(op[1])
            except (eventkernel.NotFound, eventkernel.InvalidTransition, eventkernel.InvalidArgument):
                pass
            answers = {}
            for ns, key in {*ADDRESSES, *model}:
                got = k.memory.get(ns, key)
                versions = model.get((ns, key), [])
                expected = versions[-1][0] if versions and versions[-1][1] else None
                assert (None if got is None else got.value) == expected, (ns, key)
                assert len(k.memory.history(ns, key)) == len(versions)
                answers[(ns, key)] = got
                for n, (value, live) in enumerate(versions, 1):
                    at_n = k.memory.get(ns, key, version=n)
                    assert (None if at_n is None else at_n.value) == (value if live else None)
            seen.append((k.head, answers))
        for head, answers in seen:
            for (ns, key), got in answers.items():
                assert k.memory.get(ns, key, as_of=head) == got
        assert k.verify().ok
