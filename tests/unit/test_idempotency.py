from __future__ import annotations

import pytest

from eventkernel.errors import IdempotencyConflict, InvalidArgument, InvalidTransition, NotFound, TerminalState
from eventkernel.services.idempotency import request_hash

from support import refused, snapshot

BOTH_ENGINES = True  # the tests taking `k` run on a file and on PostgreSQL (conftest)


def test_first_call_starts_and_repeats_are_in_flight(k):
    first = k.idempotency.begin("pay-1", {"amount": 5, "to": "bob"}, task_id="t")
    assert first.status == "started" and first.key.status == "pending" and first.key.task_id == "t"
    before = snapshot(k)
    # Key order does not matter: the hash is over canonical JSON.
    assert k.idempotency.begin("pay-1", {"to": "bob", "amount": 5}).status == "in_flight"
    assert snapshot(k) == before


def test_completed_keys_return_the_cached_response(k):
    k.idempotency.begin("k", [1, 2])
    done = k.idempotency.complete("k", {"receipt": "r-9"})
    assert (done.status, done.response) == ("completed", {"receipt": "r-9"})
    again = k.idempotency.begin("k", [1, 2])
    assert (again.status, again.response) == ("completed", {"receipt": "r-9"})


def test_failed_keys_report_the_error(k):
    k.idempotency.begin("k", "req")
    k.idempotency.fail("k", "card declined")
    again = k.idempotency.begin("k", "req")
    assert (again.status, again.error) == ("failed", "card declined")


def test_a_different_request_under_a_live_key_is_a_conflict(k):
    k.idempotency.begin("k", {"amount": 5})
    with refused(k, IdempotencyConflict, "key 'k' is held until forever by a different request"):
        k.idempotency.begin("k", {"amount": 6})


def test_an_expired_key_may_be_reused(k, clock):
    k.idempotency.begin("k", {"amount": 5}, ttl_ms=1_000)
    k.idempotency.complete("k", "ok")
    clock.advance(999)
    with refused(k, IdempotencyConflict, "held until"):
        k.idempotency.begin("k", {"amount": 6})
    clock.advance(1)
    fresh = k.idempotency.begin("k", {"amount": 6})
    assert fresh.status == "started" and fresh.key.request_hash == request_hash({"amount": 6})
    assert k.idempotency.get("k").status == "pending"


def test_complete_and_fail_rules(k, clock):
    with refused(k, NotFound, "no idempotency key 'nope'; call begin\\(\\) first"):
        k.idempotency.complete("nope", 1)
    k.idempotency.begin("k", 1)
    k.idempotency.complete("k", 2)
    with refused(k, TerminalState, "key 'k' is already completed"):
        k.idempotency.fail("k", "late")
    k.idempotency.begin("short", 1, ttl_ms=10)
    clock.advance(10)
    with refused(k, InvalidTransition, "expired at"):
        k.idempotency.complete("short", 2)


def test_get(k):
    assert k.idempotency.get("k") is None
    k.idempotency.begin("k", 1, ttl_ms=50)
    row = k.idempotency.get("k")
    assert (row.status, row.expires_at, row.request_hash) == ("pending", row.created_at + 50, request_hash(1))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda k: k.idempotency.begin("", 1), "key must not be empty"),
        (lambda k: k.idempotency.begin("k", float("nan")), "NaN"),
        (lambda k: k.idempotency.begin("k", 1, ttl_ms=0), "ttl_ms must be between 1"),
        (lambda k: k.idempotency.complete("k", b"x"), "only JSON values"),
        (lambda k: k.idempotency.fail("k", ""), "error must not be empty"),
    ],
)
def test_bad_arguments(k, call, match):
    with refused(k, InvalidArgument, match):
        call(k)


def test_repeated_command_ids_return_the_original_result(k):
    first = k.idempotency.begin("k", 1, command_id="c1")
    k.idempotency.complete("k", "done")
    assert k.idempotency.begin("k", 1, command_id="c1") == first  # as it was: pending
