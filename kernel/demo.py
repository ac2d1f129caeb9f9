"""``eventkernel demo``: a small simulated orchestration run on a real file.

Three workers share one queue under a simulated clock: they claim items,
send heartbeats, fail and retry, complete; one worker stalls and its expired
lease is taken over by another. Everything lands in the journal, and the run
ends with the journal head and a full ``verify``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from kernel.clock import FrozenClock, system_clock
from kernel.errors import LeaseNotHeld
from kernel.kernel import open as open_kernel
from projections.work_items import TERMINAL, WorkItem

LEASE_MS = 5_000
TICK_MS = 1_000


def run(path: str, *, seed: int = 7, out: Callable[[str], None] = print) -> int:
    """Run the simulation on ``path``; returns 0 when verify is ok, else 1."""
    rng = random.Random(seed)
    clock = FrozenClock(system_clock())
    start = clock()
    with open_kernel(path, clock=clock) as k:
        first = k.head

        def say(text: str) -> None:
            out(f"  +{(clock() - start) / 1000:5.1f}s  {text}")

        out(f"eventkernel demo on {path} (journal head before the run: {first})")
        plan = [("research", "gather sources", 5), ("research", "summarise", 3), ("write", "draft", 3),
                ("write", "edit", 1), ("write", "publish", 0), ("research", "cite", 1)]
        ids = []
        with k.transaction():  # six commands, one commit
            for task, step, priority in plan:
                item_id = k.work.enqueue(task, {"step": step}, priority=priority, max_retries=2)
                ids.append(item_id)
                say(f"enqueued  {item_id}  task={task} step={step!r} priority={priority}")

        holding: dict[str, WorkItem] = {}
        stalled: set[str] = set()
        scripted = {"w2": "stall", "w3": "fail"}  # make sure both stories happen
        workers = ["w1", "w2", "w3"]
        for _ in range(200):
            if all(k.work.get(i).status in TERMINAL for i in ids):
                break
            for w in workers:
                if w in stalled:
                    continue
                item = holding.get(w)
                if item is None:
                    claimed = k.work.claim(w, lease_ms=LEASE_MS)
                    if claimed is None:
                        continue
                    holding[w] = claimed
                    stale = next((s for s in stalled if s in holding and holding[s].work_item_id == claimed.work_item_id), None)
                    note = f" (took over {stale}'s expired lease)" if stale else ""
                    say(f"{w} claimed   {claimed.work_item_id}  token={claimed.token} attempt={claimed.attempt}{note}")
                    if stale:
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
                if action == "stall":
                    stalled.add(w)
                    say(f"{w} stalls    {item.work_item_id}  (no more heartbeats; its lease will expire)")
                elif action == "heartbeat":
                    k.work.heartbeat(item.work_item_id, w, item.token, lease_ms=LEASE_MS)
                    say(f"{w} heartbeat {item.work_item_id}  token={item.token}")
                elif action == "fail":
                    after = k.work.fail(item.work_item_id, w, item.token, "tool call timed out")
                    del holding[w]
                    say(f"{w} failed    {item.work_item_id}  -> {after.status} (retries used {after.retry_count}/{after.max_retries})")
                else:
                    k.work.complete(item.work_item_id, w, item.token, output={"by": w, "ok": True})
                    del holding[w]
                    say(f"{w} completed {item.work_item_id}")
            clock.advance(TICK_MS)
        out("")
        out("work items:")
        for item in k.work.list():
            if item.work_item_id in ids:
                out(f"  {item.work_item_id}  {item.status:<10} attempts={item.attempt} retries={item.retry_count}  task={item.task_id}")
        report = k.verify()
        out("")
        out(f"journal head: {report.head} (+{report.head - first} events this run), hash {report.head_hash[:16]}…")
        out(f"verify: {'ok' if report.ok else 'FAILED'}")
        for problem in report.problems:
            out(f"  {problem}")
        return 0 if report.ok else 1
