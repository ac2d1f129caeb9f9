"""``eventkernel demo``: a small simulated orchestration run on a real file.

Three workers share one queue under a simulated clock: they claim items,
send heartbeats, fail and retry, complete; one worker restarts, giving its
item back first (a release spends no retry); one worker stalls and its
expired lease is taken over by another. Everything lands in the journal, and the run
ends with the journal head and a full ``verify``.

A run is one transaction: interrupted, it leaves nothing behind; and its
workers claim only the run's own items (``kind`` is the run's name), so a
run never picks up anything else in the file. Output that cannot be
written (a closed pipe, ``| head -1``) is dropped; the run goes on.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from eventkernel.clock import FrozenClock, system_clock
from eventkernel.errors import LeaseNotHeld
from eventkernel.journal import LogEntry
from eventkernel.kernel import Kernel
from eventkernel.kernel import open as open_kernel
from eventkernel.projections.work_items import TERMINAL, WorkItem

LEASE_MS = 5_000
TICK_MS = 1_000


class _Output:
    """Lines for the reader, until the reader goes away."""

    def __init__(self, out: Callable[[str], None] | None) -> None:
        self.out = out

    def __call__(self, text: str) -> None:
        if self.out is None:
            return
        try:
            self.out(text)
        except BrokenPipeError:
            self.out = None


def run(
    path: str,
    *,
    seed: int = 7,
    out: Callable[[str], None] | None = print,
    events: Callable[[LogEntry], None] | None = None,
) -> int:
    """Run the simulation on ``path`` (created if missing) in one transaction;
    ``out`` gets the narrative, ``events`` every event the run appended
    (after it committed). Returns 0 when verify is ok, else 1."""
    rng = random.Random(seed)
    clock = FrozenClock(system_clock())
    start = clock()
    out = _Output(out)
    with open_kernel(path, clock=clock) as k:
        first = k.head
        with k.transaction():
            _simulate(k, clock, rng, start, out)
        report = k.verify()
        out("")
        out(f"journal head: {report.head} (+{report.head - first} events this run), hash {report.head_hash[:16]}…")
        out(f"verify: {'ok' if report.ok else 'FAILED'}")
        for problem in report.problems:
            out(f"  {problem}")
        if events is not None:
            for entry in k.log(after=first):
                events(entry)
        return 0 if report.ok else 1


def _simulate(k: Kernel, clock: FrozenClock, rng: random.Random, start: int, out: Callable[[str], None]) -> None:
    first = k.head
    run_kind = f"demo-{first + 1}"  # the run's own items: no other run claims them

    def say(text: str) -> None:
        out(f"  +{(clock() - start) / 1000:5.1f}s  {text}")

    out(f"eventkernel demo on {k.path} (journal head before the run: {first})")
    plan = [("research", "gather sources", 5), ("research", "summarise", 3), ("write", "draft", 3),
            ("write", "edit", 1), ("write", "publish", 0), ("research", "cite", 1)]
    ids = []
    with k.transaction():  # six commands, one commit
        for task, step, priority in plan:
            item_id = k.work.enqueue(task, {"step": step}, priority=priority, max_retries=2, kind=run_kind)
            ids.append(item_id)
            say(f"enqueued  {item_id}  task={task} step={step!r} priority={priority}")

    session = k.sessions.create("demo", "operator", state={"user:name": "operator", "goal": "a report"})
    say(f"session   {session.session_id}  app=demo user=operator")
    open_attempts: dict[str, tuple[str, str]] = {}  # task -> (attempt_id, work_item_id)

    def recover(task: str, item_id: str, failure_type: str, message: str, strategy: str) -> None:
        pattern = k.recovery.record_failure(task, failure_type, message)
        note = f"pattern seen {pattern.occurrence_count}x"
        if task not in open_attempts:
            attempt = k.recovery.start_attempt(task, strategy, reasoning=message)
            open_attempts[task] = (attempt.attempt_id, item_id)
            note += f", recovery attempt {attempt.attempt_number} ({strategy})"
        say(f"recovery  task={task}: {failure_type} — {note}")

    holding: dict[str, WorkItem] = {}
    stalled: set[str] = set()
    scripted = {"w1": "release", "w2": "stall", "w3": "fail"}  # make sure every story happens
    workers = ["w1", "w2", "w3"]
    for _ in range(200):
        if all(k.work.get(i).status in TERMINAL for i in ids):
            break
        for w in workers:
            if w in stalled:
                continue
            item = holding.get(w)
            if item is None:
                claimed = k.work.claim(w, lease_ms=LEASE_MS, kinds=[run_kind])
                if claimed is None:
                    continue
                holding[w] = claimed
                stale = next((s for s in stalled if s in holding and holding[s].work_item_id == claimed.work_item_id), None)
                note = f" (took over {stale}'s expired lease)" if stale else ""
                say(f"{w} claimed   {claimed.work_item_id}  token={claimed.token} attempt={claimed.attempt}{note}")
                cp = k.checkpoints.record(
                    claimed.task_id, "iteration_start", {"step": claimed.input["step"], "worker": w},
                    work_item_id=claimed.work_item_id, session_id=session.session_id,
                )
                say(f"{w} checkpoint task={claimed.task_id} #{cp.sequence_number} iteration_start")
                if stale:
                    recover(claimed.task_id, claimed.work_item_id, "lease_expired",
                            f"worker {stale} stopped sending heartbeats", "reassign")
                    # The stalled worker wakes up and tries to finish: its token is stale.
                    old = holding.pop(stale)
                    try:
                        k.work.complete(old.work_item_id, stale, old.token)
                    except LeaseNotHeld as e:
                        say(f"{stale} wakes up and is refused: {e}")
                continue
            action = scripted.pop(w, None) or rng.choices(
                ["heartbeat", "complete", "fail"], weights=[3, 5, 1]
            )[0]
            if action == "release":
                after = k.work.release(item.work_item_id, w, item.token)
                del holding[w]
                say(f"{w} restarts  {item.work_item_id}  released first: {after.status}, "
                    f"retries used {after.retry_count}/{after.max_retries}")
            elif action == "stall":
                stalled.add(w)
                say(f"{w} stalls    {item.work_item_id}  (no more heartbeats; its lease will expire)")
            elif action == "heartbeat":
                k.work.heartbeat(item.work_item_id, w, item.token, lease_ms=LEASE_MS)
                say(f"{w} heartbeat {item.work_item_id}  token={item.token}")
            elif action == "fail":
                after = k.work.fail(item.work_item_id, w, item.token, "tool call timed out")
                del holding[w]
                say(f"{w} failed    {item.work_item_id}  -> {after.status} (retries used {after.retry_count}/{after.max_retries})")
                recover(item.task_id, item.work_item_id, "tool_timeout",
                        f"web_search timed out after {rng.randint(3000, 3100)} ms", "retry")
            else:
                step = item.input["step"]
                with k.transaction():  # the completion and what it produced, one commit
                    k.work.complete(item.work_item_id, w, item.token, output={"by": w, "ok": True})
                    k.checkpoints.record(item.task_id, "iteration_end", {"step": step, "worker": w},
                                         work_item_id=item.work_item_id, session_id=session.session_id)
                    k.memory.put(f"task:{item.task_id}", step, f"notes on {step}", actor=w)
                    k.sessions.append_event(session.session_id, actor=w, content={"completed": step},
                                            state_delta={"last_step": step})
                    attempt = open_attempts.get(item.task_id)
                    if attempt is not None and attempt[1] == item.work_item_id:
                        k.recovery.finish_attempt(attempt[0], success=True)
                        del open_attempts[item.task_id]
                del holding[w]
                say(f"{w} completed {item.work_item_id}  (checkpoint, memory task:{item.task_id}/{step}, session event)")
        clock.advance(TICK_MS)
    out("")
    out("work items:")
    for item in k.work.list():
        if item.work_item_id in ids:
            out(f"  {item.work_item_id}  {item.status:<10} attempts={item.attempt} retries={item.retry_count}  task={item.task_id}")
    out("")
    for task in ("research", "write"):
        cps = k.checkpoints.list(task)
        out(f"checkpoints of {task}: {len(cps)}, latest #{cps[-1].sequence_number} {cps[-1].checkpoint_type}")
    out(f"memory under task: {', '.join(f'{e.namespace}/{e.key} v{e.version}' for e in k.memory.list('task:'))}")
    stats = k.recovery.stats()
    rate = "n/a" if stats.success_rate is None else f"{stats.success_rate:.0%}"
    mttr = "n/a" if stats.mean_time_to_recovery_ms is None else f"{stats.mean_time_to_recovery_ms / 1000:.1f}s"
    out(f"recovery: {stats.attempts} attempts, success rate {rate}, mean time to recovery {mttr}")
    final = k.sessions.get(session.session_id)
    out(f"session {final.session_id}: {final.event_count} events, state {final.state}")
