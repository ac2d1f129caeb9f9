"""Helpers for tests: snapshots of everything a kernel has written."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest

import eventkernel


class Noted(eventkernel.Event, tag="support.noted"):
    """An application's event, for the tests of an application projection."""

    text: str


NOTES = SimpleNamespace(
    NAME="notes", VERSION=1, HANDLES=frozenset({"support.noted"}),
    DDL="CREATE TABLE notes (position INTEGER PRIMARY KEY, text TEXT NOT NULL) STRICT",
    apply=lambda conn, r, e: conn.execute("INSERT INTO notes VALUES (?, ?)", (r.position, e.text)),
)
"""An application projection: one row per note (an object with the projection protocol's five names)."""


def in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``fn`` on a new daemon thread; returns (thread, box), box getting
    its ``result`` or its ``error``."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


def open_kernel(engine: str, **options: Any) -> eventkernel.Kernel:
    """A new, empty kernel on ``engine``: in memory, or the journal in a
    schema of its own on the suite's PostgreSQL server (with its replica)."""
    if engine == "sqlite":
        return eventkernel.open(":memory:", **options)
    import uuid

    from benchmarks.pgcluster import shared

    return eventkernel.open(shared().url(), schema="k_" + uuid.uuid4().hex[:12], **options)


def snapshot(k: eventkernel.Kernel) -> dict[str, Any]:
    """The head and the full content of every table, journal included (and
    the server's head, for a kernel on PostgreSQL)."""
    conn = k._db.conn
    tables = [n for (n,) in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")]
    out: dict[str, Any] = {"head": k.head, "data_version": conn.pragma("data_version")}
    if k._replica is not None:
        out["server"] = k._replica.pg.head_hash()
        out["server_tables"] = server_tables(k)
    for t in tables:
        out[t] = sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr)
    return out


@contextmanager
def refused(k: eventkernel.Kernel, error: type[BaseException], match: str | None = None) -> Iterator[None]:
    """Assert the block raises ``error`` (message matching) and writes nothing."""
    before = snapshot(k)
    with pytest.raises(error, match=match):
        yield
    after = snapshot(k)
    assert after == before, "a rejected command changed the database"


def live_tables(k: eventkernel.Kernel) -> dict[str, list[tuple[Any, ...]]]:
    """Every projection table of a kernel, rows sorted."""
    conn = k._db.conn
    out = {}
    for names in k._projector.tables.values():
        for t in names:
            out[t] = sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr)
    return out


