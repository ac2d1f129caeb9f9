"""The journal on PostgreSQL: durable appends/s from 1, 4 and 8 client
processes, 8 threads of one process (group commit on and off), and batches
of 100 per transaction, against raw psycopg inserts
on the same server and against the SQLite journal, in the same run.

The server is a throwaway cluster on a unix socket (``benchmarks.pgcluster``)
with PostgreSQL's durable defaults (``fsync`` and ``synchronous_commit`` on);
the rows "over a network" reach it through a proxy that holds every byte
for a set time each way (``benchmarks.netdelay``), against raw psycopg
through the same proxy.
The raw baseline inserts one row per transaction into a table with a
``bigserial`` key and no lock: the floor of a durable commit on this server,
without the journal's guarantees (dense positions in commit order, the hash
chain, stream versions).
"""

from __future__ import annotations

import functools
import multiprocessing
import time
from typing import Any

import eventkernel
from benchmarks.common import interleaved, scratch_dir, summary
from benchmarks.pgcluster import Cluster


class Appended(eventkernel.Event, tag="bench.pg.appended"):
    n: int
    text: str


RAW_DDL = """
CREATE TABLE IF NOT EXISTS raw_events (
    id bigserial PRIMARY KEY, stream text NOT NULL, type text NOT NULL, data text NOT NULL, recorded_at bigint NOT NULL)
"""
RAW_INSERT = "INSERT INTO raw_events (stream, type, data, recorded_at) VALUES (%s, %s, %s, %s)"


ONE_ROUND_TRIP = {"one_round_trip": True}
"""The options of the rows that measure the one-round-trip commit against the
default (the lock first, the server's clock read under it)."""


