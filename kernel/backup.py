"""Online backup and restore of a journal file.

``k.backup(path)`` copies the journal through SQLite's backup API, in one
step from one read snapshot, so writers keep writing while it runs; the copy
appears at ``path`` only once complete and synced, and is verified.
``eventkernel.restore(backup, path)`` puts a backup in place of a journal
that is not open, unless that would lose or contradict what the journal holds.
"""

from __future__ import annotations

import os
import secrets

import apsw

from eventkernel.errors import InvalidArgument, JournalBusy, JournalCorrupt, JournalError, NotAJournal
from eventkernel.validate import check_bool, check_text


def fsync(path: str) -> None:
    """Sync a file or a directory to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def link_new(where: str, tmp: str, path: str) -> None:
    """Give the complete file ``tmp`` the name ``path``, refusing if that
    exists, even if it appeared a moment ago (a hard link never replaces)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise InvalidArgument(f"{where} refused: {path!r} already exists") from None
    except OSError:  # a file system without hard links
        if os.path.lexists(path):
            raise InvalidArgument(f"{where} refused: {path!r} already exists") from None
        os.rename(tmp, path)


def remove_files(*paths: str) -> None:
    """Remove these files (those already gone are fine)."""
    for p in paths:
        try:
            os.remove(p)
        except FileNotFoundError:
            pass


def _target(where: str, path: str) -> tuple[str, str]:
    check_text(where, "path", path, max_len=4096)
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise InvalidArgument(f"{where} refused: the directory {directory!r} does not exist")
    return path, directory


def copy_into(where: str, source: apsw.Connection, path: str, *, replace: bool = False) -> None:
    """Copy the main database of ``source`` (one read snapshot: a single
    backup step) to ``path``: written under a temporary name beside it,
    synced, then linked into place (``replace``: renamed over it)."""
    path, directory = _target(where, path)
    if not replace and os.path.lexists(path):
        raise InvalidArgument(f"{where} refused: {path!r} already exists")
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        dest = apsw.Connection(tmp)
        try:
            with dest.backup("main", source, "main") as step:
                step.step(-1)  # every page at once: one consistent snapshot of the source
            dest.execute("PRAGMA journal_mode=WAL")
            dest.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            dest.close()
        fsync(tmp)
        if replace:
            os.replace(tmp, path)
        else:
            link_new(where, tmp, path)
        fsync(directory)
    except apsw.Error as e:
        raise JournalError(f"{where} failed while copying to {path!r}: {e}") from e
    except OSError as e:
        raise JournalError(f"{where} failed while writing {path!r}: {e}") from e
    finally:
        remove_files(tmp, tmp + "-wal", tmp + "-shm", tmp + "-journal")


def _closed_by_everyone(where: str, path: str) -> None:
    """Raise JournalBusy if any connection has the file open (it holds a
    lock that an exclusive one waits for); otherwise fold its WAL into it."""
    conn = apsw.Connection(path)
    try:
        conn.setbusytimeout(0)
        try:
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.execute("BEGIN EXCLUSIVE")
            conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()
            conn.execute("COMMIT")
        except apsw.BusyError:
            raise JournalBusy(f"{where} refused: {path!r} is open (another connection holds it); close it first") from None
        except apsw.Error:
            return  # not a database SQLite can read: nothing to fold in
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def restore(backup: str, path: str, *, force: bool = False) -> int:
    """Put the journal ``backup`` at ``path``; returns the head it holds.

    The backup must verify. Refused when ``path`` is open by any connection
    (JournalBusy). Unless ``force``: refused when ``path`` is not a journal,
    when its head is past the backup's, or when its chain differs from the
    backup's (it is not a prefix of it) — a restore then would lose events.
    A ``-wal``/``-shm`` beside ``path`` is folded in or removed first, so a
    stale one never meets the restored file."""
    try:
        return _restore(backup, path, force)
    except apsw.Error as e:
        raise JournalError(f"restore failed: {type(e).__name__}: {e}") from e


def _restore(backup: str, path: str, force: bool) -> int:
    from eventkernel.kernel import open as open_kernel

    where = "restore"
    check_bool(where, "force", force)
    backup_path, _ = _target(where, backup)
    path, _ = _target(where, path)
    if not os.path.isfile(backup_path):
        raise InvalidArgument(f"{where} refused: no backup at {backup_path!r}")
    if backup_path == path:
        raise InvalidArgument(f"{where} refused: the backup and the target are the same file")
    with open_kernel(backup_path, read_only=True) as b:
        report = b.verify()
        if not report.ok:
            raise JournalCorrupt(f"{where} refused: the backup {backup_path!r} does not verify: {report.problems[:3]}")
        head = report.head
        if os.path.lexists(path):
            _closed_by_everyone(where, path)
            if not force:
                _check_prefix(where, b, path, head, open_kernel)
    # Nothing of the old file's WAL may meet the restored one (SQLite would
    # replay its frames into it): it was folded in above, or is not ours.
    remove_files(path + "-wal", path + "-shm")
    source = apsw.Connection(backup_path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        copy_into(where, source, path, replace=True)
    finally:
        source.close()
    return head


def _check_prefix(where: str, backup: object, path: str, head: int, open_kernel: object) -> None:
    try:
        with open_kernel(path, read_only=True) as target:  # type: ignore[operator]
            mine = target.head
            if mine > head:
                raise InvalidArgument(
                    f"{where} refused: {path!r} holds {mine} events, past the backup's {head}; "
                    "restoring would lose the later ones (force=True to restore anyway)")
            if mine:
                (ours,) = target.read(after=mine - 1, limit=1)
                (theirs,) = backup.read(after=mine - 1, limit=1)  # type: ignore[attr-defined]
                if ours.hash != theirs.hash:
                    raise InvalidArgument(
                        f"{where} refused: {path!r} differs from the backup at position {mine} (another "
                        "history); restoring would replace it (force=True to restore anyway)")
    except NotAJournal:
        raise InvalidArgument(f"{where} refused: {path!r} is not a journal (force=True to replace it)") from None
