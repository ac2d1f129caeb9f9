"""Noticing another process's commit to a journal without polling SQLite.

SQLite tells a process nothing when another one commits. On Linux, a
commit writes the journal's -wal file, and inotify reports that at once and
costs nothing while nothing happens; :class:`FileChanges` wraps it (through
ctypes: the standard library has no binding). Elsewhere, or where inotify
is unavailable, :class:`FileChanges` is None and the kernel polls instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
import sys

_IN_MODIFY = 0x00000002
_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_CLOEXEC = 0o2000000
_IN_NONBLOCK = 0o4000
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then the name)


class FileChanges:
    """Reports writes to one file (created, modified, replaced), watching its
    directory so that the file may come and go."""

    def __init__(self, path: str) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._name = os.fsencode(os.path.basename(path))
        fd = libc.inotify_init1(_IN_CLOEXEC | _IN_NONBLOCK)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        directory = os.fsencode(os.path.dirname(os.path.abspath(path)))
        if libc.inotify_add_watch(fd, directory, _IN_MODIFY | _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE) < 0:
            errno = ctypes.get_errno()
            os.close(fd)
            raise OSError(errno, "inotify_add_watch failed")
        self.fd = fd

    def wait(self, timeout_s: float) -> bool:
        """Block until the file is written or ``timeout_s`` passes; whether it was written."""
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        if not ready:
            return False
        try:
            data = os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return False
        offset = 0
        hit = False
        while offset + _EVENT.size <= len(data):
            _, _, _, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size: offset + _EVENT.size + length].rstrip(b"\0")
            hit = hit or name == self._name
            offset += _EVENT.size + length
        return hit

    def close(self) -> None:
        os.close(self.fd)


def watch(path: str) -> FileChanges | None:
    """A FileChanges for ``path``, or None where the platform has no inotify."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return FileChanges(path)
    except OSError:
        return None
