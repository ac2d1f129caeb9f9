from __future__ import annotations

import pytest

from eventkernel.errors import InvalidArgument, InvalidTransition, NotFound, TerminalState
from eventkernel.services.recovery import normalise

from support import refused, snapshot

BOTH_ENGINES = True  # the tests taking `k` run on a file and on PostgreSQL (conftest)


def test_failures_of_one_shape_are_one_pattern(k, clock):
    p1 = k.recovery.record_failure("t1", "timeout", "timeout after 3012 ms on request 9f3c11aa22")
    clock.advance(100)
    p2 = k.recovery.record_failure("t2", "timeout", "timeout after 2950 ms on request 1a7b33cc44", context={"tool": "web"})
    other = k.recovery.record_failure("t1", "rate_limit", "timeout after 1 ms on request 00000000aa")
    assert p1.pattern_signature == p2.pattern_signature != other.pattern_signature
    assert (p2.occurrence_count, p2.first_seen_at, p2.last_seen_at) == (2, p1.first_seen_at, clock())
    assert p2.confidence == pytest.approx(2 / 3) and p1.confidence == 0.5
    assert p2.example_message.startswith("timeout after 2950")
    assert [p.pattern_signature for p in k.recovery.patterns()] == [p1.pattern_signature, other.pattern_signature]
    assert len(k.recovery.patterns(limit=1)) == 1


def test_normalise_masks_numbers_and_ids():
    assert normalise("job 42 failed: id 550e8400-e29b-41d4-a716-446655440000, ref deadbeef99") == (
        "job # failed: id <uuid>, ref <hex>")


def test_attempts_are_numbered_and_timed(k, clock):
    k.recovery.record_failure("t", "crash", "boom")
    a1 = k.recovery.start_attempt("t", "retry", reasoning="transient")
    with refused(k, InvalidTransition, f"attempt {a1.attempt_id} of task t is still running"):
        k.recovery.start_attempt("t", "again")
    clock.advance(300)
    done = k.recovery.finish_attempt(a1.attempt_id, success=False, notes="still failing")
    assert (done.success, done.resolution_ms, done.finished_at) == (False, 300, clock())
    with refused(k, TerminalState, "already finished \\(failed\\)"):
        k.recovery.finish_attempt(a1.attempt_id, success=True)
    a2 = k.recovery.start_attempt("t", "restart_from_checkpoint")
    clock.advance(700)
    k.recovery.finish_attempt(a2.attempt_id, success=True)
    assert [a.attempt_number for a in k.recovery.attempts("t")] == [1, 2]
    stats = k.recovery.stats()
    assert (stats.attempts, stats.successes, stats.success_rate, stats.mean_time_to_recovery_ms) == (2, 1, 0.5, 700.0)
    counters = k.recovery.task("t")
    assert (counters.failure_count, counters.recovery_count, counters.last_failure_type) == (1, 2, "crash")
    assert counters.last_recovery_attempt_at == clock() - 700


def test_stats_when_nothing_finished(k):
    stats = k.recovery.stats()
    assert (stats.attempts, stats.success_rate, stats.mean_time_to_recovery_ms) == (0, None, None)


def test_explanations_and_auto_recovery(k):
    k.recovery.explain("t", failure_summary="API down", root_cause="upstream 503", retry_decision="retry in 5 min")
    e = k.recovery.explain("t", failure_summary="API down", root_cause="quota", retry_decision="stop",
                           user_action_required="raise the quota", severity="high")
    assert k.recovery.explanation("t") == e and (e.severity, e.user_action_required) == ("high", "raise the quota")
    assert k.recovery.task("t") is None
    assert k.recovery.set_auto_recovery("t", False).auto_recovery_enabled is False


def test_refusals(k):
    with refused(k, NotFound, "no recovery attempt 'nope'"):
        k.recovery.finish_attempt("nope", success=True)
    with refused(k, InvalidArgument, "severity must be one of low, medium, high, critical"):
        k.recovery.explain("t", failure_summary="s", root_cause="r", retry_decision="d", severity="meh")
    with refused(k, InvalidArgument, "error_message must not be empty"):
        k.recovery.record_failure("t", "x", "")
    with refused(k, InvalidArgument, "success must be a bool"):
        k.recovery.finish_attempt("a", success=1)


def test_repeated_command_ids(k, clock):
    a = k.recovery.start_attempt("t", "retry", command_id="s1")
    clock.advance(5)
    k.recovery.finish_attempt(a.attempt_id, success=True)
    before = snapshot(k)
    assert k.recovery.start_attempt("t", "retry", command_id="s1") == a  # unfinished, as then
    assert snapshot(k) == before
