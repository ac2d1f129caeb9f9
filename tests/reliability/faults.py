"""SQLite VFS shims for the reliability tests.

``FaultVFS`` inherits the platform's VFS and fails the Nth xWrite, xSync,
xTruncate or xRead with a chosen SQLite error code, once or from then on.

``RecordingVFS`` inherits it too and records every write, truncate, sync
and unlink, in order, with the test's markers between them.
``crash_image`` turns that record into the files a machine would find after
a power cut at any point: what each file's last sync made durable, plus the
later writes dropped, kept, or torn at sector size.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw

SECTOR = 512


def _name_of(name: Any) -> str | None:
    if name is None:
        return None
    return name if isinstance(name, str) else name.filename()


@dataclass
class Fault:
    op: str  # write | sync | truncate | read
    n: int  # fail the n-th call of op (1-based) counted from arming
    code: int  # an SQLite (extended) result code
    persistent: bool  # also fail every later call of op


@dataclass
class FaultPlan:
    counts: Counter[str] = field(default_factory=Counter)
    fault: Fault | None = None
    then: Fault | None = None  # armed, counting afresh, once ``fault`` has fired
    fired: int = 0

    def arm(self, fault: Fault | None, then: Fault | None = None) -> None:
        self.counts = Counter()
        self.fault = fault
        self.then = then
        self.fired = 0

    def hit(self, op: str) -> None:
        self.counts[op] += 1
        f = self.fault
        if f is not None and f.op == op:
            seen = self.counts[op]
            if seen == f.n or (f.persistent and seen > f.n):
                self.fired += 1
                if self.then is not None:
                    self.fault, self.then, self.counts = self.then, None, Counter()
                raise apsw.exception_for(f.code)


class FaultVFS(apsw.VFS):
    def __init__(self, name: str, plan: FaultPlan) -> None:
        self.plan = plan
        super().__init__(name, "")

    def xOpen(self, name: Any, flags: list[int]) -> apsw.VFSFile:
        return _FaultFile(self.plan, name, flags)


class _FaultFile(apsw.VFSFile):
    def __init__(self, plan: FaultPlan, name: Any, flags: list[int]) -> None:
        self.plan = plan
        super().__init__("", name, flags)

    def xWrite(self, data: bytes, offset: int) -> None:
        self.plan.hit("write")
        super().xWrite(data, offset)

    def xSync(self, flags: int) -> None:
        self.plan.hit("sync")
        super().xSync(flags)

    def xTruncate(self, newsize: int) -> None:
        self.plan.hit("truncate")
        super().xTruncate(newsize)

    def xRead(self, amount: int, offset: int) -> bytes:
        self.plan.hit("read")
        return super().xRead(amount, offset)  # type: ignore[no-any-return]


# --- power loss -------------------------------------------------------------------


@dataclass
class IoLog:
    """Every write, truncate and sync, in order, with markers between them."""

    ops: list[tuple[Any, ...]] = field(default_factory=list)

    def mark(self, label: Any) -> None:
        self.ops.append(("mark", label))


class RecordingVFS(apsw.VFS):
    def __init__(self, name: str, log: IoLog) -> None:
        self.log = log
        super().__init__(name, "")

    def xOpen(self, name: Any, flags: list[int]) -> apsw.VFSFile:
        return _RecordingFile(self.log, name, flags)

    def xDelete(self, filename: str, syncdir: bool) -> None:
        # An unlink is durable only once the directory is synced, which the
        # platform VFS does itself when asked to (``syncdir``).
        super().xDelete(filename, syncdir)
        self.log.ops.append(("delete", filename, bool(syncdir)))


class _RecordingFile(apsw.VFSFile):
    def __init__(self, log: IoLog, name: Any, flags: list[int]) -> None:
        self.log = log
        self.path = _name_of(name)
        super().__init__("", name, flags)

    def xWrite(self, data: bytes, offset: int) -> None:
        super().xWrite(data, offset)
        if self.path:
            self.log.ops.append(("write", self.path, offset, bytes(data)))

    def xTruncate(self, newsize: int) -> None:
        super().xTruncate(newsize)
        if self.path:
            self.log.ops.append(("truncate", self.path, newsize))

    def xSync(self, flags: int) -> None:
        super().xSync(flags)
        if self.path:
            self.log.ops.append(("sync", self.path))


def _apply(image: bytearray, op: tuple[Any, ...]) -> None:
    if op[0] == "write":
        _, _, offset, data = op
        if len(image) < offset:
            image.extend(bytes(offset - len(image)))
        image[offset:offset + len(data)] = data
    else:  # truncate
        del image[op[2]:]


def _torn(op: tuple[Any, ...], rng: random.Random) -> tuple[Any, ...] | None:
    """A write of which only some sectors reached the disk (None: none did)."""
    if op[0] != "write":
        return op if rng.random() < 0.5 else None
    _, path, offset, data = op
    sectors = [(i, data[i:i + SECTOR]) for i in range(0, len(data), SECTOR)]
    kept = [s for s in sectors if rng.random() < 0.5]
    if not kept:
        return None
    # Keep the chosen sectors; the others keep what the disk held before,
    # which a caller layers underneath by applying sector by sector.
    return ("sectors", path, offset, kept)


def crash_image(log: IoLog, upto: int, mode: str, rng: random.Random) -> dict[str, bytes]:
    """The files after a power cut just before ``log.ops[upto]``.

    What each file's last xSync made durable is there. The writes after it
    are, by ``mode``: ``drop`` all lost, ``keep`` all kept, ``torn`` each one
    lost, kept, or kept in only some of its 512-byte sectors.
    """
    durable: dict[str, bytearray] = {}
    pending: dict[str, list[tuple[Any, ...]]] = {}
    for op in log.ops[:upto]:
        kind = op[0]
        if kind == "mark":
            continue
        path = op[1]
        if kind == "delete":
            if op[2]:  # synced: the file is gone for good
                durable.pop(path, None)
                pending.pop(path, None)
            elif path in durable:
                pending.setdefault(path, []).append(op)
            continue
        durable.setdefault(path, bytearray())
        if kind == "sync":
            for p in pending.pop(path, []):
                if p[0] == "delete":
                    durable[path] = bytearray()
                else:
                    _apply(durable[path], p)
        else:
            pending.setdefault(path, []).append(op)
    out = {}
    for path, image in durable.items():
        image = bytearray(image)
        exists = True
        for op in pending.get(path, []):
            if op[0] == "delete":
                # An unsynced unlink: lost (drop), done (keep), either (torn).
                if mode == "keep" or (mode == "torn" and rng.random() < 0.5):
                    exists, image = False, bytearray()
                continue
            if not exists:
                exists = True  # written again after the unlink: a new file
            if mode == "keep":
                _apply(image, op)
            elif mode == "torn":
                torn = _torn(op, rng)
                if torn is None:
                    continue
                if torn[0] == "sectors":
                    for i, chunk in torn[3]:
                        _apply(image, ("write", path, torn[2] + i, chunk))
                else:
                    _apply(image, torn)
        if exists:
            out[path] = bytes(image)
    return out


def write_image(files: dict[str, bytes], original: str, target: str) -> None:
    """Lay a crash image out under ``target`` (the database path): its -wal
    beside it. The -shm is left out, as a reboot would leave it stale; SQLite
    rebuilds it from the WAL."""
    for path, data in files.items():
        if path.endswith("-shm"):
            continue
        suffix = path[len(original):] if path.startswith(original) else None
        if suffix is None:
            continue
        Path(target + suffix).write_bytes(data)
    if not os.path.exists(target):
        Path(target).write_bytes(b"")

