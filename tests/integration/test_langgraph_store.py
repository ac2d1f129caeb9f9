"""EventKernelStore against LangGraph's InMemoryStore, operation by operation
(hypothesis), then its TTL rules, its past, and its odd addresses on their own."""

from __future__ import annotations

import asyncio
import itertools
import operator
import time
from typing import Annotated, Any, TypedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langgraph.graph import END, START, StateGraph
from langgraph.store.base import BaseStore, GetOp, ListNamespacesOp, MatchCondition, PutOp, SearchOp
from langgraph.store.memory import InMemoryStore

import eventkernel
import eventkernel.aio
from eventkernel.integrations.langgraph import EventKernelSaver, EventKernelStore

from support import live_tables, open_kernel, rebuilt_tables, refused

BOTH_ENGINES = True  # the tests taking ``k`` run on a file and on PostgreSQL

# Labels and keys LangGraph accepts, the odd ones included: what the kernel's
# ids refuse ('/', NUL, the empty key, surrogates, 300 characters) and what
# the store's own encoding escapes ('%', '#').
LABELS = ["users", "u1", "u2", "docs", "a/b", "50%", "#x", "é", "\ud800", "L" * 300]
KEYS = ["k1", "k2", "", "%", "#k", "a\x00b", "/s", "K" * 300]
namespaces = st.lists(st.sampled_from(LABELS), min_size=1, max_size=3).map(tuple)
prefixes = st.lists(st.sampled_from(LABELS), max_size=2).map(tuple)
keys = st.sampled_from(KEYS)
values = st.fixed_dictionaries(
    {"n": st.integers(-3, 3)},
    optional={"tag": st.sampled_from(["red", "blue"]), "nested": st.fixed_dictionaries({"a": st.integers(0, 2)}),
              "list": st.lists(st.integers(0, 1), max_size=2)},
)
filters = st.one_of(
    st.none(),
    st.fixed_dictionaries({"tag": st.sampled_from(["red", "blue"])}),
    st.fixed_dictionaries({"n": st.fixed_dictionaries({}, optional={
        op: st.integers(-3, 3) for op in ("$gt", "$gte", "$lt", "$lte", "$eq", "$ne")})}),
    st.fixed_dictionaries({"nested": st.fixed_dictionaries({"a": st.integers(0, 2)})}),
    st.fixed_dictionaries({"list": st.lists(st.integers(0, 1), max_size=2)}),
    st.fixed_dictionaries({"tag": st.fixed_dictionaries({"$ne": st.just("red")})}),
)
paths = st.lists(st.sampled_from([*LABELS[:5], "*"]), min_size=1, max_size=2).map(tuple)
OPS = st.one_of(
    st.tuples(st.just("put"), namespaces, keys, values),
    st.tuples(st.just("delete"), namespaces, keys),
    st.tuples(st.just("get"), namespaces, keys),
    st.tuples(st.just("search"), prefixes, filters, st.integers(0, 5), st.integers(0, 3)),
    st.tuples(st.just("list"), st.one_of(st.none(), paths), st.one_of(st.none(), paths),
              st.one_of(st.none(), st.integers(1, 3)), st.integers(1, 8), st.integers(0, 2)),
    st.tuples(st.just("batch"), st.lists(st.one_of(
        st.tuples(st.just("put"), namespaces, keys, st.one_of(st.none(), values)),
        st.tuples(st.just("get"), namespaces, keys),
        st.tuples(st.just("search"), prefixes, filters, st.integers(0, 5), st.integers(0, 3)),
    ), min_size=1, max_size=4)),
)


def shape(result: Any) -> Any:
    """What both stores must agree on: addresses and values, not wall-clock stamps."""
    if result is None:
        return None
    if isinstance(result, list):
        return [shape(r) for r in result]
    if isinstance(result, tuple):
        return result
    return (result.namespace, result.key, result.value)