def _ours(url: str, name: str, n: int, batch: int, start: Any, results: Any, options: Any = None) -> None:
    from eventkernel import postgres

    with postgres.open_journal(url, **(options or {})) as j:
        start.wait()
        t0 = time.perf_counter()
        for i in range(n // batch):
            if batch == 1:
                j.append(f"bench:{name}", [Appended(n=i, text="an event of about sixty bytes of payload")])
            else:
                with j.transaction():
                    for b in range(batch):
                        j.append(f"bench:{name}", [Appended(n=i * batch + b, text="an event of about sixty bytes")])
        results.put(time.perf_counter() - t0)


def _raw(url: str, name: str, n: int, batch: int, start: Any, results: Any) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        start.wait()
        t0 = time.perf_counter()
        for i in range(n // batch):
            with conn.transaction(), conn.cursor() as cur:
                rows = [(f"bench:{name}", "bench.pg.appended", f'{{"n":{i * batch + b},"text":"x"}}',
                         time.time_ns() // 1_000_000) for b in range(batch)]
                if batch == 1:
                    cur.execute(RAW_INSERT, rows[0])
                else:
                    cur.executemany(RAW_INSERT, rows)
        results.put(time.perf_counter() - t0)


def _raw_single(url: str, name: str, n: int, batch: int, start: Any, results: Any) -> None:
    """One INSERT per transaction sent alone (autocommit): one round trip each, the floor over a network."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        start.wait()
        t0 = time.perf_counter()
        for i in range(n):
            conn.execute(RAW_INSERT, (f"bench:{name}", "bench.pg.appended", f'{{"n":{i},"text":"x"}}',
                                      time.time_ns() // 1_000_000))
        results.put(time.perf_counter() - t0)


QUEUE_DDL = """
CREATE TABLE IF NOT EXISTS queue (
    id bigserial PRIMARY KEY, status text NOT NULL DEFAULT 'pending', priority int NOT NULL DEFAULT 0,
    holder text, token int NOT NULL DEFAULT 0, lease_expires_at bigint, output text);
CREATE INDEX IF NOT EXISTS queue_pending ON queue (priority DESC, id) WHERE status = 'pending';
"""
CLAIM = """
UPDATE queue SET status = 'in_progress', holder = %s, token = token + 1, lease_expires_at = %s
WHERE id = (SELECT id FROM queue WHERE status = 'pending' ORDER BY priority DESC, id FOR UPDATE SKIP LOCKED LIMIT 1)
RETURNING id, token
"""
COMPLETE = "UPDATE queue SET status = 'completed', output = %s WHERE id = %s AND holder = %s AND token = %s"


def _kernel_enqueue(target: str, name: str, n: int, batch: int, start: Any, results: Any,
                    options: Any = None) -> None:
    """``n`` durable work.enqueue commands on a kernel (a file or a URL)."""
    with eventkernel.open(target, **(options or {})) as k:
        start.wait()
        t0 = time.perf_counter()
        for i in range(n):
            k.work.enqueue(f"task-{name}", {"n": i})
        results.put(time.perf_counter() - t0)


def _kernel_enqueue_bare(target: str, name: str, n: int, batch: int, start: Any, results: Any) -> None:
    """The same with ``server_tables=False``: the server holds the journal alone."""
    with eventkernel.open(target, server_tables=False) as k:
        start.wait()
        t0 = time.perf_counter()
        for i in range(n):
            k.work.enqueue(f"task-{name}", {"n": i})
        results.put(time.perf_counter() - t0)


def _kernel_worker(target: str, name: str, n: int, batch: int, start: Any, results: Any,
                   options: Any = None) -> None:
    with eventkernel.open(target, **(options or {})) as k:
        start.wait()
        t0 = time.perf_counter()
        while True:
            item = k.work.claim(name, lease_ms=60_000)
            if item is None:
                break
            k.work.complete(item.work_item_id, name, item.token, output={"by": name})
        results.put(time.perf_counter() - t0)


def _skip_locked_worker(url: str, name: str, n: int, batch: int, start: Any, results: Any) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        start.wait()
        t0 = time.perf_counter()
        while True:
            row = conn.execute(CLAIM, (name, time.time_ns() // 1_000_000 + 60_000)).fetchone()
            if row is None:
                break
            conn.execute(COMPLETE, ('{"by":"' + name + '"}', row[0], name, row[1]))
        results.put(time.perf_counter() - t0)


def _clients_time(target: Any, url: str, clients: int) -> float:
    """Seconds until the last of ``clients`` worker processes finds the queue empty."""
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(clients)
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(url, f"w{i}", 0, 1, start, results)) for i in range(clients)]
    for p in procs:
        p.start()
    elapsed = max(results.get(timeout=900) for _ in procs)
    for p in procs:
        p.join()
    return elapsed


def _clients(target: Any, url: str, clients: int, n: int, batch: int) -> float:
    """Events/s of ``clients`` processes appending ``n`` events each (all
    started together; the rate over the slowest's time)."""
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(clients)
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(url, f"c{i}", n, batch, start, results)) for i in range(clients)]
    for p in procs:
        p.start()
    elapsed = max(results.get(timeout=900) for _ in procs)
    for p in procs:
        p.join()
    return clients * n / elapsed


def _threads(url: str, threads: int, n: int, group_commit: bool) -> float:
    """Events/s of ``threads`` threads of one process appending ``n`` events
    each through one journal (one event per durable append)."""
    import threading

    from eventkernel import postgres

    with postgres.open_journal(url, group_commit=group_commit) as j:
        def work(t: int) -> None:
            for i in range(n):
                j.append(f"bench:thread-{t}", [Appended(n=i, text="an event of about sixty bytes of payload")])

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return threads * n / (time.perf_counter() - t0)


def _sqlite(n: int) -> float:
    path = str(scratch_dir() / "journal.db")
    with eventkernel.open(path) as k:
        t0 = time.perf_counter()
        for i in range(n):
            k.append("bench:sqlite", [Appended(n=i, text="an event of about sixty bytes of payload")])
        return n / (time.perf_counter() - t0)


def run(*, quick: bool) -> list[dict[str, Any]]:
    import psycopg

    from eventkernel import postgres

    per_client = 40 if quick else 600
    batched = 200 if quick else 5_000
    rounds = 1 if quick else 3
    cluster = Cluster()
    try:
        url = cluster.new_database()
        postgres.open_journal(url).close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(RAW_DDL)
        out: list[dict[str, Any]] = []

        def row(name: str, ours: list[float], theirs: list[float], baseline: str, unit: str = "events/s") -> None:
            a, b = summary(ours), summary(theirs)
            out.append({"name": name, "value": a["median"], "min": a["min"], "max": a["max"], "unit": unit,
                        "baseline": baseline, "baseline_value": b["median"], "ratio": a["median"] / b["median"],
                        "target": None})

        for clients in (1, 4, 8):
            ours, theirs = interleaved(rounds, lambda c=clients: _clients(_ours, url, c, per_client, 1),
                                       lambda c=clients: _clients(_raw, url, c, per_client, 1))
            row(f"PostgreSQL journal, durable appends, {clients} process{'es' if clients > 1 else ''}", ours, theirs,
                "raw psycopg: one INSERT per transaction, bigserial key, no lock")
        ours, theirs = interleaved(rounds, lambda: _clients(_ours, url, 1, per_client, 1),
                                   lambda: _sqlite(per_client))
        row("PostgreSQL journal vs SQLite journal, 1 process", ours, theirs, "k.append on an SQLite file (FULL)")
        ours, theirs = interleaved(rounds, lambda: _threads(url, 8, per_client, True),
                                   lambda: _threads(url, 8, per_client, False))
        row("PostgreSQL journal, 8 threads of one process, group commit", ours, theirs,
            "the same 8 threads, group_commit=False")
        ours, theirs = interleaved(rounds, lambda: _clients(_ours, url, 1, batched, 100),
                                   lambda: _clients(_raw, url, 1, batched, 100))
        row("PostgreSQL journal, 100 appends per transaction", ours, theirs,
            "raw psycopg: executemany of 100 rows per transaction")
        ours, theirs = interleaved(rounds, lambda: _clients(_ours, url, 4, batched, 100),
                                   lambda: _clients(_raw, url, 4, batched, 100))
        row("PostgreSQL journal, 100 per transaction, 4 processes", ours, theirs,
            "raw psycopg: executemany of 100 rows per transaction")

        kernel_n = 20 if quick else 300
        sqlite_path = str(scratch_dir() / "kernel.db")
        eventkernel.open(sqlite_path).close()
        for clients in (1, 4, 8):
            schema_url = cluster.new_database()
            eventkernel.open(schema_url).close()
            ours, theirs = interleaved(rounds, lambda c=clients, u=schema_url: _clients(_kernel_enqueue, u, c, kernel_n, 1),
                                       lambda c=clients: _clients(_kernel_enqueue, sqlite_path, c, kernel_n, 1))
            row(f"kernel on PostgreSQL, durable work.enqueue, {clients} process{'es' if clients > 1 else ''}",
                ours, theirs, "the same on an SQLite file (FULL)", "commands/s")
            _, raw = interleaved(rounds, lambda: 1.0, lambda c=clients: _clients(_raw, url, c, kernel_n, 1))
            row(f"  the same vs raw psycopg, {clients} process{'es' if clients > 1 else ''}", ours, raw,
                "raw psycopg: one INSERT per transaction", "commands/s")
        # what keeping a copy of every projection table on the server costs a command
        kept_url, bare_url = cluster.new_database(), cluster.new_database()
        eventkernel.open(kept_url).close()
        eventkernel.open(bare_url, server_tables=False).close()
        ours, theirs = interleaved(rounds, lambda: _clients(_kernel_enqueue, kept_url, 1, kernel_n, 1),
                                   lambda: _clients(_kernel_enqueue_bare, bare_url, 1, kernel_n, 1))
        row("kernel on PostgreSQL, durable work.enqueue, 1 process, the server's tables kept", ours, theirs,
            "the same with server_tables=False (the journal alone on the server)", "commands/s")
        # a commit decided on the replica and sent in one round trip, against the default (the lock first)
        trip_url = cluster.new_database()
        eventkernel.open(trip_url).close()
        ours, theirs = interleaved(
            rounds, lambda: _clients(functools.partial(_kernel_enqueue, options=ONE_ROUND_TRIP), trip_url, 1,
                                     kernel_n, 1),
            lambda: _clients(_kernel_enqueue, trip_url, 1, kernel_n, 1))
        row("kernel on PostgreSQL, durable work.enqueue, 1 process, one_round_trip=True", ours, theirs,
            "the same by default (the lock first, the server's clock under it)", "commands/s")
        ours, theirs = interleaved(rounds, lambda: _clients(functools.partial(_ours, options=ONE_ROUND_TRIP), url, 1,
                                                            per_client, 1),
                                   lambda: _clients(_ours, url, 1, per_client, 1))
        row("PostgreSQL journal, durable appends, 1 process, one_round_trip=True", ours, theirs,
            "the same by default (the lock first, the server's clock under it)")
        # opening a kernel with a new replica: seeded from the server's tables vs folding every event
        events = 2_000 if quick else 100_000
        made = str(scratch_dir() / "seed.db")
        with eventkernel.open(made, synchronous="normal") as k:
            while k.head < events:
                with k.transaction():
                    for i in range(500):
                        k.work.enqueue(f"task-{i % 7}", {"i": i, "text": "x" * 100})
                        k.memory.put(f"user:{i % 50}", f"k{i % 13}", {"v": i})
        seed_url = cluster.new_database()
        from eventkernel import transfer

        transfer.copy(made, seed_url)
        eventkernel.open(seed_url).close()  # (the server's tables made)

        def opening(**options: Any) -> float:
            t0 = time.perf_counter()
            with eventkernel.open(seed_url, **options) as k:
                n = k.head
            return n / (time.perf_counter() - t0)

        ours, theirs = interleaved(rounds, opening, lambda: opening(server_tables=False))
        row(f"kernel on PostgreSQL, opening a new replica of {events:,} events, from the server's tables", ours,
            theirs, "the same folding every event (server_tables=False)", "events/s")
        # over a network: every byte held for a set time each way by a proxy in front of the server
        from benchmarks.netdelay import DelayedLink

        net_n = 20 if quick else 200
        for one_way in (0.25, 1.0):
            net_url = cluster.new_database()
            eventkernel.open(net_url).close()
            with DelayedLink(cluster, one_way) as link:
                linked = link.url(net_url)
                with psycopg.connect(linked, autocommit=True) as conn:
                    conn.execute(RAW_DDL)
                    trips = []
                    for _ in range(50):
                        t0 = time.perf_counter()
                        conn.execute("SELECT 1")
                        trips.append((time.perf_counter() - t0) * 1000)
                rtt = sorted(trips)[len(trips) // 2]
                link_name = f"{one_way:g} ms each way (a round trip {rtt:.2f} ms)"
                ours, theirs = interleaved(rounds, lambda u=linked: _clients(_kernel_enqueue, u, 1, net_n, 1),
                                           lambda u=linked: _clients(_raw_single, u, 1, net_n, 1))
                row(f"kernel on PostgreSQL over {link_name}, durable work.enqueue, 1 process", ours, theirs,
                    "raw psycopg over the same link: one INSERT, autocommit (one round trip)", "commands/s")
                trips_ours, trips_default = interleaved(
                    rounds, lambda u=linked: _clients(functools.partial(_kernel_enqueue, options=ONE_ROUND_TRIP), u, 1,
                                                      net_n, 1),
                    lambda u=linked: _clients(_kernel_enqueue, u, 1, net_n, 1))
                row(f"kernel on PostgreSQL over {link_name}, durable work.enqueue, 1 process, one_round_trip=True",
                    trips_ours, trips_default, "the same by default (the lock first, the server's clock under it)",
                    "commands/s")
                ours, theirs = interleaved(rounds, lambda u=linked: _clients(_ours, u, 1, net_n, 1),
                                           lambda u=linked: _clients(_raw_single, u, 1, net_n, 1))
                row(f"PostgreSQL journal over {link_name}, durable appends, 1 process", ours, theirs,
                    "raw psycopg over the same link: one INSERT, autocommit (one round trip)")
                ours, theirs = interleaved(rounds, lambda u=linked: _threads(u, 8, net_n // 4, True),
                                           lambda u=linked: _threads(u, 8, net_n // 4, False))
                row(f"PostgreSQL journal over {link_name}, 8 threads of one process, group commit", ours, theirs,
                    "the same 8 threads, group_commit=False")
        items = 40 if quick else 1_000
        for workers in (4, 8):
            ours, theirs = [], []
            for _ in range(rounds):
                queue_url = cluster.new_database()
                with eventkernel.open(queue_url) as k, k.transaction():
                    for i in range(items):
                        k.work.enqueue(f"task-{i}", {"n": i})
                ours.append(items / _clients_time(_kernel_worker, queue_url, workers))
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("DROP TABLE IF EXISTS queue")
                    conn.execute(QUEUE_DDL)
                    with conn.cursor() as cur:
                        cur.executemany("INSERT INTO queue (priority) VALUES (0)", [()] * items)
                theirs.append(items / _clients_time(_skip_locked_worker, url, workers))
            row(f"kernel on PostgreSQL, claim+complete, {workers} processes, {items:,} items", ours, theirs,
                "a hand-written FOR UPDATE SKIP LOCKED queue, same server", "items/s")
        ours, theirs = [], []
        for _ in range(rounds):  # 4 workers committing in one round trip, against the default
            for options, into in ((ONE_ROUND_TRIP, ours), (None, theirs)):
                queue_url = cluster.new_database()
                with eventkernel.open(queue_url) as k, k.transaction():
                    for i in range(items):
                        k.work.enqueue(f"task-{i}", {"n": i})
                into.append(items / _clients_time(functools.partial(_kernel_worker, options=options), queue_url, 4))
        row(f"kernel on PostgreSQL, claim+complete, 4 processes, {items:,} items, one_round_trip=True", ours, theirs,
            "the same by default (the lock first, the server's clock under it)", "items/s")
        return out
    finally:
        cluster.close()
