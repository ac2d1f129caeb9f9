"""Hostile input: every public command and query of every service, and the
kernel's own append/read/at/verify, called with arguments hypothesis draws
from plausible values and hostile ones (wrong types, huge and deeply nested
values, NUL bytes, lone surrogates, NaN/inf, SQL fragments in ids and
namespaces, unknown enum values).

Whatever happens, the call either succeeds or raises a KernelError
subclass, and a refused call leaves the database exactly as it was: head,
data_version, total_changes and every row of every table. Accepted values
come back exactly as they were given.
"""

from __future__ import annotations

import inspect
import os
import warnings
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eventkernel
from eventkernel import registry

from strategies import hostile_text, hostile_values, json_values
from support import open_kernel, sha256, snapshot

SERVICES = tuple(registry.DOMAINS)
KERNEL_METHODS = ("append", "read", "log", "at", "verify", "stream_version", "position_at")


class Note(eventkernel.Event, tag="test.hostile_note"):
    text: str


def _seeded(engine: str = "sqlite") -> eventkernel.Kernel:
    k = open_kernel(engine, clock=eventkernel.FrozenClock(1_700_000_000_000))
    k.tasks.create("a task", task_id="t-1")
    k.work.enqueue("t-1", {"n": 1}, work_item_id="wi-1")
    k.work.enqueue("t-1", {"n": 2}, work_item_id="wi-2")
    k.work.claim("w1", lease_ms=60_000)
    k.sessions.create("app", "u1", session_id="s-1", state={"a": 1})
    k.memory.put("user:1", "prefs", {"lang": "fr"})
    k.checkpoints.record("t-1", "manual", {"step": 1}, checkpoint_id="cp-1")
    k.idempotency.begin("key-1", {"q": 1})
    k.recovery.record_failure("t-1", "timeout", "no answer after 30 s")
    k.recovery.start_attempt("t-1", "retry", attempt_id="att-1")
    k.tasks.define_workflow("flow", definition={"steps": []}, workflow_id="wf-1")
    k.tasks.spawn_agent("t-1", name="planner", agent_id="ag-1")
    k.config.set("key-1", 5, description="a setting")
    k.config.set("key-2", "s3cr3t", secret=True)
    CONNECTIONS.append(k.connections.open("client-1", connection_type="ws", user_id="u1").connection_id)
    k.metrics.record("m.latency", 12.5, tags={"route": "a"})
    k.documents.index("d/a.txt", title="Design", content="the journal of agents", embedding=[1.0, 0.0, 0.5])
    return k


CONNECTIONS: list[str] = []


PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "task_id": st.sampled_from(["t-1", "t-2"]),
    "parent_task_id": st.sampled_from(["t-1", "t-9"]),
    "work_item_id": st.sampled_from(["wi-1", "wi-2", "wi-3"]),
    "worker": st.sampled_from(["w1", "w2"]),
    "token": st.integers(-1, 3),
    "session_id": st.sampled_from(["s-1", "s-2"]),
    "namespace": st.sampled_from(["user:1", "user:2"]),
    "to_namespace": st.sampled_from(["team:1"]),
    "key": st.sampled_from(["prefs", "key-1", "key-2"]),
    "checkpoint_id": st.sampled_from(["cp-1", "cp-2"]),
    "attempt_id": st.sampled_from(["att-1", "att-2"]),
    "workflow_id": st.sampled_from(["wf-1", "wf-2"]),
    "agent_id": st.sampled_from(["ag-1", "ag-2"]),
    "status": st.sampled_from(["pending", "in_progress", "completed", "failed", "cancelled", "running", "active",
                               "paused", "terminated", "archived", "idle", "exploded", "COMPLETED"]),
    "checkpoint_type": st.sampled_from(["manual", "llm_response", "nope"]),
    "memory_type": st.sampled_from(["semantic", "episodic", "procedural", "other"]),
    "severity": st.sampled_from(["low", "medium", "high", "critical", "apocalyptic"]),
    "lease_ms": st.integers(-5, 10**13),
    "ttl_ms": st.integers(-5, 10**13),
    "priority": st.integers(-(2**64), 2**64),
    "max_retries": st.integers(-3, 2_000_000),
    "version": st.integers(-1, 5),
    "to_version": st.integers(-1, 5),
    "expected_version": st.integers(-1, 5),
    "sequence": st.integers(-1, 5),
    "duration_ms": st.integers(-1, 10**6),
    "limit": st.integers(-1, 5),
    "after": st.integers(-1, 20),
    "after_seq": st.integers(-1, 5),
    "position": st.integers(-1, 30),
    "stream": st.sampled_from(["note:1", "Note:1", "note", "work_item:wi-1", ":x", "note:\x00"]),
    # prefixes at the top of the code-point ranges (U+D7FF before the surrogates, U+FFFF, U+10FFFF)
    "prefix": st.text(st.sampled_from("u:a\ud7ff\ue000\uffff\U0010ffff\U0010fffe"), max_size=4),
    "stream_prefix": st.builds(lambda t: "memory:" + t, st.text(st.sampled_from("u:\ud7ff\uffff\U0010ffff"), max_size=3)),
    "time_ms": st.integers(-(2**64), 2**64),
    "client_id": st.sampled_from(["client-1", "client-2"]),
    "connection_id": st.one_of(st.sampled_from(["conn-nope"]), st.builds(lambda: CONNECTIONS[0])),
    "connection_type": st.sampled_from(["ws", "http"]),
    "timeout_ms": st.integers(-1, 10**13),
    "file_path": st.sampled_from(["d/a.txt", "d/b.txt"]),
    "title": st.sampled_from(["Design", ""]),
    "content": st.text(max_size=30),
    "document_type": st.sampled_from(["design", "plan", "memo", None]),
    "sync_status": st.sampled_from(["pending", "synced", "failed", "stale", "done", None]),
    "embedding": st.lists(st.floats(width=32), min_size=0, max_size=4),
    "vector": st.lists(st.floats(width=32), min_size=0, max_size=4),
    "k": st.integers(-1, 20),
    "text": st.text(max_size=20),
    "name": st.sampled_from(["m.latency", "m.other"]),
    "value": st.one_of(st.floats(), st.integers(), json_values),
    "value_type": st.sampled_from(["string", "integer", "float", "boolean", "json", "int", None]),
    "secret": st.booleans(),
    "samples": st.lists(st.tuples(st.sampled_from(["m.latency", ""]), st.floats(), st.none()), max_size=3),
    "window_ms": st.integers(-1, 10**7),
    "since": st.integers(-1, 2 * 10**12),
    "until": st.integers(-1, 2 * 10**12),
    "new_key": st.sampled_from([eventkernel.generate_key(), "short", ""]),
    "events": st.sampled_from([[Note(text="hi")], [], [Note(text="a"), Note(text="b")], ["not an event"]]),
}


