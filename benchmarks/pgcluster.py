"""A throwaway PostgreSQL cluster for the tests and the benchmarks: ``initdb`` into a temporary
folder, a server on a unix socket there (no TCP port), stopped and removed
at the end. Needs the PostgreSQL server binaries (``initdb``, ``pg_ctl``,
``postgres``): on PATH, under ``/usr/lib/postgresql/*/bin`` (Debian's
packages), or in ``$EVENTKERNEL_PG_BIN``. As root, the server runs as the
``postgres`` user (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid

USER = "eventkernel"


def binaries() -> str:
    """The folder holding initdb and pg_ctl; a clear error when there is none."""
    candidates = [os.environ.get("EVENTKERNEL_PG_BIN", "")]
    found = shutil.which("pg_ctl")
    if found:
        candidates.append(os.path.dirname(os.path.realpath(found)))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    for folder in candidates:
        if folder and all(os.access(os.path.join(folder, b), os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            return folder
    raise RuntimeError(
        "the PostgreSQL tests need the PostgreSQL server binaries (initdb, pg_ctl, postgres): install the "
        "`postgresql` package (Debian: apt-get install postgresql) or set EVENTKERNEL_PG_BIN to their folder"
    )


class Cluster:
    def __init__(self) -> None:
        self.bin = binaries()
        self.root = tempfile.mkdtemp(prefix="ekpg-")  # short: a socket path has at most 107 bytes
        self.data = os.path.join(self.root, "data")
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", USER, "--no-sync", "-E", "UTF8", "--locale=C")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        cmd = [os.path.join(self.bin, tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> None:
        """Start the server (durable settings: fsync and synchronous_commit on)."""
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.root, "log"), "-w", "-t", "60",
                  "-o", f"-k {self.root} -c listen_addresses='' -c max_connections=200", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``mode="immediate"`` is a crash (no shutdown checkpoint)."""
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql:///{dbname}?host={self.root}&user={USER}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


_shared: Cluster | None = None


def shared() -> Cluster:
    """One cluster for the whole process, started on first use and stopped at exit."""
    global _shared
    if _shared is None:
        import atexit

        _shared = Cluster()
        atexit.register(_shared.close)
    return _shared
