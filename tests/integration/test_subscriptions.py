"""Following the journal: subscriptions catch up then follow commits from
this process and others, in order, with no gap and no duplicate; durable
consumers move their position with their commands, exactly once across
kill -9; blocking claims wake on what can make work claimable."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import eventkernel

from support import in_thread, open_kernel

BOTH_ENGINES = True  # the tests taking ``journal`` or ``engine`` run on a file and on PostgreSQL

HERE = Path(__file__).parent


class Note(eventkernel.Event, tag="subs.note"):
    n: int


def test_a_subscription_catches_up_then_follows_every_commit_in_order(journal):
    with journal() as k:
        for n in range(5):
            k.append("note:a", [Note(n=n)])
        got: list[int] = []
        sub = k.subscribe(after=2)

        def follow():
            for r in sub:
                got.append(r.position)
                if len(got) == 3 + 4 * 50:
                    return

        t, box = in_thread(follow)
        writers = [threading.Thread(target=lambda w=w: [k.append(f"note:{w}", [Note(n=i)]) for i in range(50)])
                   for w in range(4)]
        for w in writers:
            w.start()
        for w in writers:
            w.join()
        t.join(10)
        assert not t.is_alive() and "error" not in box
        assert got == list(range(3, 5 + 200 + 1))  # every position after 2, once, in order


def test_a_subscription_filters_and_close_ends_it_from_another_thread(journal):
    with journal() as k:
        k.work.enqueue("t1", 1)
        k.memory.put("ns", "k", 1, correlation_id="t1")
        k.append("note:x", [Note(n=1)], correlation_id="t2")
        with k.subscribe(types=["work_item.enqueued", "subs.note"]) as sub:
            assert [r.type for r in (next(sub), next(sub))] == ["work_item.enqueued", "subs.note"]
        with k.subscribe(correlation_id="t1") as sub:
            assert [next(sub).type, next(sub).type] == ["work_item.enqueued", "memory.put"]
            sub.poll()
            assert not sub._buffer  # nothing else is filed under t1
        sub = k.subscribe(after=k.head)
        t, box = in_thread(lambda: list(sub))
        time.sleep(0.2)
        sub.close()
        t.join(5)
        assert box == {"result": []}


def test_a_subscription_sees_commits_of_another_process(db_path, child_env):
    with eventkernel.open(db_path) as k:
        k.work.enqueue("first", None)
        sub = k.subscribe(after=1, poll_ms=5)
        t, box = in_thread(lambda: next(sub))
        code = ("import eventkernel\n"
                f"with eventkernel.open({db_path!r}) as k: k.work.enqueue('from another process', None)")
        subprocess.run([sys.executable, "-c", code], env=child_env, check=True)
        t.join(10)
        assert box["result"].event.task_id == "from another process"
        sub.close()


def test_a_consumers_commands_and_position_commit_together(engine):
    with open_kernel(engine) as k:
        for i in range(5):
            k.work.enqueue(f"t{i}", {"i": i})
        mailer = k.consumer("mailer", types=["work_item.enqueued"])
        assert mailer.position == 0

        def send(r):
            k.memory.put("sent", r.event.task_id, True)
            if r.event.task_id == "t3":
                raise RuntimeError("smtp down")

        with pytest.raises(RuntimeError):
            mailer.handle(send)
        assert mailer.position == 3  # t0..t2 handled; t3's put was undone with its position
        assert [e.key for e in k.memory.list("sent")] == ["t0", "t1", "t2"]
        assert mailer.handle(lambda r: k.memory.put("sent", r.event.task_id, True)) == 2
        assert mailer.position == k.head  # it read everything: the puts do not match its types
        assert len(k.memory.list("sent")) == 5
        other = k.consumer("mailer", types=["work_item.enqueued"])
        mailer.reset(0)
        assert other.position == 0


def test_a_consumer_runs_until_stopped(journal):
    with journal() as k:
        seen: list[int] = []
        consumer = k.consumer("counter", types=["subs.note"])
        t, box = in_thread(lambda: consumer.run(lambda r: seen.append(r.event.n)))
        for n in range(20):
            k.append("note:c", [Note(n=n)])
        deadline = time.monotonic() + 5
        while len(seen) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        consumer.stop()
        t.join(5)
        assert box == {"result": 20} and seen == list(range(20))


CONSUMER = """
import sys, eventkernel
class Note(eventkernel.Event, tag="subs.note"):
    n: int
class Effect(eventkernel.Event, tag="subs.effect"):
    of: int
path = sys.argv[1]
with eventkernel.open(path, busy_timeout_ms=30_000) as k:
    print("ready", flush=True)
    k.consumer("effects", types=["subs.note"]).run(
        lambda r: k.append(f"effect:{r.position}", [Effect(of=r.position)]))