def _methods() -> list[tuple[str, str]]:
    k = eventkernel.open(":memory:")
    out = []
    for svc in SERVICES:
        obj = getattr(k, svc)
        out += [(svc, name) for name, _ in inspect.getmembers(type(obj), inspect.isfunction) if not name.startswith("_")]
    k.close()
    return sorted(out) + [("kernel", m) for m in KERNEL_METHODS]


METHODS = _methods()
_K: dict[str, eventkernel.Kernel] = {}


@pytest.fixture(scope="module", autouse=True)
def _close_kernels() -> Any:
    yield
    while _K:
        _K.popitem()[1].close()


def _kernel(engine: str = "sqlite") -> eventkernel.Kernel:
    if engine not in _K:
        _K[engine] = _seeded(engine)
    return _K[engine]


def _call(k: eventkernel.Kernel, svc: str, name: str, kwargs: dict[str, Any]) -> Any:
    target = k if svc == "kernel" else getattr(k, svc)
    with warnings.catch_warnings():  # deprecated parameter names are fuzzed too; their warning is not the point
        warnings.simplefilter("ignore", DeprecationWarning)
        result = getattr(target, name)(**kwargs)
    if name in ("read", "log"):
        return list(result)
    if name == "at":
        with result as view:
            return view.head
    return result


def _state(k: eventkernel.Kernel) -> dict[str, Any]:
    s = snapshot(k)
    s["total_changes"] = k._db.conn.total_changes()
    return s


@settings(max_examples=600)
@given(data=st.data(), method=st.sampled_from(METHODS))
def test_any_argument_is_accepted_or_refused_with_a_kernel_error_and_nothing_written(data, method):
    _fuzz("sqlite", data, method)


@settings(max_examples=100)
@given(data=st.data(), method=st.sampled_from(METHODS))
def test_on_postgres_any_argument_is_accepted_or_refused_and_nothing_written(data, method):
    _fuzz("postgres", data, method)


def _fuzz(engine: str, data: Any, method: tuple[str, str]) -> None:
    svc, name = method
    k = _kernel(engine)
    target = k if svc == "kernel" else getattr(k, svc)
    params = [p for p in inspect.signature(getattr(target, name)).parameters.values() if p.name != "self"]
    kwargs: dict[str, Any] = {}
    for p in params:
        how = data.draw(st.sampled_from(["plausible", "hostile", "omit"]), label=f"{p.name}?")
        if how == "omit" and p.default is not inspect.Parameter.empty:
            continue
        if how == "plausible" and p.name in PLAUSIBLE:
            kwargs[p.name] = data.draw(PLAUSIBLE[p.name], label=p.name)
        elif how == "plausible":
            kwargs[p.name] = data.draw(json_values | hostile_text, label=p.name)
        else:
            kwargs[p.name] = data.draw(hostile_values, label=p.name)
    before = _state(k)
    try:
        _call(k, svc, name, kwargs)
    except eventkernel.KernelError as e:
        assert str(e), f"{svc}.{name} raised {type(e).__name__} with no message"
        assert _state(k) == before, f"{svc}.{name} was refused ({e}) but changed the database"
    assert k.verify().ok if data.draw(st.integers(0, 20), label="verify?") == 0 else True


