"""The work queue against a plain Python model: leases, fencing tokens,
retries, terminal states and clock advances."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import eventkernel

from support import open_kernel

WORKERS = st.sampled_from(["w1", "w2", "w3"])
# Round numbers, so that "now" often lands exactly on a lease's deadline.
LEASES = st.sampled_from([100, 500, 1_000, 2_000])
HEARTBEAT_LEASES = st.sampled_from([None, None, 100, 500, 1_000, 2_000])
STEPS = st.sampled_from([0, 100, 400, 500, 1_000])


@dataclass
class Model:
    priority: int
    seq: int
    max_retries: int
    status: str = "pending"
    token: int = 0
    attempt: int = 0
    retry_count: int = 0
    holder: str | None = None
    expires: int | None = None
    lease: int | None = None  # the lease's length, which heartbeats keep by default


class QueueMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.clock = eventkernel.FrozenClock(0)
        self.k = eventkernel.open(":memory:", clock=self.clock)
        self.items: dict[str, Model] = {}
        self.seq = 0

    def teardown(self) -> None:
        if hasattr(self, "k"):
            self.k.close()

    # --- the model's rules ------------------------------------------------------

    def _lapse(self, m: Model) -> None:
        """A lease ran out: a failed attempt."""
        m.holder = m.expires = None
        if m.retry_count < m.max_retries:
            m.retry_count += 1
            m.status = "pending"
        else:
            m.status = "failed"

    def _expected_refusal(self, item_id: str, worker: str, token: int) -> type[Exception] | None:
        m = self.items[item_id]
        if m.status in ("completed", "failed", "cancelled"):
            return eventkernel.TerminalState
        if m.status == "pending" or token != m.token or worker != m.holder:
            return eventkernel.LeaseNotHeld
        assert m.expires is not None
        if self.clock() >= m.expires:
            return eventkernel.LeaseNotHeld
        return None

    # --- rules ---------------------------------------------------------------------

    @rule(priority=st.integers(-1, 2), max_retries=st.integers(0, 2))
    def enqueue(self, priority: int, max_retries: int) -> None:
        self.seq += 1
        # Deterministic ids keep hypothesis's draws reproducible.
        item_id = self.k.work.enqueue(
            "task", None, priority=priority, max_retries=max_retries, work_item_id=f"wi-{self.seq:04d}"
        )
        self.items[item_id] = Model(priority=priority, seq=self.seq, max_retries=max_retries)

    @rule(worker=WORKERS, lease=LEASES)
    def claim(self, worker: str, lease: int) -> None:
        now = self.clock()
        expected = None
        while True:
            candidates = [
                (-m.priority, m.seq, i)
                for i, m in self.items.items()
                if m.status == "pending" or (m.status == "in_progress" and m.expires is not None and m.expires <= now)
            ]
            if not candidates:
                break
            _, _, item_id = min(candidates)
            m = self.items[item_id]
            if m.status == "in_progress":
                self._lapse(m)
                if m.status == "failed":
                    continue
            m.status, m.holder, m.expires, m.lease = "in_progress", worker, now + lease, lease
            m.token += 1
            m.attempt += 1
            expected = item_id
            break
        got = self.k.work.claim(worker, lease_ms=lease)
        assert (got.work_item_id if got else None) == expected
        if got is not None:
            assert got.token == self.items[expected].token

    @precondition(lambda self: self.items)
    @rule(data=st.data(), shift=st.sampled_from([0, 0, 0, -1, 1]), lease=HEARTBEAT_LEASES,
          action=st.sampled_from(["heartbeat", "complete", "fail", "fail_final"]))
    def act(self, data: st.DataObject, shift: int, lease: int | None, action: str) -> None:
        # Mostly the holder of a live lease (the paths that change state),
        # sometimes anyone on anything (the refusals).
        held = sorted(i for i, m in self.items.items() if m.status == "in_progress")
        item_id = data.draw(st.sampled_from(held or sorted(self.items)) | st.sampled_from(sorted(self.items)))
        m = self.items[item_id]
        worker = data.draw(st.sampled_from([m.holder or "w1"] * 3 + ["w1", "w2", "w3"]))
        token = max(1, m.token + shift)
        refusal = self._expected_refusal(item_id, worker, token)
        work = self.k.work
        head = self.k.head
        try:
            if action == "heartbeat":
                work.heartbeat(item_id, worker, token, lease_ms=lease)
            elif action == "complete":
                work.complete(item_id, worker, token)
            else:
                work.fail(item_id, worker, token, "boom", retryable=action == "fail")
        except eventkernel.CommandRejected as e:
            assert refusal is not None and type(e) is refusal, (e, refusal)
            assert self.k.head == head
            return
        assert refusal is None, f"{action} should have raised {refusal}"
        if action == "heartbeat":
            # None keeps the lease's length; the deadline never moves earlier.
            assert m.expires is not None and m.lease is not None
            m.lease = m.lease if lease is None else lease
            m.expires = max(m.expires, self.clock() + m.lease)
        elif action == "complete":
            m.status, m.holder, m.expires = "completed", None, None
        elif action == "fail" and m.retry_count < m.max_retries:
            m.status, m.holder, m.expires = "pending", None, None
            m.retry_count += 1
        else:
            m.status, m.holder, m.expires = "failed", None, None

    @precondition(lambda self: self.items)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        item_id = data.draw(st.sampled_from(sorted(self.items)))
        m = self.items[item_id]
        if m.status in ("completed", "failed", "cancelled"):
            try:
                self.k.work.cancel(item_id, "stop")
            except eventkernel.TerminalState:
                return
            raise AssertionError("cancel of a terminal item was accepted")
        self.k.work.cancel(item_id, "stop")
        m.status, m.holder, m.expires = "cancelled", None, None

    @rule()
    def expire(self) -> None:
        now = self.clock()
        due = [m for m in self.items.values() if m.status == "in_progress" and m.expires is not None and m.expires <= now]
        for m in due:
            self._lapse(m)
        assert self.k.work.expire_leases() == len(due)

    @rule(ms=STEPS)
    def advance(self, ms: int) -> None:
        self.clock.advance(ms)

    # --- invariants ------------------------------------------------------------------

    @invariant()
    def kernel_agrees_with_the_model(self) -> None:
        if not hasattr(self, "k"):
            return
        for item in self.k.work.list():
            m = self.items[item.work_item_id]
            assert (item.status, item.token, item.attempt, item.retry_count, item.lease_holder, item.lease_expires_at) == (
                m.status, m.token, m.attempt, m.retry_count, m.holder, m.expires
            )
        assert len(self.k.work.list()) == len(self.items)


QueueMachine.TestCase.settings = settings(
    max_examples=max(200, settings().max_examples), stateful_step_count=40, deadline=None
)
test_queue_matches_its_model = QueueMachine.TestCase


class QueueMachineOnPostgres(QueueMachine):
    """The same machine, the journal on PostgreSQL (each command decided on
    the replica and committed in one round trip when it knows of no newer
    commit, as with a clock of the caller's by default)."""

    OPTIONS: ClassVar[dict[str, bool]] = {}

    @initialize()
    def start(self) -> None:
        self.clock = eventkernel.FrozenClock(0)
        self.k = open_kernel("postgres", clock=self.clock, **self.OPTIONS)
        self.items = {}
        self.seq = 0


QueueMachineOnPostgres.TestCase.settings = settings(max_examples=20, stateful_step_count=40, deadline=None)
test_queue_on_postgres_matches_its_model = QueueMachineOnPostgres.TestCase


class QueueMachineOnPostgresLockFirst(QueueMachineOnPostgres):
    """The same with every command taking the server's lock first
    (``one_round_trip=False``, as with the server's clock by default)."""

    OPTIONS: ClassVar[dict[str, bool]] = {"one_round_trip": False}


QueueMachineOnPostgresLockFirst.TestCase.settings = settings(max_examples=10, stateful_step_count=40, deadline=None)
test_queue_on_postgres_taking_the_lock_first_matches_its_model = QueueMachineOnPostgresLockFirst.TestCase