"""


EVENTS = 2_000
STRESS = os.environ.get("EVENTKERNEL_STRESS", "") not in ("", "0")


@pytest.mark.parametrize("trial", range(10 if STRESS else 1))
def test_consumer_effects_happen_exactly_once_across_kill_9(tmp_path, child_env, trial):
    rng = random.Random(trial)
    path = str(tmp_path / "consumer.db")
    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER)
    with eventkernel.open(path) as k, k.transaction():
        for n in range(EVENTS):
            k.append("note:src", [Note(n=n)])
    kills, mid_stream = 0, 0
    while kills < 100:
        child = subprocess.Popen([sys.executable, str(script), path], env=child_env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        time.sleep(rng.uniform(0.0, 0.08))
        child.send_signal(signal.SIGKILL)
        child.communicate()
        kills += 1
        with eventkernel.open(path) as k:
            position, head = k.consumer("effects").position, k.head
        if position >= head or _done(path):
            break
        mid_stream += position > 0
    child = subprocess.Popen([sys.executable, str(script), path], env=child_env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 60
    while not _done(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.communicate()
    with eventkernel.open(path) as k:
        effects = [e.stream for e in k.log(types=["subs.effect"])]
        sources = [e.position for e in k.log(types=["subs.note"])]
        assert sorted(effects) == sorted(f"effect:{p}" for p in sources), "an event's effect was lost or repeated"
        assert k.verify().ok
    assert mid_stream >= 3, f"only {mid_stream} of {kills} kills landed while events were being handled"
    print(f"\nconsumer kill -9: {kills} kills ({mid_stream} mid-stream), {EVENTS} events, each with exactly one effect")


def _done(path: str) -> bool:
    with eventkernel.open(path) as k:
        return sum(1 for _ in k.log(types=["subs.effect"])) >= EVENTS


def test_a_blocking_claim_wakes_on_an_enqueue_a_release_and_a_lease_running_out(db_path, child_env):
    with eventkernel.open(db_path) as k:
        t, box = in_thread(lambda: k.work.claim("w1", wait_ms=10_000, kinds=["late"]))
        time.sleep(0.2)
        started = time.monotonic()
        k.work.enqueue("t", None, kind="late")
        t.join(5)
        assert box["result"].kind == "late" and time.monotonic() - started < 1
        held = box["result"]
        t, box = in_thread(lambda: k.work.claim("w2", wait_ms=10_000, kinds=["late"]))
        time.sleep(0.2)
        released = k.work.release(held.work_item_id, "w1", held.token)
        assert (released.status, released.retry_count) == ("pending", 0)  # given back, no retry spent
        t.join(5)
        assert box["result"].work_item_id == held.work_item_id and box["result"].lease_holder == "w2"
        started = time.monotonic()
        taken = k.work.claim("w3", lease_ms=30_000, kinds=["late"], wait_ms=3_000)  # w2's 30 s lease is live
        assert taken is None and time.monotonic() - started >= 2.9
        k.work.enqueue("t", None, kind="short")
        short = k.work.claim("w4", lease_ms=300, kinds=["short"])
        started = time.monotonic()
        took_over = k.work.claim("w5", kinds=["short"], wait_ms=5_000)  # wakes when w4's lease runs out
        assert took_over.work_item_id == short.work_item_id and took_over.token == 2
        assert 0.2 < time.monotonic() - started < 2
        code = ("import eventkernel\n"
                f"with eventkernel.open({db_path!r}) as k: k.work.enqueue('t', None, kind='remote')")
        t, box = in_thread(lambda: k.work.claim("w6", kinds=["remote"], wait_ms=10_000))
        time.sleep(0.2)
        subprocess.run([sys.executable, "-c", code], env=child_env, check=True)
        t.join(10)
        assert box["result"].kind == "remote"


def test_a_blocking_claims_command_id_binds_to_its_final_answer(journal):
    with journal() as k:
        assert k.work.claim("w", wait_ms=100, command_id="c-1") is None
        k.work.enqueue("t", None)
        head = k.head
        assert k.work.claim("w", wait_ms=5_000, command_id="c-1") is None  # the first answer, at once
        assert k.head == head
        t, box = in_thread(lambda: k.work.claim("w", wait_ms=10_000, command_id="c-2", kinds=["k2"]))
        time.sleep(0.1)
        k.work.enqueue("t", None, kind="k2")
        t.join(5)
        first = box["result"]
        assert k.work.claim("w", wait_ms=10_000, command_id="c-2", kinds=["k2"]) == first
