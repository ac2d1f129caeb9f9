"""The metadata index of graph checkpoints (``graph_checkpoint_metadata``):
after any mix of saving (again), copying and forgetting, it holds exactly
one row per top-level key of each live checkpoint's metadata, and
``list(filter=)`` through it answers what a scan of every checkpoint would."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

import eventkernel
from eventkernel.projections.graphs import metadata_value

THREADS = st.sampled_from(["a", "b", "c"])
IDS = st.sampled_from(["cp-1", "cp-2", "cp-3"])  # few: the same checkpoint is saved again
KEYS = st.sampled_from(["source", "step", "run_id", "parents", "odd \"key\""])
VALUES = st.one_of(st.none(), st.sampled_from(["loop", "input", "run-1", "run-2"]), st.integers(-1, 2),
                   st.dictionaries(st.sampled_from(["", "x"]), st.sampled_from(["cp-1", "cp-2"]), max_size=2))
METADATA = st.dictionaries(KEYS, VALUES, max_size=4)
BLOB = ("msgpack", msgspec.msgpack.encode({"v": 1}))

OPS = st.lists(st.one_of(
    st.tuples(st.just("put"), THREADS, IDS, METADATA),
    st.tuples(st.just("copy"), THREADS, THREADS),
    st.tuples(st.just("delete_runs"), st.lists(st.sampled_from(["run-1", "run-2"]), min_size=1, max_size=2)),
    st.tuples(st.just("prune"), THREADS, st.sampled_from(["keep_latest", "delete"])),
    st.tuples(st.just("delete"), THREADS),
), max_size=20)


def _run(k: eventkernel.Kernel, op: tuple) -> None:
    name, *a = op
    if name == "put":
        thread, checkpoint_id, metadata = a
        k.graphs.put(thread, "", checkpoint_id, checkpoint=BLOB, channel_versions={}, metadata=metadata, values={})
    elif name == "copy":
        k.graphs.copy_thread(a[0], a[1])
    elif name == "delete_runs":
        k.graphs.delete_runs(a[0])
    elif name == "prune":
        k.graphs.prune([a[0]], strategy=a[1])
    else:
        k.graphs.delete_thread(a[0])


def _matches(metadata: dict, wanted: dict) -> bool:
    return all(metadata.get(key) is None if value is None else
               key in metadata and metadata_value(metadata[key]) == metadata_value(value)
               for key, value in wanted.items())


@settings(max_examples=150, deadline=None)
@given(ops=OPS, filters=st.lists(st.dictionaries(KEYS, VALUES, max_size=2), min_size=1, max_size=4))
def test_the_metadata_index_holds_each_live_checkpoints_keys_and_filters_like_a_scan(tmp_path_factory, ops, filters):
    path = tmp_path_factory.mktemp("graphs") / "k.db"
    with eventkernel.open(str(path)) as k:
        for op in ops:
            _run(k, op)
        everything = k.graphs.list()
        indexed = sorted(k.table("graph_checkpoint_metadata")[1])
        expected = sorted((key, metadata_value(value), c.thread_id, c.checkpoint_ns, c.checkpoint_id)
                          for c in everything for key, value in c.metadata.items())
        assert indexed == expected
        for wanted in filters:
            found = [(c.thread_id, c.checkpoint_id) for c in k.graphs.list(filter=wanted)]
            assert found == [(c.thread_id, c.checkpoint_id) for c in everything if _matches(c.metadata, wanted)]