class Reference:
    """InMemoryStore, with the order our searches promise made explicit: the
    most recently written first. (InMemoryStore answers in dict order.) It also
    keeps a namespace once anything, even a get, has touched it; a store on
    disk lists the namespaces that hold items, so empty ones are dropped
    before listing."""

    def __init__(self) -> None:
        self.store = InMemoryStore()
        self.written: dict[tuple[tuple[str, ...], str], int] = {}
        self.clock = itertools.count()

    def op(self, op: Any) -> Any:
        if isinstance(op, GetOp):
            return self.store.batch([op])[0]
        if isinstance(op, SearchOp):
            everything = self.store.batch([op._replace(limit=10**9, offset=0)])[0]
            everything.sort(key=lambda item: -self.written[(item.namespace, item.key)])
            return everything[op.offset:op.offset + op.limit]
        if isinstance(op, ListNamespacesOp):
            for ns in [ns for ns, items in self.store._data.items() if not items]:
                del self.store._data[ns]
            return self.store.batch([op])[0]
        raise AssertionError(op)

    def batch(self, ops: list[Any]) -> list[Any]:
        results = [None if isinstance(op, PutOp) else self.op(op) for op in ops]
        last = {(op.namespace, op.key): op for op in ops if isinstance(op, PutOp)}
        for address, op in last.items():
            if op.value is not None:
                self.written[address] = next(self.clock)
        self.store.batch(list(last.values()))
        return results


def to_op(spec: tuple) -> Any:
    name, *a = spec
    if name == "put":
        return PutOp(a[0], a[1], a[2])
    if name == "delete":
        return PutOp(a[0], a[1], None)
    if name == "get":
        return GetOp(a[0], a[1])
    if name == "search":
        return SearchOp(a[0], a[1], a[2], a[3])
    prefix, suffix, max_depth, limit, offset = a
    conditions = tuple(MatchCondition(match_type=t, path=p) for t, p in (("prefix", prefix), ("suffix", suffix)) if p)
    return ListNamespacesOp(conditions, max_depth, limit, offset)


@pytest.mark.parametrize("where", ["sqlite", "postgres"])
@settings(max_examples=80, deadline=None)
@given(ops=st.lists(OPS, max_size=16))
def test_every_operation_answers_as_in_memory_store_does(where, ops):
    reference = Reference()
    with open_kernel(where) as k:
        store = EventKernelStore(k)
        for spec in ops:
            batch = [to_op(s) for s in spec[1]] if spec[0] == "batch" else [to_op(spec)]
            assert shape(store.batch(batch)) == shape(reference.batch(batch)), spec
        every = [GetOp(ns, key) for (ns, key) in reference.written]
        assert shape(store.batch(every)) == shape(reference.batch(every))
        assert k.verify().ok
        assert rebuilt_tables(k) == live_tables(k)


@pytest.mark.parametrize("page", [4096, 16])
def test_a_search_reads_newest_first_in_pages_and_answers_as_in_memory_store_does(page, monkeypatch):
    """Searches of a large store (a namespace, its sub-namespaces, a sibling
    whose name starts with the same letters, a namespace too long to be named
    plainly, deleted items) read the newest items first, page after page,
    and stop once they have their answer: the same answers as InMemoryStore,
    with pages of 16 items too (a search then reads many)."""
    monkeypatch.setattr("eventkernel.integrations.langgraph_store._PAGE", page)
    reference = Reference()
    places = [("u1",), ("u1", "m"), ("u10",), ("u1", "L" * 300), ("u1", "m", "deep")]
    with eventkernel.open(":memory:") as k:
        store = EventKernelStore(k)
        for start in range(0, 600, 100):
            puts = [PutOp(places[i % len(places)], f"k{i}", {"n": i % 7, "tag": "red" if i % 3 else "blue"})
                    for i in range(start, start + 100)]
            store.batch(puts)
            reference.batch(puts)
        deletes = [PutOp(places[i % len(places)], f"k{i}", None) for i in range(0, 600, 11)]
        store.batch(deletes)
        reference.batch(deletes)
        for prefix in [(), ("u1",), ("u1", "m"), ("u10",), ("u1", "L" * 300), ("u2",)]:
            for wanted in (None, {"n": 3}, {"n": {"$gt": 5}}, {"tag": "blue", "n": {"$lte": 1}}):
                for limit, offset in ((1, 0), (10, 0), (1, 7), (10, 45), (200, 150), (1000, 0)):
                    search = SearchOp(prefix, wanted, limit, offset)
                    assert shape(store.batch([search])) == shape(reference.batch([search])), search
        assert k.verify().ok


