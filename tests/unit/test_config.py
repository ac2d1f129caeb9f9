"""Configurations: typed values, versions, as_of, and secrets that are
encrypted with the user's key and never appear in clear."""

from __future__ import annotations

import pytest

import eventkernel
from eventkernel import generate_key
from eventkernel.errors import InvalidArgument, NotFound, SecretKeyError
from eventkernel.secrets import ENV, key_id

from support import refused, snapshot

BOTH_ENGINES = True  # the tests taking ``k`` or ``journal`` run on a file and on PostgreSQL

KEY = generate_key()


@pytest.fixture
def ks(journal, clock):
    with journal(clock=clock, secret_key=KEY) as k:
        yield k


def test_types_are_inferred_checked_and_changed_only_on_purpose(k):
    assert k.config.set("pool.size", 8).value_type == "integer"
    with refused(k, InvalidArgument, r"'pool.size' holds integer values and the value given \(str 'x'\) is not"):
        k.config.set("pool.size", "x")
    with refused(k, InvalidArgument, "is not of type boolean"):
        k.config.set("pool.size", 3, value_type="boolean")
    assert k.config.set("pool.size", "auto", value_type="string").value == "auto"
    assert k.config.set("flag", True).value_type == "boolean"
    with refused(k, InvalidArgument, "holds boolean values"):
        k.config.set("flag", 1)  # 1 is not a boolean
    assert k.config.set("limits", {"rpm": 60}).value_type == "json"
    with refused(k, InvalidArgument, "value_type must be one of"):
        k.config.set("x", 1, value_type="int")


def test_a_float_key_reads_back_floats(k):
    k.config.set("ratio", 0.5)
    k.config.set("ratio", 2)  # an int fits a float key
    assert k.config.get("ratio") == 2.0 and type(k.config.get("ratio")) is float
    assert k.config.entry("ratio").value == 2.0


def test_every_change_is_a_version_and_as_of_reads_the_past(k):
    k.config.set("model", "small", description="default model")
    p1 = k.head
    k.config.set("model", "large")  # description kept
    before = snapshot(k)
    k.config.set("model", "large")  # the same: nothing written
    assert snapshot(k) == before
    k.config.delete("model")
    assert k.config.get("model") is None and k.config.get("model", "dflt") == "dflt"
    assert k.config.get("model", as_of=p1) == "small"
    assert k.config.get("model", as_of=p1 - 1) is None
    history = k.config.history("model")
    assert [(v.version, v.operation, v.value, v.description) for v in history] == [
        (1, "set", "small", "default model"), (2, "set", "large", "default model"), (3, "delete", None, None)]
    with refused(k, NotFound, "no configuration key 'model'"):
        k.config.delete("model")
    with k.at(p1) as view:
        assert view.config.get("model") == "small"


def test_list_by_prefix(k):
    for key in ("db.host", "db.port", "dbx", "log.level"):
        k.config.set(key, 1)
    assert [e.key for e in k.config.list("db.")] == ["db.host", "db.port"]
    assert [e.key for e in k.config.list(limit=2)] == ["db.host", "db.port"]
    assert len(k.config.list()) == 4


def test_a_secret_is_stored_encrypted_and_read_with_the_key(ks):
    entry = ks.config.set("db.password", "hunter2-in-clear", secret=True, description="primary db")
    assert (entry.value, entry.is_secret) == ("***", True)
    assert ks.config.get("db.password") == "hunter2-in-clear"
    assert ks.config.list()[0].value == "***"
    assert [v.value for v in ks.config.history("db.password")] == ["***"]
    stored = ks._db.conn.execute("SELECT value, ciphertext, key_id FROM configurations").fetchone()
    assert stored[0] == '"***"' and stored[1].startswith(f"ek1:{key_id(KEY)}:") and stored[2] == key_id(KEY)
    data = ks._db.conn.execute("SELECT data FROM journal").fetchone()[0]
    assert "hunter2" not in data and '"value":null' in data
    assert ks.config.key_id() == key_id(KEY)


