"""The benchmark program runs (tiny sizes); no timing is asserted."""

from __future__ import annotations

import json

from benchmarks.__main__ import main


def test_benchmarks_run_and_write_the_documented_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--quick", "--events", "1500", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "sqlite" in printed and "synchronous full" in printed
    results = json.loads(out.read_text())
    names = [r["name"] for r in results]
    assert any(n.startswith("work.enqueue") for n in names) and any(n.startswith("rebuild") for n in names)
    reads = {f"{op} {q}" for op in ("memory.get", "sessions.get", "work.get") for q in ("p50", "p99")}
    wakes = {f"subscription wake-up, {where}, {q}" for where in ("same process", "another process")
             for q in ("p50", "p99")}
    searches = {f"vector search {n}k×384, numpy, {q}" for n in (1, 2) for q in ("p50", "p99")} | {
        f"vector search {n}k×384, pure Python, p50" for n in (1, 2)} | {
        f"text search {n}k docs, top 10, {q}" for n in (1, 2) for q in ("p50", "p99")}
    assert {n for n in names if n.endswith(("p50", "p99"))} == reads | wakes | searches
    assert any(n.startswith("durable work.enqueue, 8 threads") for n in names)
    doubles = [r for r in results if r["unit"] == "items"]
    assert [r["value"] for r in doubles] == [0]  # 4 worker processes: no item completed twice or never
    assert any(n.startswith("claim+complete, 4 processes") for n in names)
    assert {"LangGraph put", "LangGraph get_tuple, latest of 50", "LangGraph list(limit=10)"} <= set(names)
    floors = {f"  {op}: our SQL alone, replayed" for op in ("put", "put_writes, 2 writes", "get_tuple, latest of 50",
                                                             "list(limit=10)")}
    assert floors <= set(names)
    assert {"  the same, vs the same work inlined", "  (the inlined work, one durable each, vs raw APSW)"} <= set(names)
    assert any(n.startswith("file size after a") for n in names)
    assert sum(n.startswith("LangGraph store search(limit=10)") for n in names) == 2
    assert {"ADK append_event, vs database", "ADK append_event, vs sqlite"} <= set(names)
    assert sum(n.startswith("ADK get_session") for n in names) == 5
    assert any(n.startswith("ADK get_session") and "a new service" in n for n in names)
    assert sum(n.startswith("ADK list_sessions of") for n in names) == 2
    for r in results:
        assert set(r) == {"name", "value", "unit", "baseline", "baseline_value", "ratio", "target"}
        if r in doubles or r["name"] in wakes or r["unit"] in ("%", "ratio"):
            assert r["value"] >= 0
            continue
        assert r["value"] > 0 and r["baseline_value"] > 0
        if r["name"].startswith("a lone durable command"):
            continue  # its ratio is the median of its rounds' ratios
        assert abs(r["ratio"] - (r["value"] / r["baseline_value"])) < 1e-9


def test_the_inlined_floor_writes_what_the_kernel_writes(tmp_path):
    # The floor is only a floor if it does the kernel's work: a journal that
    # verifies, the same rows but for ids, times and hashes.
    import eventkernel
    from benchmarks.common import InlinedEnqueue

    inlined = InlinedEnqueue(str(tmp_path / "inlined.db"), "full")
    with eventkernel.open(str(tmp_path / "kernel.db")) as k, inlined.kernel.transaction():
        for n in range(20):
            inlined.enqueue("bench", {"n": n})
            k.work.enqueue("bench", {"n": n})
    try:
        assert inlined.kernel.verify().ok
        with eventkernel.open(str(tmp_path / "kernel.db")) as k:
            def shape(kernel):
                return [(e.stream[:12], e.version, e.type, e.schema, {**e.data, "work_item_id": None}, e.meta,
                         e.event_id, e.correlation_id) for e in kernel.log()]
            assert shape(inlined.kernel) == shape(k)
            assert [(i.task_id, i.input, i.status) for i in inlined.kernel.work.list()] == \
                [(i.task_id, i.input, i.status) for i in k.work.list()]
    finally:
        inlined.close()