def test_every_filter_operator_at_every_bound():
    """Each operator against each bound, on items on both sides of it, equal included."""
    reference = Reference()
    with eventkernel.open(":memory:") as k:
        store = EventKernelStore(k)
        items = [PutOp(("f",), f"k{n}", {"n": n, "s": str(n), "tag": "red" if n % 2 else "blue"}) for n in range(-2, 3)]
        store.batch(items)
        reference.batch(items)
        for op, bound in itertools.product(("$eq", "$ne", "$gt", "$gte", "$lt", "$lte"), range(-3, 4)):
            for wanted in ({"n": {op: bound}}, {"n": {op: bound, "$ne": 0}}, {"n": {op: bound}, "tag": "red"}):
                search = SearchOp(("f",), wanted, limit=10)
                assert shape(store.batch([search])) == shape(reference.batch([search])), wanted


def test_the_public_methods_sync_and_async(tmp_path):
    path = str(tmp_path / "store.db")
    with EventKernelStore.from_conn_string(path) as store:
        store.put(("users", "42"), "prefs", {"theme": "dark"})
        item = store.get(("users", "42"), "prefs")
        assert (item.namespace, item.key, item.value) == (("users", "42"), "prefs", {"theme": "dark"})
        assert item.created_at == item.updated_at and item.created_at.tzinfo is not None
        assert [i.key for i in store.search(("users",), filter={"theme": "dark"})] == ["prefs"]
        assert store.list_namespaces(prefix=("users",)) == [("users", "42")]
        store.delete(("users", "42"), "prefs")
        assert store.get(("users", "42"), "prefs") is None

    async def main() -> None:
        async with EventKernelStore.from_conn_string(path) as store:
            await store.aput(("users", "7"), "a", {"v": 1})
            assert (await store.aget(("users", "7"), "a")).value == {"v": 1}
            assert [i.key for i in await store.asearch(("users",))] == ["a"]
            assert await store.alist_namespaces(max_depth=1) == [("users",)]
            await store.adelete(("users", "7"), "a")
            assert await store.aget(("users", "7"), "a") is None
        async with eventkernel.aio.open(path) as k:
            store = EventKernelStore(k)
            await store.aput(("users", "8"), "b", {"v": 2})
            assert (await store.aget(("users", "8"), "b")).value == {"v": 2}

    asyncio.run(main())
    with eventkernel.open(path, read_only=True) as k:
        assert k.verify().ok


def test_every_value_is_a_version_and_the_past_answers(k):
    store = EventKernelStore(k)
    store.put(("users", "42"), "prefs", {"theme": "dark"})
    then = k.head
    store.put(("users", "42"), "prefs", {"theme": "light"})
    store.delete(("users", "42"), "prefs")
    history = store.history(("users", "42"), "prefs")
    assert [(e.version, e.operation, e.value) for e in history] == [
        (1, "put", {"theme": "dark"}), (2, "put", {"theme": "light"}), (3, "delete", {"theme": "light"})]
    assert k.memory.get("langgraph:users.42", "prefs", version=1).value == {"theme": "dark"}
    with k.at(then) as past:
        old = EventKernelStore(past)
        assert old.get(("users", "42"), "prefs").value == {"theme": "dark"}
        assert [i.value for i in old.search(("users",))] == [{"theme": "dark"}]
        assert old.list_namespaces() == [("users", "42")]
        with pytest.raises(eventkernel.ReadOnly):
            old.put(("users", "42"), "prefs", {"theme": "blue"})
    assert store.get(("users", "42"), "prefs") is None


