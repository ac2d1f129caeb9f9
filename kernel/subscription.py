"""Following the journal as it grows: subscriptions and durable consumers.

A :class:`Subscription` catches up from a position, then yields new events
as they commit — from this process or any other process on the file (on
Linux noticed at once through inotify, elsewhere within ``poll_ms``) — in
position order, with no gap and
no duplicate. A :class:`Consumer` is a named subscription whose position is
kept in the file and moves in the same transaction as the commands its
handler issues: in-kernel effects happen exactly once, external effects at
least once.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from eventkernel import journal
from eventkernel.connection import Database, Watch
from eventkernel.errors import ConcurrencyConflict, InvalidArgument
from eventkernel.journal import LogEntry, Recorded
from eventkernel.validate import check_int, check_optional_text, check_text

if TYPE_CHECKING:
    from eventkernel.kernel import Kernel

_PAGE = 1000
_CONSUMERS_DDL = (
    "CREATE TABLE IF NOT EXISTS consumer_positions ("
    " name TEXT PRIMARY KEY, position INTEGER NOT NULL, updated_at INTEGER NOT NULL) STRICT"
)


T = TypeVar("T")


class _Follow(Generic[T]):
    """An iterator of every event after ``after`` that matches the filters,
    then each new one as it commits. ``close()`` (from any thread) ends it;
    closing the kernel raises KernelClosed in a thread waiting on it. Also a
    context manager."""

    def __init__(
        self,
        db: Database,
        after: int,
        *,
        stream: str | None = None,
        stream_prefix: str | None = None,
        types: Sequence[str] = (),
        correlation_id: str | None = None,
        poll_ms: int = 10,
    ) -> None:
        where = "subscribe"
        check_int(where, "after", after, minimum=0)
        check_optional_text(where, "stream", stream, max_len=journal.MAX_STREAM_LEN)
        check_optional_text(where, "stream_prefix", stream_prefix, max_len=journal.MAX_STREAM_LEN)
        check_optional_text(where, "correlation_id", correlation_id)
        check_int(where, "poll_ms", poll_ms, minimum=1, maximum=60_000)
        self._db = db
        self.position = after  # every event up to here was delivered (or did not match)
        self._filters: dict[str, Any] = {"stream": stream, "stream_prefix": stream_prefix, "types": tuple(types),
                                         "correlation_id": correlation_id}
        self._poll_s = poll_ms / 1000
        self._buffer: deque[T] = deque()
        self._closed = False

    def __iter__(self) -> _Follow[T]:
        return self

    def __next__(self) -> T:
        while True:
            if self._buffer:
                return self._buffer.popleft()
            if self._closed:
                raise StopIteration
            watch = self._db.watch("subscribe")  # before the read: a commit between the two still wakes us
            if not self.poll():
                self._wait(watch, None)

    def poll(self) -> bool:
        """Fetch what committed since the last fetch (without waiting); whether anything came."""
        self._db.check("subscribe")
        with self._db.read("subscribe") as conn:
            head = journal.head(conn)[0]
            if head <= self.position:
                return False
            rows = journal.read_rows(conn, after=self.position, until=head, page=_PAGE, **self._filters)
            self._buffer.extend(self._convert(row) for row in rows)
        self.position = head
        return bool(self._buffer)

    def _convert(self, row: Sequence[Any]) -> T:
        raise NotImplementedError

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until something may have committed, ``timeout_s`` passes or
        the subscription closes; whether something did."""
        watch = self._db.watch("subscribe")
        with self._db.read("subscribe") as conn:
            if journal.head(conn)[0] > self.position:
                return True
        return self._wait(watch, timeout_s)

    def _wait(self, watch: Watch, timeout_s: float | None) -> bool:
        if self._closed:
            return False
        return watch.wait(3600.0 if timeout_s is None else timeout_s, poll_s=self._poll_s, stop=lambda: self._closed)

    def close(self) -> None:
        """End the iteration (from any thread): a waiting ``next()`` wakes and stops."""
        self._closed = True
        with self._db.commits:
            self._db.commits.notify_all()

    def __enter__(self) -> _Follow[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Subscription(_Follow[Recorded]):
    """``k.subscribe()``: the events as :class:`Recorded` (decoded into their
    Event classes)."""

    def _convert(self, row: Sequence[Any]) -> Recorded:
        return journal.record_from_row(row)


class LogFollower(_Follow[LogEntry]):
    """``k.follow()``: the events as :class:`LogEntry` rows (their JSON
    decoded, for any event type, known to this process or not), what
    ``eventkernel log --follow`` prints."""

    def _convert(self, row: Sequence[Any]) -> LogEntry:
        return journal.entry_from_row(row)


class Consumer:
    """A durable, named reader of the journal. Its position is bookkeeping in
    the file (``consumer_positions``; on PostgreSQL, the server's table of
    that name, shared by every process), like a projection's, not an event; it
    moves in the same transaction as the commands the handler issues on the
    kernel, so those happen exactly once per event even across a kill -9.
    What the handler does outside the kernel happens at least once: an
    event whose transaction did not commit is handled again."""

    def __init__(
        self, kernel: Kernel, db: Database, clock: Callable[[], int], name: str, *, stream: str | None = None,
        types: Sequence[str] = (), correlation_id: str | None = None,
    ) -> None:
        check_text("consumer", "name", name)
        self.name = name
        self._kernel = kernel
        self._db = db
        self._clock = clock
        self._filters: dict[str, Any] = {"stream": stream, "types": tuple(types), "correlation_id": correlation_id}
        self._stop = threading.Event()

    @property
    def position(self) -> int:
        """The last position handled (0 before the first)."""
        if self._db.shared is not None:  # a replica: the position is the server's
            return self._db.shared.consumer_position(self.name)
        with self._db.read("consumer.position") as conn:
            # A statement, not table_exists(): it sees a table another connection just created.
            if conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 'consumer_positions'").fetchone() is None:
                return 0
            row = conn.execute("SELECT position FROM consumer_positions WHERE name = ?", (self.name,)).fetchone()
        return 0 if row is None else int(row[0])

    def handle(self, handler: Callable[[Recorded], object], *, limit: int | None = None) -> int:
        """Handle the events committed after the position, each in one
        transaction with the position's move: the handler's commands on the
        kernel join it. A handler that raises undoes its event's commands
        and leaves the position where it was (the error propagates).
        Returns how many events were handled."""
        if not callable(handler):
            raise InvalidArgument(f"consumer.handle refused: handler must be callable, got {handler!r:.60}")
        if limit is not None:
            check_int("consumer.handle", "limit", limit, minimum=0)
        if self._db.shared is not None:  # a replica: first what the server holds (other processes' events)
            self._db.shared.pull()
        done = 0
        while limit is None or done < limit:
            start = self.position
            with self._db.read("consumer.handle") as conn:
                head = journal.head(conn)[0]
                batch = [
                    journal.record_from_row(row)
                    for row in journal.read_rows(conn, after=start, until=head, limit=_PAGE, **self._filters)
                ]
            if not batch:
                if head > start:
                    self._advance_to(start, head)  # nothing matched: move past it
                return done
            for record in batch:
                if limit is not None and done >= limit:
                    return done
                with self._kernel.transaction():
                    handler(record)
                    self._move(start, record.position)
                start = record.position
                done += 1
            if len(batch) < _PAGE and head > start:
                self._advance_to(start, head)
        return done

    def run(
        self, handler: Callable[[Recorded], object], *, poll_ms: int = 10, idle_timeout_s: float | None = None
    ) -> int:
        """Handle events as they commit until ``stop()`` (from any thread),
        the kernel closes, or nothing arrives for ``idle_timeout_s``.
        Returns how many events were handled."""
        done = 0
        self._stop.clear()
        while not self._stop.is_set():
            watch = self._db.watch("consumer.run")
            handled = self.handle(handler)
            done += handled
            if handled:
                continue
            if not watch.wait(3600.0 if idle_timeout_s is None else idle_timeout_s, poll_s=poll_ms / 1000,
                              stop=self._stop.is_set) and idle_timeout_s is not None:
                break
        return done

    def stop(self) -> None:
        """End ``run()`` after the event in hand."""
        self._stop.set()
        with self._db.commits:
            self._db.commits.notify_all()

    def reset(self, position: int = 0) -> None:
        """Move the position (to handle events again, or to skip some)."""
        check_int("consumer.reset", "position", position, minimum=0)
        with self._db.write("consumer.reset") as conn:
            if self._db.shared is not None:
                self._db.shared.move_consumer(self.name, position, self._clock())
                return
            conn.execute(_CONSUMERS_DDL)
            conn.execute(
                "INSERT INTO consumer_positions (name, position, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
                (self.name, position, self._clock()),
            )

    def _advance_to(self, start: int, position: int) -> None:
        with self._db.write("consumer.handle"):
            self._move(start, position)

    def _move(self, start: int, position: int) -> None:
        """Move from ``start`` to ``position`` inside the open transaction;
        another instance of the same consumer that moved it first makes this
        one's transaction fail (ConcurrencyConflict), its commands undone."""
        shared = self._db.shared
        if shared is not None:  # a replica: the server's position, under its lock
            current = shared.consumer_position(self.name)
            if current != start:
                raise ConcurrencyConflict(f"consumer:{self.name}", start, current)
            shared.move_consumer(self.name, position, self._clock())
            return
        conn = self._db.conn
        conn.execute(_CONSUMERS_DDL)
        row = conn.execute("SELECT position FROM consumer_positions WHERE name = ?", (self.name,)).fetchone()
        current = 0 if row is None else int(row[0])
        if current != start:
            raise ConcurrencyConflict(f"consumer:{self.name}", start, current)
        conn.execute(
            "INSERT INTO consumer_positions (name, position, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
            (self.name, position, self._clock()),
        )