def until(check: Any, seconds: float = 10.0) -> None:
    """Wait for ``check()`` to hold (another process's commit to be followed):
    a bound against a hang, not a measure of speed."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not seen in time"
        time.sleep(0.01)


def server_tables(k: eventkernel.Kernel) -> dict[str, list[tuple[Any, ...]]]:
    """The server's copy of every projection table of a kernel on PostgreSQL
    (eventkernel.pgtables), rows sorted as ``live_tables`` sorts them."""
    assert k._replica is not None
    out = {}
    for name, table in k._replica.tables.items():
        out[name] = sorted(k._replica.pg._query("reading a server table", table.server_select), key=repr)
    return out


def kept_tables(k: eventkernel.Kernel) -> dict[str, list[tuple[Any, ...]]]:
    """``live_tables`` of the tables the server holds copies of, their text as
    the server holds it (``pgtables.escape``)."""
    assert k._replica is not None
    live = live_tables(k)
    tables = k._replica.tables
    return {name: sorted((tables[name].fit(r) for r in live[name]), key=repr) for name in tables}


def server_tables_hold(k: eventkernel.Kernel) -> None:
    """On a kernel on PostgreSQL still open: the server's tables are its
    replica's, row for row, once the replica holds the server's head."""
    if k._replica is not None and not k._closed:
        k._replica.pull()
        assert server_tables(k) == kept_tables(k), "the server's projection tables are not the replica's"


def rebuilt_tables(k: eventkernel.Kernel, *, bulk: bool = True,
                   second_thread: bool | None = None) -> dict[str, list[tuple[Any, ...]]]:
    """The same tables rebuilt from the journal in a private memory database
    (``bulk=False``: every event applied one by one, as live commands do;
    ``second_thread``: whether folds set aside are written by a second
    thread, default: when the machine has two cores)."""
    mem, _ = k._projector.build_in_memory(k._db, bulk=bulk, second_thread=second_thread)
    try:
        out = {}
        for names in k._projector.tables.values():
            for t in names:
                out[t] = sorted(mem.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr)
        return out
    finally:
        mem.close()


def sha256(path: Any) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def listing(directory: Any) -> dict[str, str]:
    """Every file of a directory with its sha256 (what 'untouched' means)."""
    import os

    return {name: sha256(os.path.join(directory, name)) for name in sorted(os.listdir(directory))}


@contextmanager
def read_only_place(path: Any) -> Iterator[None]:
    """Make a file or directory read-only for this process, root included:
    ``chattr +i`` where root ignores permission bits, chmod otherwise. Checks
    that it worked, so a test cannot pass without the condition it claims."""
    import os
    import subprocess

    path = str(path)
    is_dir = os.path.isdir(path)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", path], check=True)
        undo = ["chattr", "-i", path]
    else:
        mode = os.stat(path).st_mode
        os.chmod(path, 0o555 if is_dir else 0o444)
        undo = None
    try:
        probe = os.path.join(path, ".probe") if is_dir else path
        try:
            with open(probe, "a"):
                pass
        except OSError:
            pass
        else:
            raise AssertionError(f"{path} is still writable")
        yield
    finally:
        if undo is not None:
            subprocess.run(undo, check=True)
        else:
            os.chmod(path, mode)


@contextmanager
def slow_sync_vfs(seconds: float) -> Iterator[str]:
    """A VFS whose xSync sleeps ``seconds`` first: a disk where fsync costs
    milliseconds (a cloud volume, a consumer SSD). Yields its name."""
    import time
    import uuid

    import apsw

    class File(apsw.VFSFile):
        def xSync(self, flags: int) -> None:
            time.sleep(seconds)
            super().xSync(flags)

    class VFS(apsw.VFS):
        def __init__(self, name: str) -> None:
            super().__init__(name, "")

        def xOpen(self, name: Any, flags: Any) -> apsw.VFSFile:
            return File("", name, flags)

    name = f"slow-sync-{uuid.uuid4().hex[:8]}"
    vfs = VFS(name)
    try:
        yield name
    finally:
        vfs.unregister()


def fill(k: eventkernel.Kernel, n: int, seed: int = 1) -> None:
    """``n`` mixed commands over several domains, one transaction each."""
    rng = random.Random(seed)
    sessions = [k.sessions.create("app", f"u{i}").session_id for i in range(3)]
    for i in range(n):
        r = rng.random()
        if r < 0.3:
            k.work.enqueue(f"task-{rng.randrange(5)}", {"i": i, "text": "x" * rng.randrange(200)})
        elif r < 0.45:
            item = k.work.claim("w", lease_ms=60_000)
            if item is not None:
                k.work.complete(item.work_item_id, item.lease_holder, item.token, output={"ok": i})
        elif r < 0.65:
            k.memory.put(f"user:{rng.randrange(4)}", f"k{rng.randrange(6)}", {"v": i})
        elif r < 0.7:
            ns, key = f"user:{rng.randrange(4)}", f"k{rng.randrange(6)}"
            if k.memory.get(ns, key) is not None:
                k.memory.delete(ns, key)
        elif r < 0.85:
            k.sessions.append_event(rng.choice(sessions), actor="user", content={"t": i}, state_delta={"n": i})
        else:
            k.checkpoints.record(f"task-{rng.randrange(5)}", "llm_response", {"i": i})


@contextmanager
def connection_lost_at_commit(url: str, when: str, schema: str = "eventkernel") -> Iterator[None]:
    """While in the block, a COMMIT on PostgreSQL of a journal row matching
    `when` (an SQL condition on NEW) loses its connection: a deferred trigger
    terminates its own backend while the server runs the COMMIT, so the
    transaction rolls back and the client hears nothing. Deterministic, unlike
    killing the backend from outside, which races with the sending of the
    rows and may hit them instead of the COMMIT."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"""
            CREATE FUNCTION {schema}.die_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_terminate_backend(pg_backend_pid());
                PERFORM pg_sleep(5);  -- where the termination is taken
                RETURN NULL;
            END $$""")
        admin.execute(f"""
            CREATE CONSTRAINT TRIGGER die_at_commit AFTER INSERT ON {schema}.journal
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
            WHEN ({when}) EXECUTE FUNCTION {schema}.die_at_commit()""")
    try:
        yield
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"DROP TRIGGER die_at_commit ON {schema}.journal")
            admin.execute(f"DROP FUNCTION {schema}.die_at_commit()")


class AnswerLost:
    """A TCP proxy in front of the suite's PostgreSQL server that, once armed,
    lets the next COMMIT through and loses its answer: the server commits,
    then both sides of that connection are closed before the client hears
    anything (a network fault or a failover at the worst moment). Every
    other connection, and that one before its COMMIT, is relayed as is.

        with AnswerLost(pg_url) as proxy:
            k = eventkernel.open(proxy.url)
            proxy.arm()          # the next COMMIT's answer is lost
    """

    _IDLE = b"Z\x00\x00\x00\x05I"  # ReadyForQuery, idle: the transaction is over (here: committed)

    def __init__(self, url: str) -> None:
        import socket
        import urllib.parse

        parts = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        self._socket_path = f"{query.pop('host')}/.s.PGSQL.5432"
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        port = self._listener.getsockname()[1]
        user = query.pop("user", "")
        self.url = urllib.parse.urlunsplit(("postgresql", f"{user}@127.0.0.1:{port}", parts.path,
                                            urllib.parse.urlencode(query), ""))
        self._armed = threading.Event()
        self.lost = threading.Event()  # set once an answer was lost
        self._threads: list[threading.Thread] = []
        self._pairs: list[tuple[Any, Any]] = []

    def arm(self) -> None:
        self.lost.clear()
        self._armed.set()

    def __enter__(self) -> AnswerLost:
        self._start(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self._close(self._listener)  # (a shutdown wakes the accept)
        for pair in self._pairs:
            self._close(*pair)
        for t in self._threads:
            t.join(5)

    def _start(self, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    @staticmethod
    def _close(*sockets: Any) -> None:
        import socket

        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self._socket_path)
            self._pairs.append((client, upstream))
            doomed = threading.Event()
            self._start(self._up, client, upstream, doomed)
            self._start(self._down, upstream, client, doomed)

    def _up(self, client: Any, upstream: Any, doomed: threading.Event) -> None:
        try:
            while data := client.recv(65536):
                if self._armed.is_set() and b"COMMIT\x00" in data:
                    self._armed.clear()
                    doomed.set()
                upstream.sendall(data)
        except OSError:
            pass
        self._close(client, upstream)

    def _down(self, upstream: Any, client: Any, doomed: threading.Event) -> None:
        seen = b""
        try:
            while data := upstream.recv(65536):
                if doomed.is_set():
                    if self._IDLE in seen + data:  # the COMMIT is done: its answer goes nowhere
                        self.lost.set()
                        break
                    seen = (seen + data)[-len(self._IDLE):]  # (a marker split between two chunks)
                    continue  # (held back: the answers before it would tell the client too much)
                client.sendall(data)
        except OSError:
            pass
        self._close(client, upstream)


def deaf(k: eventkernel.Kernel) -> eventkernel.Kernel:
    """Stop the thread that follows the server for ``k``: its replica then
    learns of other processes' commits only when it catches up (as when a
    notification has not arrived yet, every time)."""
    replica = k._replica
    assert replica is not None and replica._follower is not None
    replica._stop.set()
    replica.pg.interrupt()
    replica._follower.join(10)
    assert not replica._follower.is_alive()
    return k