def test_a_batch_commits_together_and_its_reads_see_the_store_before_it(k):
    store = EventKernelStore(k)
    store.put(("n",), "a", {"v": 0})
    head = k.head
    got = store.batch([PutOp(("n",), "a", {"v": 1}), GetOp(("n",), "a"), PutOp(("n",), "a", {"v": 2}),
                       PutOp(("n",), "b", {"v": 3}), PutOp(("n",), "c", None)])
    assert got[1].value == {"v": 0}
    assert store.get(("n",), "a").value == {"v": 2}  # the last write of an item wins
    assert k.head == head + 2  # one version each for a and b; deleting the absent c writes nothing
    assert len({e.position for e in [*store.history(("n",), "a")[1:], *store.history(("n",), "b")]}) == 2


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda s: s.put(("n",), "k", {"bad": float("nan")}), eventkernel.InvalidArgument, "NaN"),
        (lambda s: s.put(("n",), "k", {"v": 1}, ttl=-1), eventkernel.InvalidArgument, "ttl must be a positive"),
        (lambda s: s.batch([PutOp(("n",), "k", [1])]), eventkernel.InvalidArgument, "value must be a dict"),
        (lambda s: s.batch([PutOp((), "k", {"v": 1})]), eventkernel.InvalidArgument, "namespace must not be empty"),
        (lambda s: s.search(("n",), filter={"v": {"$in": [1]}}), eventkernel.InvalidArgument, r"\$in"),
        (lambda s: s.batch([PutOp(("a.b",), "k", {"v": 1})]), ValueError, "periods"),
    ],
)
def test_refused_operations_write_nothing(k, call, error, match):
    store = EventKernelStore(k)
    store.put(("n",), "k", {"v": 0})
    with refused(k, error, match):
        call(store)


def test_odd_addresses_are_readable_in_the_memory_table(k):
    store = EventKernelStore(k)
    store.put(("a/b", "50%", "#x"), "", {"v": 1})
    store.put(("L" * 300,), "K" * 300, {"v": 2})
    names = k.memory.namespaces("langgraph:")
    assert "langgraph:a%2Fb.50%25.%23x" in names
    hashed = [n for n in names if n.startswith("langgraph:#")]
    assert len(hashed) == 1 and len(hashed[0]) == len("langgraph:#") + 64
    assert store.get(("L" * 300,), "K" * 300).value == {"v": 2}
    assert store.list_namespaces() == sorted([("a/b", "50%", "#x"), ("L" * 300,)])


# --- TTL -------------------------------------------------------------------------------


def test_ttl_refresh_on_read_is_a_touch_not_a_version(k, clock):
    store = EventKernelStore(k, ttl={"default_ttl": 1.0})
    store.put(("s",), "scratch", {"v": 1})
    store.put(("s",), "kept", {"v": 2}, ttl=None)
    assert k.memory.get("langgraph:s", "scratch").expires_at == clock() + 60_000
    clock.advance(50_000)
    head = k.head
    assert store.get(("s",), "scratch").value == {"v": 1}  # refresh_on_read defaults to True
    assert [e.type for e in k.log(after=head)] == ["memory.touched"]
    assert k.memory.get("langgraph:s", "scratch").expires_at == clock() + 60_000
    assert len(store.history(("s",), "scratch")) == 1
    store.get(("s",), "kept")
    store.get(("s",), "scratch", refresh_ttl=False)
    assert k.head == head + 1  # no TTL, or no refresh: nothing written
    clock.advance(50_000)
    store.search(("s",))
    assert k.memory.get("langgraph:s", "scratch").expires_at == clock() + 60_000
    clock.advance(60_000)
    assert store.get(("s",), "scratch", refresh_ttl=False) is not None  # past its deadline, not yet swept
    assert store.sweep_ttl() == 1
    assert store.get(("s",), "scratch") is None
    assert [i.key for i in store.search(("s",))] == ["kept"]
    assert [e.operation for e in store.history(("s",), "scratch")] == ["put", "expire"]


