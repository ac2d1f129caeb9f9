"""Every query the kernel runs on a projection table is served by an index:
each SELECT issued during a workload over all domains is explained, and a
full scan of a projection table fails the test."""

from __future__ import annotations

import re

import eventkernel

from workload import DOMAINS

# Listing everything, unfiltered, is a scan by nature; these calls are not made. A virtual
# table (FTS5) searched through its own index shows the constraint after "INDEX n:" (M: a
# MATCH, =: a rowid); "INDEX n:" with nothing after it reads every row.
FULL_SCAN = re.compile(r"^SCAN (\w+)\b(?! USING| VIRTUAL TABLE INDEX \d+:\S)")
# A table named in FROM/JOIN and the alias it goes by, if any: a plan speaks of the alias.
_NAMED = re.compile(
    r"\b(?:FROM|JOIN)\s+\"?(\w+)\"?(?:\s+(?:AS\s+)?(?!(?:WHERE|ORDER|GROUP|LIMIT|JOIN|ON|INNER|LEFT|CROSS|USING|"
    r"WINDOW|UNION|EXCEPT|INTERSECT)\b)(\w+))?",
    re.IGNORECASE,
)


def tables_by_name(sql: str) -> dict[str, str]:
    """What each name a plan may use stands for: table names and their aliases."""
    out = {}
    for table, alias in _NAMED.findall(sql):
        out[table] = table
        if alias:
            out[alias] = table
    return out


def test_a_virtual_table_searched_by_its_index_is_not_a_scan():
    assert not FULL_SCAN.match("SCAN document_fts VIRTUAL TABLE INDEX 0:M3")
    assert not FULL_SCAN.match("SCAN f VIRTUAL TABLE INDEX 0:=")
    assert FULL_SCAN.match("SCAN f VIRTUAL TABLE INDEX 0:")
    assert FULL_SCAN.match("SCAN document_index")


def test_aliases_are_resolved():
    sql = "SELECT a FROM sessions s WHERE s.x = (SELECT max(y) FROM session_shared_state AS x JOIN t ON 1) ORDER BY a"
    assert tables_by_name(sql) == {"sessions": "sessions", "s": "sessions", "session_shared_state":
                                   "session_shared_state", "x": "session_shared_state", "t": "t"}


def workload(k: eventkernel.Kernel, clock: eventkernel.FrozenClock) -> None:
    """Every command and query of every registered domain (tests/domains/)."""
    for module in DOMAINS.values():
        module.exercise(k, clock)


def test_no_projection_query_scans_a_table(db_path, clock):
    with eventkernel.open(db_path, clock=clock) as k:
        tables = {t for names in k._projector.tables.values() for t in names}
        seen: dict[str, tuple] = {}

        def trace(cursor, sql, bindings):
            if sql.lstrip().upper().startswith("SELECT"):
                seen.setdefault(sql, bindings)
            return True

        connections = (k._db.conn, k._db.reader())  # commands write through one, queries read through the other
        for conn in connections:
            conn.exec_trace = trace
        workload(k, clock)
        for conn in connections:
            conn.exec_trace = None
        scans = []
        for sql, bindings in seen.items():
            plan = [row[3] for row in k._db.conn.execute(f"EXPLAIN QUERY PLAN {sql}", bindings)]
            names = tables_by_name(sql)
            for detail in plan:
                m = FULL_SCAN.match(detail)
                if m and names.get(m.group(1), m.group(1)) in tables:
                    scans.append(f"{detail}  <-  {sql}")
        projection_queries = [s for s in seen if any(t in s for t in tables)]
        assert len(projection_queries) > 40, "the workload did not exercise the queries"
        assert not scans, "\n".join(scans)


def test_a_namespaces_newest_memories_are_read_in_order_not_sorted(db_path):
    """``memory.recent`` of one namespace (the LangGraph store's search of a
    namespace) walks the index of newest versions by position: however many
    the namespace holds, it reads as many as it returns, and sorts no more."""
    with eventkernel.open(db_path) as k:
        for i in range(30):
            k.memory.put("user:1", f"k{i % 12}", {"v": i})
        seen: list[tuple[str, object]] = []
        reader = k._db.reader()
        reader.exec_trace = lambda _c, sql, bindings: seen.append((sql, bindings)) is None
        newest = k.memory.recent(namespace="user:1", limit=3)
        reader.exec_trace = None
        assert [e.key for e in newest] == ["k5", "k4", "k3"]
        (sql, bindings), = [(s, b) for s, b in seen if "memory_entries" in s]
        plan = k._db.conn.execute(f"EXPLAIN QUERY PLAN {sql}", bindings).fetchall()
        (subquery,) = [row[0] for row in plan if row[3] == "LIST SUBQUERY 1"]
        inner = [row[3] for row in plan if row[1] == subquery]  # (the outer query sorts the few it found)
        assert inner == ["SEARCH memory_entries USING INDEX memory_recent (namespace=?)"], plan
