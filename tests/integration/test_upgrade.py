"""A journal written by eventkernel 0.1.0 (tests/fixtures/v0_1_0.sqlite, with
what 0.1.0 reported about it in v0_1_0.json) opens read-only as it is, and
its first writable open migrates it: marked as ours, re-chained over payload
digests with its old head kept, projections rebuilt, everything verified.
Every later version must pass this test unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import apsw
import pytest

import eventkernel

from support import sha256

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
EXPECTED = json.loads((FIXTURES / "v0_1_0.json").read_text())
OLD_HEAD, OLD_HASH = EXPECTED["head"], EXPECTED["head_hash"]
# Columns renamed since 0.1.0 (one name per concept: instants end in _at, who acted is the actor).
RENAMED = {"last_update_time": "updated_at", "timestamp": "recorded_at", "author": "actor",
           "first_seen": "first_seen_at", "last_seen": "last_seen_at"}


@pytest.fixture
def old_file(tmp_path):
    path = tmp_path / "v0_1_0.sqlite"
    shutil.copy(FIXTURES / "v0_1_0.sqlite", path)
    return str(path)


def _events(k):
    return [(e.position, e.stream, e.version, e.type, e.schema, e.data, e.meta, e.event_id, e.correlation_id,
             e.recorded_at) for e in k.log()]


def test_the_fixture_is_what_0_1_0_wrote():
    conn = apsw.Connection(f"file:{FIXTURES / 'v0_1_0.sqlite'}?mode=ro&immutable=1", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    assert (conn.pragma("application_id"), conn.pragma("user_version")) == (0, 0)
    assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone() == (2,)
    assert conn.execute("SELECT position, hex(hash) FROM journal ORDER BY position DESC LIMIT 1").fetchone() == (
        OLD_HEAD, OLD_HASH.upper())
    conn.close()


def test_a_read_only_open_reads_a_0_1_0_file_as_it_is(old_file):
    before = sha256(old_file)
    with eventkernel.open(old_file, read_only=True) as k:
        assert k.head == OLD_HEAD
        report = k.verify(anchor=(OLD_HEAD, OLD_HASH))
        assert report.ok, report.problems
        assert report.head_hash == OLD_HASH  # the chain is still 0.1.0's
        assert any("work_items" in note and "writable open" in note for note in report.notes)
        assert len(list(k.log())) == OLD_HEAD
        with pytest.raises(eventkernel.ReadOnly):
            k.work.enqueue("t", None)
    assert sha256(old_file) == before


def test_the_first_writable_open_migrates_a_0_1_0_file(old_file):
    with eventkernel.open(old_file, read_only=True) as k:
        events = _events(k)
    with eventkernel.open(old_file) as k:
        conn = k._db.conn
        assert (conn.pragma("application_id"), conn.pragma("user_version")) == (0x45764B6E, 7)
        assert _events(k) == events  # every event as it was; only the chain hashes changed
        report = k.verify()
        assert report.ok, report.problems
        assert report.head == OLD_HEAD and report.head_hash != OLD_HASH
        (history,) = conn.execute("SELECT position, old_format, old_head_hash, new_format, new_head_hash "
                                  "FROM chain_history").fetchall()
        assert history == (OLD_HEAD, 1, bytes.fromhex(OLD_HASH), 2, bytes.fromhex(report.head_hash))
        # an anchor kept from 0.1.0 still checks, and so does one of the new chain
        assert k.verify(anchor=(OLD_HEAD, OLD_HASH)).ok
        assert k.verify(anchor=(OLD_HEAD, report.head_hash)).ok
        wrong = k.verify(anchor=(OLD_HEAD, "ab" * 32))
        assert not wrong.ok and wrong.first_bad_position == OLD_HEAD
        for table, old in EXPECTED["tables"].items():
            columns, rows = k.table(table)
            renamed = [RENAMED.get(c, c) for c in old["columns"]]
            assert set(renamed) <= set(columns), table
            keep = [columns.index(c) for c in renamed]
            got = [[r[i].hex() if isinstance(r[i], bytes) else r[i] for i in keep] for r in rows]
            assert got == old["rows"], table
        # and it works as a journal of today
        item = k.work.claim("w9", lease_ms=1_000)
        assert item is not None and item.lease_ms == 1_000
        k.memory.put("user:alice:prefs", "lang", "de")
        assert k.verify().ok
        head = k.head
    with eventkernel.open(old_file) as k:  # migrated once
        assert k._db.conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (7,)
        assert k.head == head and k.verify(anchor=(OLD_HEAD, OLD_HASH)).ok


def test_a_0_1_0_file_whose_chain_is_broken_is_not_migrated_over_the_break(old_file):
    conn = apsw.Connection(old_file)
    conn.execute("DROP TRIGGER journal_no_update; UPDATE journal SET data = '{\"text\":\"forged\",\"n\":1}' "
                 "WHERE position = 1")
    conn.close()
    before = sha256(old_file)
    with pytest.raises(eventkernel.JournalCorrupt, match="hash chain breaks at position 1"):
        eventkernel.open(old_file)
    assert sha256(old_file) == before
    with eventkernel.open(old_file, read_only=True) as k:
        report = k.verify()
        assert not report.ok and report.first_bad_position == 1