def test_omit_expired_hides_items_before_the_sweep(k, clock):
    store = EventKernelStore(k, ttl={"omit_expired": True, "refresh_on_read": False})
    store.put(("s", "a"), "x", {"v": 1}, ttl=1)
    store.put(("s", "b"), "y", {"v": 2})
    clock.advance(60_000)
    assert store.get(("s", "a"), "x") is None
    assert [i.key for i in store.search(("s",))] == ["y"]
    assert store.list_namespaces() == [("s", "b")]
    assert EventKernelStore(k).get(("s", "a"), "x").value == {"v": 1}  # without omit_expired, until swept


def test_a_put_restarts_the_ttl_and_a_refresh_config_can_be_off(k, clock):
    store = EventKernelStore(k, ttl={"refresh_on_read": False})
    store.put(("s",), "x", {"v": 1}, ttl=2)
    clock.advance(90_000)
    head = k.head
    store.get(("s",), "x")
    store.search(("s",))
    assert k.head == head
    store.get(("s",), "x", refresh_ttl=True)  # the call's own choice wins
    assert k.head == head + 1
    store.put(("s",), "x", {"v": 2}, ttl=2)
    assert k.memory.get("langgraph:s", "x").expires_at == clock() + 120_000


def test_the_sweeper_thread_expires_and_stops():
    clock = eventkernel.FrozenClock(1_000_000)
    with eventkernel.open(":memory:", clock=clock) as k:
        store = EventKernelStore(k, ttl={"sweep_interval_minutes": 1})
        store.put(("s",), "x", {"v": 1}, ttl=1)
        clock.advance(60_000)
        future = store.start_ttl_sweeper(sweep_interval_minutes=0.0005)  # every 30 ms
        deadline = time.monotonic() + 10
        while store.get(("s",), "x", refresh_ttl=False) is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.get(("s",), "x", refresh_ttl=False) is None
        assert store.stop_ttl_sweeper(timeout=5)
        assert future.result(timeout=5) is None
        assert EventKernelStore(k).start_ttl_sweeper().done()  # no TTL config: nothing to sweep


class State(TypedDict):
    said: Annotated[list[str], operator.add]


def remember(state: State, *, store: BaseStore) -> dict[str, Any]:
    known = store.get(("users", "alice"), "facts")
    facts = [] if known is None else known.value["facts"]
    store.put(("users", "alice"), "facts", {"facts": [*facts, state["said"][-1]]})
    return {"said": [f"I know {len(facts) + 1} facts"]}


def test_a_graph_remembers_across_threads_through_the_store(tmp_path):
    """A compiled graph given the store (and the saver) on one kernel: what a
    run on one thread stores, a run on another thread reads."""
    builder = StateGraph(State)
    builder.add_node("remember", remember)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", END)
    with eventkernel.open(str(tmp_path / "g.db")) as k:
        graph = builder.compile(checkpointer=EventKernelSaver(k), store=EventKernelStore(k))
        graph.invoke({"said": ["tea"]}, {"configurable": {"thread_id": "t1"}})
        out = graph.invoke({"said": ["cats"]}, {"configurable": {"thread_id": "t2"}})
        assert out["said"] == ["cats", "I know 2 facts"]
        assert [e.value["facts"] for e in EventKernelStore(k).history(("users", "alice"), "facts")] == [
            ["tea"], ["tea", "cats"]]
        assert k.verify().ok
        assert rebuilt_tables(k) == live_tables(k)


