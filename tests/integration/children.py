"""Programs the integration tests run in child processes.

    python children.py worker DB NAME      claim and complete until the queue is done
    python children.py appender DB SYNC [PREFIX]  append forever, printing each acknowledged id
    python children.py opener DB AT        open a new file at time AT and enqueue once
    python children.py contender DB NAME SEED LEASE_MS
                                           claim, work, heartbeat, pause past the lease,
                                           fail or complete; print each acknowledged completion
"""

from __future__ import annotations

import sys

import eventkernel


def say(*words: object) -> None:
    """Print one line in one write: a child killed while acknowledging leaves
    either the whole line or none of it (``print`` of several words makes one
    write per word when the environment sets PYTHONUNBUFFERED)."""
    sys.stdout.write(" ".join(map(str, words)) + "\n")
    sys.stdout.flush()


def worker(path: str, name: str) -> None:
    done = []
    with eventkernel.open(path, busy_timeout_ms=30_000) as k:
        while True:
            item = k.work.claim(name, lease_ms=60_000)
            if item is None:
                if not k.work.list(status="pending") and not k.work.list(status="in_progress"):
                    break
                continue
            k.work.complete(item.work_item_id, name, item.token, output={"by": name})
            done.append(item.work_item_id)
    say("\n".join(done))


def appender(path: str, synchronous: str, prefix: str = "", threads: str = "1", wal_pages: str = "0") -> None:
    """Append forever, printing each acknowledged command id; with several
    threads on one kernel, their commands share group commits. ``wal_pages``:
    the WAL's bound before a checkpoint (0: the kernel's)."""
    import threading

    with eventkernel.open(path, synchronous=synchronous, busy_timeout_ms=30_000) as k:  # type: ignore[arg-type]
        if int(wal_pages):
            k._db.wal_checkpoint_pages = int(wal_pages)
        say("ready")
        if int(threads) > 1:
            printing = threading.Lock()

            def loop(name: str) -> None:
                n = 0
                while True:
                    n += 1
                    command_id = f"{prefix}t{name}-{n}"
                    k.work.enqueue("crash", {"n": n}, command_id=command_id)
                    with printing:
                        say(command_id)

            workers = [threading.Thread(target=loop, args=(str(t),), daemon=True) for t in range(int(threads))]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            return
        n = 0
        while True:
            n += 1
            if n % 3 == 0:
                # Several commands, one commit: acknowledged together.
                ids = [f"{prefix}{n}-{j}" for j in range(5)]
                with k.transaction():
                    for command_id in ids:
                        k.work.enqueue("crash", {"n": n}, command_id=command_id)
                say(*ids)
            else:
                command_id = f"{prefix}{n}"
                k.work.enqueue("crash", {"n": n}, command_id=command_id)
                say(command_id)


def opener(path: str, start_at: str) -> None:
    """Open a (brand-new) file at a agreed moment, append one event."""
    import time

    while time.time() < float(start_at):
        pass
    with eventkernel.open(path, busy_timeout_ms=30_000) as k:
        k.work.enqueue("open", None)
    say("opened")


def contender(path: str, name: str, seed: str, lease: str, replica: str = "", one_round_trip: str = "") -> None:
    """A worker that misbehaves the ways real ones do: it stalls past its
    lease, heartbeats, fails, and may be killed at any moment by the test.
    ``replica``: its replica file, when ``path`` is a journal on PostgreSQL
    (opened with ``one_round_trip=True`` when that is "1")."""
    import random
    import time

    rng = random.Random(seed)
    lease_ms = int(lease)
    options: dict[str, object] = {"replica": replica} if replica else {}
    if one_round_trip:
        options["one_round_trip"] = True
    with eventkernel.open(path, busy_timeout_ms=30_000, **options) as k:  # type: ignore[arg-type]
        say("ready")
        while True:
            item = k.work.claim(name, lease_ms=lease_ms)
            if item is None:
                if not k.work.list(status="pending") and not k.work.list(status="in_progress"):
                    return
                time.sleep(0.005)
                continue
            token = item.token
            try:
                r = rng.random()
                time.sleep(rng.uniform(0, lease_ms / 4000))
                if r < 0.3:
                    k.work.heartbeat(item.work_item_id, name, token, lease_ms=lease_ms)
                    time.sleep(rng.uniform(0, lease_ms / 2000))
                elif r < 0.45:
                    time.sleep(lease_ms * 1.5 / 1000)  # a stall longer than the lease
                if r > 0.93:
                    k.work.fail(item.work_item_id, name, token, "flaky tool", retryable=r < 0.97)
                    continue
                k.work.complete(item.work_item_id, name, token, output={"by": name, "token": token})
                say("completed", item.work_item_id, token)
            except eventkernel.LeaseNotHeld:
                say("fenced", item.work_item_id, token)
            except eventkernel.TerminalState:
                say("fenced", item.work_item_id, token)


def eraser(path: str, subjects: str) -> None:
    """Erase the memory namespaces user:0 … user:N-1 one after the other,
    printing each as its erasure returns (the parent kills it meanwhile)."""
    with eventkernel.open(path) as k:
        say("ready")
        for i in range(int(subjects)):
            k.erase(stream_prefix=f"memory:user:{i}/", reason="crash test")
            say("erased", i)


def compactor(path: str, archive: str, before: str) -> None:
    """Compact the journal into ``archive`` (the parent kills it meanwhile)."""
    with eventkernel.open(path, snapshot_every=0) as k:
        say("ready")
        k.compact(before=int(before), archive=archive)
        say("compacted")


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    {"worker": worker, "appender": appender, "opener": opener, "contender": contender,
     "eraser": eraser, "compactor": compactor}[role](*args)
