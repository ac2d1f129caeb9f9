"""The graph checkpoints' part of the workload: checkpoints of a few threads
and namespaces, chained to their parents, with values (readable msgpack,
opaque bytes, empty channels), pending writes (special channels included),
and every way of forgetting."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import strategies as st

from strategies import json_values

THREADS = st.sampled_from(["th-1", "th-2", "", "#odd\x00thread"])
NAMESPACES = st.sampled_from(["", "child:1"])
CHANNELS = st.sampled_from(["messages", "count", "__error__"])
RUNS = st.sampled_from(["run-a", "run-b"])


def _serialized(draw_value: Any, how: str) -> tuple[str, bytes]:
    if how == "msgpack":
        return "msgpack", msgspec.msgpack.encode(draw_value)
    if how == "bytes":
        return "bytes", msgspec.json.encode(draw_value) + b"\xff"
    return "empty", b""


VALUES = st.builds(_serialized, json_values, st.sampled_from(["msgpack", "bytes", "empty"]))

OPS = [
    st.builds(lambda t, ns, vals, run, step: ("graphs.put", t, ns, vals, run, step), THREADS, NAMESPACES,
              st.dictionaries(CHANNELS, VALUES, max_size=2), RUNS, st.integers(-1, 3)),
    st.builds(lambda t, ns, w, task: ("graphs.put_writes", t, ns, w, task), THREADS, NAMESPACES,
              st.lists(st.tuples(CHANNELS, VALUES), max_size=3), st.sampled_from(["task-1", "task-2"])),
    st.builds(lambda t: ("graphs.delete_thread", t), THREADS),
    st.builds(lambda r: ("graphs.delete_runs", r), st.lists(RUNS, max_size=2)),
    st.builds(lambda t, s: ("graphs.prune", t, s), st.lists(THREADS, max_size=2),
              st.sampled_from(["keep_latest", "delete"])),
    st.builds(lambda a, b: ("graphs.copy_thread", a, b), THREADS, THREADS),
]

_SPECIAL = {"__error__": -1}


def resolve(k: Any, op: tuple) -> Any:
    name, *a = op
    if name == "graphs.put":
        thread, ns, values, run, step = a
        latest = k.graphs.get(thread, ns)
        counter = 0 if latest is None else int(latest.checkpoint_id.rsplit("-", 1)[1])
        versions = dict(latest.channel_versions) if latest is not None else {}
        new = {}
        for channel, value in values.items():
            versions[channel] = versions.get(channel, 0) + 1
            new[channel] = (versions[channel], value)
        return k.graphs.put, {
            "thread_id": thread, "checkpoint_ns": ns, "checkpoint_id": f"cp-{counter + 1:04d}",
            "checkpoint": ("msgpack", msgspec.msgpack.encode({"v": 1, "step": step})),
            "channel_versions": versions, "metadata": {"source": "loop", "step": step, "run_id": run},
            "values": new, "parent_checkpoint_id": None if latest is None else latest.checkpoint_id,
        }
    if name == "graphs.put_writes":
        thread, ns, writes, task = a
        latest = k.graphs.get(thread, ns)
        by_idx: dict[int, tuple[str, Any]] = {}
        for i, (channel, value) in enumerate(writes):
            by_idx.setdefault(_SPECIAL.get(channel, i), (channel, value))
        return k.graphs.put_writes, {
            "thread_id": thread, "checkpoint_ns": ns,
            "checkpoint_id": "cp-0000" if latest is None else latest.checkpoint_id, "task_id": task,
            "writes": [(idx, channel, value) for idx, (channel, value) in by_idx.items()],
        }
    if name == "graphs.delete_thread":
        return k.graphs.delete_thread, {"thread_id": a[0]}
    if name == "graphs.delete_runs":
        return k.graphs.delete_runs, {"run_ids": a[0]}
    if name == "graphs.prune":
        return k.graphs.prune, {"thread_ids": a[0], "strategy": a[1]}
    return k.graphs.copy_thread, {"source_thread_id": a[0], "target_thread_id": a[1]}


def exercise(k: Any, clock: Any) -> None:
    blob = ("msgpack", msgspec.msgpack.encode({"a": 1}))
    for i, thread in enumerate(["th-1", "th-1", "th-2"]):
        k.graphs.put(thread, "", f"cp-{i}", checkpoint=blob, channel_versions={"a": i + 1},
                     metadata={"source": "loop", "step": i, "run_id": f"run-{i}"}, values={"a": (i + 1, blob)},
                     parent_checkpoint_id=None if i == 0 else f"cp-{i - 1}")
    k.graphs.put_writes("th-1", "", "cp-1", "task", [(0, "a", blob), (-1, "__error__", blob)], task_path="p")
    k.graphs.get("th-1")
    k.graphs.get("th-1", "", "cp-0")
    k.graphs.list("th-1", "")
    k.graphs.list("th-1", before="cp-1", limit=1)
    k.graphs.list(filter={"source": "loop", "step": 1})
    k.graphs.list("th-1", filter={"missing": None})
    # (listing every checkpoint of every thread, unfiltered, is a scan by nature: not made here)
    k.graphs.copy_thread("th-1", "th-3")
    k.graphs.delete_runs(["run-1"])
    k.graphs.prune(["th-3"])
    k.graphs.prune(["th-2"], strategy="delete")
    k.graphs.delete_thread("th-1")