def test_threads_share_one_store(tmp_path):
    import threading

    with eventkernel.open(str(tmp_path / "t.db")) as k:
        store = EventKernelStore(k)
        errors: list[BaseException] = []

        def work(t: int) -> None:
            try:
                for i in range(20):
                    store.put(("users", f"u{t}"), f"k{i}", {"i": i})
                    assert store.get(("users", f"u{t}"), f"k{i}").value == {"i": i}
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors
        assert len(store.list_namespaces()) == 8
        assert len(store.search(("users",), limit=1000)) == 160
        assert k.verify().ok


# --- semantic search (index=) against InMemoryStore with the same embeddings -----------------

def _index(fields=("text",)):
    from langchain_core.embeddings import DeterministicFakeEmbedding

    # One field every value has: a put whose value lacks a field InMemoryStore embedded before keeps
    # that old embedding there (this store replaces all of an item's embeddings at each put).
    return {"dims": 8, "embed": DeterministicFakeEmbedding(size=8), "fields": list(fields)}


TEXTS = ["the journal of agents", "leases and retries", "memory versions", "a plan", "agents plan retries"]
semantic_ops = st.lists(st.one_of(
    st.tuples(st.just("put"), st.sampled_from([("docs",), ("docs", "x"), ("notes",)]), st.sampled_from(["a", "b", "c"]),
              st.sampled_from(TEXTS), st.lists(st.sampled_from(["red", "blue"]), max_size=2, unique=True),
              st.integers(0, 3)),  # (InMemoryStore fails on a text given twice in one put)
    st.tuples(st.just("delete"), st.sampled_from([("docs",), ("notes",)]), st.sampled_from(["a", "b", "c"])),
    st.tuples(st.just("search"), st.sampled_from([(), ("docs",), ("notes",)]), st.sampled_from(TEXTS),
              st.one_of(st.none(), st.fixed_dictionaries({"n": st.fixed_dictionaries({"$gte": st.integers(0, 3)})})),
              st.integers(1, 5), st.integers(0, 2)),
), min_size=1, max_size=25)


@pytest.mark.parametrize("where", ["sqlite", "postgres"])
@settings(max_examples=40)
@given(semantic_ops)
def test_semantic_search_ranks_as_in_memory_store_does(where, ops):
    index = _index()
    theirs = InMemoryStore(index=index)
    with open_kernel(where) as k:
        ours = EventKernelStore(k, index=index)
        for op in ops:
            if op[0] == "put":
                _, ns, key, text, tags, n = op
                # the item's address in its text: no two items tie (equal scores are ordered differently:
                # InMemoryStore by first insertion, this store the most recently written first)
                for store in (theirs, ours):
                    store.put(ns, key, {"text": f"{text} ({'/'.join(ns)}:{key})", "tags": tags, "n": n})
            elif op[0] == "delete":
                for store in (theirs, ours):
                    store.delete(op[1], op[2])
            else:
                _, prefix, query, filter_, limit, offset = op
                got = [ours.search(prefix, query=query, filter=filter_, limit=limit, offset=offset),
                       theirs.search(prefix, query=query, filter=filter_, limit=limit, offset=offset)]
                ranked = [[(r.namespace, r.key, r.value) for r in results] for results in got]
                assert ranked[0] == ranked[1], op
                for a, b in zip(*got, strict=True):
                    assert a.score == pytest.approx(b.score, abs=1e-5)
        assert k.verify().ok
        assert live_tables(k) == rebuilt_tables(k)