ROUND_TRIPS = st.sampled_from(["work.enqueue", "memory.put", "checkpoints.record", "sessions.append_event",
                               "idempotency.complete", "tasks.create", "append"])


@given(value=json_values, which=ROUND_TRIPS, text=st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s))
def test_accepted_values_come_back_exactly(value, which, text):
    k = _kernel()
    if which == "work.enqueue":
        got = k.work.get(k.work.enqueue(text, value)).input
    elif which == "memory.put":
        key = f"key-{k.head}"  # namespaces and keys have their own rules ('/' separates them)
        got = k.memory.get("rt:ns", key).value if k.memory.put("rt:ns", key, value) else None
    elif which == "checkpoints.record":
        got = k.checkpoints.get(k.checkpoints.record(text, "manual", value).checkpoint_id).snapshot
    elif which == "sessions.append_event":
        sid = k.sessions.create("app", "round-trip").session_id  # s-1 may have been closed by the fuzz above
        got = k.sessions.append_event(sid, actor=text[:256], content=value).content
        assert k.sessions.events(sid)[-1].content == value
    elif which == "idempotency.complete":
        key = f"rt:{text}:{k.head}"
        k.idempotency.begin(key, value)
        k.idempotency.complete(key, value)
        got = k.idempotency.get(key).response
    elif which == "tasks.create":
        value = {"v": value}
        got = k.tasks.get(k.tasks.create(text, config=value).task_id).config
    else:
        position = k.append("note:rt", [Note(text=text)])
        got = value
        (r,) = list(k.read(after=position - 1, limit=1))
        assert r.event == Note(text=text)
    assert got == value
    assert type(got) is type(value)


# --- the command line ------------------------------------------------------------

CLI_VALUES = st.one_of(
    st.sampled_from(["", "-1", "0", "1", "2", "65", "66", "\u00b2", "\u0661\u0662", "99999999999999999999", "1e3", "x",
                     "work_item:", "memory:", "\ud800", "\udcff", "2026-13-45", "2026-01-01T00:00:00Z", "Z", " 5",
                     "5 ", "-", "nan", "1:" + "a" * 64, "65:" + "0" * 64, "work_items", "journal", "jsonl", "csv",
                     "SELECT 1", "SELECT * FROM journal; DROP TABLE journal", "PRAGMA hard_heap_limit=1000000",
                     "../x.db", "out.db"]),
    hostile_text,
)
CLI_OPTIONS = ["--json", "--stream", "--prefix", "--type", "--correlation", "--after", "--before", "--since",
               "--until", "--limit", "--full", "--to", "--at", "--out", "--expect-head", "--anchor", "--table",
               "--format", "--seed", "--metrics", "--window"]


@settings(max_examples=int(os.environ.get("EVENTKERNEL_CLI_FUZZ", "300")))
@given(data=st.data())
def test_any_argv_exits_0_or_1_with_one_line_and_never_a_traceback(data, tmp_path_factory):
    import os

    from eventkernel.cli import main, parser

    place = tmp_path_factory.mktemp("cli")
    journal = str(place / "j.db")
    if not os.path.exists(journal):
        with eventkernel.open(journal, clock=eventkernel.FrozenClock(1_700_000_000_000)) as k:
            k.work.enqueue("t", {"n": 1})
            k.memory.put("u:\U0010ffff", "k", 1)
    foreign = place / "foreign.txt"
    foreign.write_text("not a database")
    commands = sorted(next(a for a in parser()._actions if a.dest == "command").choices)
    command = data.draw(st.sampled_from(commands), label="command")
    db = data.draw(st.sampled_from([journal, str(place / "missing.db"), str(foreign), str(place), ""]), label="db")
    argv = [command, db]
    for _ in range(data.draw(st.integers(0, 4), label="extras")):
        argv.append(data.draw(st.sampled_from(CLI_OPTIONS) | CLI_VALUES, label="arg"))
        if data.draw(st.booleans(), label="value?"):
            argv.append(data.draw(CLI_VALUES, label="value"))
    before = sha256(journal)
    cwd = os.getcwd()
    os.chdir(place)
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(argv)
            except SystemExit as e:  # argparse's --help/--version exit 0, usage errors exit 1
                status = e.code
    finally:
        os.chdir(cwd)
    assert status in (0, 1), (argv, status, err.getvalue())
    if status == 1:
        assert err.getvalue().count("\n") == 1, (argv, err.getvalue())
        assert "Traceback" not in err.getvalue()
    if command not in ("init", "demo", "rebuild", "snapshot", "retain"):  # the commands that write by design
        assert sha256(journal) == before, f"{argv} changed the journal"