def test_secrets_without_the_key_are_refused(journal, clock, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    with journal(clock=clock) as k:
        with refused(k, SecretKeyError, r"'api' is secret and this kernel has no secret key .*eventkernel keygen"):
            k.config.set("api", "token-123", secret=True)
    with journal(clock=clock, secret_key=KEY) as k:
        k.config.set("api", "token-123", secret=True)
    with journal(clock=clock) as k, pytest.raises(SecretKeyError, match="no secret key to decrypt it"):
        k.config.get("api")
    other = generate_key()
    with journal(clock=clock, secret_key=other) as k:
        with pytest.raises(SecretKeyError, match=f"encrypted under secret key {key_id(KEY)}.*holds {key_id(other)}"):
            k.config.get("api")
        with refused(k, SecretKeyError, f"encrypted under key {key_id(KEY)} and this kernel encrypts with key"):
            k.config.set("api", "token-456", secret=True)


def test_the_environment_supplies_the_key(journal, clock, monkeypatch):
    monkeypatch.setenv(ENV, f"{generate_key()},{KEY}")  # a list: the first encrypts, the others decrypt
    with journal(clock=clock, secret_key=KEY) as k:
        k.config.set("api", "t", secret=True)
    with journal(clock=clock) as k:
        assert k.config.get("api") == "t"


def test_a_key_that_is_not_one_is_refused_without_echoing_it(journal):
    for bad in ("not-a-key-but-a-password", b"short", ["x"], []):
        with pytest.raises(SecretKeyError) as e:
            journal(secret_key=bad)
        assert "not-a-key" not in str(e.value) and "password" not in str(e.value)


def test_a_secret_stays_secret(ks):
    ks.config.set("token", "abc", secret=True)
    with refused(ks, InvalidArgument, "'token' is secret, so it is set with secret=True"):
        ks.config.set("token", "abc")
    with refused(ks, InvalidArgument, r"\(a secret, not shown\) is not of type integer"):
        ks.config.set("token", "zz-secret-zz", secret=True, value_type="integer")
    with refused(ks, InvalidArgument, r"secret value of 'token' is not a JSON value \(it is not shown\)"):
        ks.config.set("token", float("nan"), secret=True)
    ks.config.set("token", 42, secret=True, value_type="integer")
    assert ks.config.get("token") == 42


def test_rotation_reencrypts_every_secret_and_is_recorded(journal, clock):
    new = generate_key()
    with journal(clock=clock, secret_key=KEY) as k:
        k.config.set("a", "alpha", secret=True)
        k.config.set("b", {"user": "u", "password": "p"}, secret=True)
        k.config.set("public", 1)
        before = k.head
        assert k.config.rotate_key(new) == ["a", "b"]
        assert k.config.key_id() == key_id(new)
        assert (k.config.get("a"), k.config.get("a", as_of=before)) == ("alpha", "alpha")  # the old key still reads history
        k.config.set("c", "gamma", secret=True)  # now under the new key
        with refused(k, InvalidArgument, "already under key"):
            k.config.rotate_key(new)
        types = [e.type for e in k.log(after=before)]
        assert types[:3] == ["config.reencrypted", "config.reencrypted", "config.key_rotated"]
        assert k.verify().ok
    with journal(clock=clock, secret_key=new) as k:
        assert (k.config.get("a"), k.config.get("b")["password"], k.config.get("c")) == ("alpha", "p", "gamma")
        with pytest.raises(SecretKeyError, match="encrypted under secret key"):
            k.config.get("a", as_of=before)  # history stays under the old key until erased
    with journal(clock=clock, secret_key=generate_key()) as k:
        with refused(k, SecretKeyError, "does not decrypt|encrypted under secret key"):
            k.config.rotate_key(generate_key())


def test_a_rotation_rolled_back_leaves_secrets_usable(ks):
    ks.config.set("a", "alpha", secret=True)
    with pytest.raises(RuntimeError), ks.transaction():
        ks.config.rotate_key(generate_key())
        raise RuntimeError("abort")
    assert ks.config.key_id() == key_id(KEY)
    ks.config.set("b", "beta", secret=True)  # still encrypted under the file's key
    assert (ks.config.get("a"), ks.config.get("b")) == ("alpha", "beta")


def test_a_command_id_retry_of_a_secret_matches_without_revealing_it(ks):
    first = ks.config.set("s", "v1", secret=True, command_id="set-s")
    head = ks.head
    assert ks.config.set("s", "v1", secret=True, command_id="set-s") == first and ks.head == head
    with refused(ks, eventkernel.IdempotencyConflict, "with other arguments"):
        ks.config.set("s", "v2", secret=True, command_id="set-s")
    meta = ks._db.conn.execute("SELECT meta FROM journal WHERE position = ?", (head,)).fetchone()[0]
    assert "v1" not in meta


def test_a_command_id_retry_of_a_secret_matches_after_a_key_rotation(ks):
    """The retry names the value under the key the first call used, not the
    current one: a rotation in between does not make it another command."""
    first = ks.config.set("s", "v1", secret=True, command_id="set-s")
    ks.config.rotate_key(generate_key())
    head = ks.head
    assert ks.config.set("s", "v1", secret=True, command_id="set-s") == first and ks.head == head
    with refused(ks, eventkernel.IdempotencyConflict, "with other arguments"):
        ks.config.set("s", "v2", secret=True, command_id="set-s")
    assert ks.config.get("s") == "v1" and ks.verify().ok


def test_a_ciphertext_moved_to_another_key_name_does_not_decrypt(ks):
    ks.config.set("a", "alpha", secret=True)
    ks.config.set("b", "beta", secret=True)
    conn = ks._db.conn
    moved = conn.execute("SELECT ciphertext FROM configurations WHERE key = 'a'").fetchone()[0]
    with ks.transaction():
        conn.execute("UPDATE configurations SET ciphertext = ? WHERE key = 'b'", (moved,))
    with pytest.raises(SecretKeyError, match="does not decrypt under key"):
        ks.config.get("b")