def test_a_semantic_search_reads_the_embeddings_at_once_or_per_item_alike():
    """A search whose candidates hold most of the store's embeddings reads
    them all in one read; one whose few candidates sit in a large store reads
    each candidate's: the same ranking as InMemoryStore either way."""
    index = _index(("text", "tags[*]"))
    theirs = InMemoryStore(index=index)
    with eventkernel.open(":memory:") as k:
        ours = EventKernelStore(k, index=index)
        for i in range(30):
            for store in (theirs, ours):
                value = {"text": f"{TEXTS[i % 5]} ({i})", "tags": [f"t{i}", f"{TEXTS[(i + 2) % 5]} #{i}"]}
                store.put(("docs",), f"d{i}", value)
        for i in range(2):
            for store in (theirs, ours):
                store.put(("notes",), f"n{i}", {"text": f"{TEXTS[i]} (note {i})", "tags": []})
        reads = []
        listed = k.documents.list
        k.documents.list = lambda **kw: reads.append(kw.get("prefix")) or listed(**kw)  # type: ignore[method-assign]
        for prefix, per_item in ((("docs",), False), (("notes",), True), ((), False)):
            for query in TEXTS:
                reads.clear()
                got = [store.search(prefix, query=query, limit=4, offset=1) for store in (ours, theirs)]
                assert [[(r.namespace, r.key) for r in found] for found in got][0] == \
                    [[(r.namespace, r.key) for r in found] for found in got][1], (prefix, query)
                assert [a.score for a in got[0]] == pytest.approx([b.score for b in got[1]], abs=1e-5)
                assert (len(reads) > 1) is per_item, (prefix, reads)


def test_embeddings_are_kept_in_the_file_and_in_the_past(db_path):
    index = _index()
    with EventKernelStore.from_conn_string(db_path, index=index) as store:
        store.put(("docs",), "a", {"text": "the journal of agents"})
        store.put(("docs",), "b", {"text": "leases and retries"})
        before = store.kernel.head
        store.put(("docs",), "a", {"text": "nothing relevant"}, index=False)  # no embedding now
        store.delete(("docs",), "b")
    with EventKernelStore.from_conn_string(db_path, index=index) as store:  # reopened: nothing to embed again
        assert [(r.key, r.score) for r in store.search(("docs",), query="leases and retries")] == [("a", None)]
        with store.kernel.at(before) as view:
            past = EventKernelStore(view, index=index).search(("docs",), query="leases and retries", limit=1)
            assert past[0].key == "b" and past[0].score == pytest.approx(1.0)
        assert [d.embedding_model for d in store.kernel.documents.list(prefix="langgraph-store/")] == []


def test_every_field_and_list_element_is_embedded_and_the_best_one_ranks():
    index = _index(("text", "tags[*]"))
    theirs = InMemoryStore(index=index)
    with eventkernel.open(":memory:") as k:
        ours = EventKernelStore(k, index=index)
        for store in (theirs, ours):
            store.put(("docs",), "a", {"text": "the journal of agents", "tags": ["red", "blue"]})
            store.put(("docs",), "b", {"text": "leases and retries", "tags": ["green"]})
            store.put(("docs",), "c", {"text": "memory versions"}, index=["text"])
        for query in ("blue", "green", "memory versions", "red"):
            got = [[(r.key, round(r.score, 5)) for r in s.search(("docs",), query=query)] for s in (ours, theirs)]
            assert got[0] == got[1], query
        paths = sorted(d.title for d in k.documents.list(prefix="langgraph-store/"))
        assert paths == ["tags[*]", "tags[*].0", "tags[*].1", "text", "text", "text"]


def test_semantic_scores_agree_with_and_without_numpy(monkeypatch):
    """The matrix product scores each item as the pure-Python cosine does
    (zero vectors, a zero query and several embeddings per item included)."""
    import random
    import struct

    from eventkernel.integrations import langgraph_store

    rng = random.Random(7)

    def vector(zero: bool = False) -> bytes:
        return struct.pack("<8f", *([0.0] * 8 if zero else [rng.uniform(-1, 1) for _ in range(8)]))

    items = [[vector()], [vector(), vector(), vector(zero=True)], [vector(zero=True)], [vector(), vector()]]
    for query in ([rng.uniform(-1, 1) for _ in range(8)], [0.0] * 8):
        with_numpy = langgraph_store._best_cosines(query, items)
        assert with_numpy == pytest.approx([langgraph_store._cosine(query, v) for v in items], abs=1e-12)
        monkeypatch.setattr(langgraph_store, "_np", None)
        assert langgraph_store._best_cosines(query, items) == pytest.approx(with_numpy, abs=1e-12)
        monkeypatch.undo()
