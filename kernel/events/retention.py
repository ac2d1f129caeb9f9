"""Events of retention (streams ``retention:policies`` and ``retention:<run id>``)."""

from __future__ import annotations

import msgspec

from eventkernel.events.base import KernelEvent


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    """One retention rule: forget the rows ``rule`` names once they are
    ``days`` days old (see :data:`eventkernel.services.retention.RULES`)."""

    rule: str
    days: int


class RetentionPoliciesSet(KernelEvent, tag="retention.policies_set"):
    """The file's retention policies are now ``policies`` (replacing any
    before; empty: none)."""

    policies: list[Policy]


class RowsForgotten(KernelEvent, tag="retention.rows_forgotten"):
    """A retention run forgot the rows of ``table`` whose primary keys are
    ``keys``, by ``rule``: rows ``days`` days old or older, i.e. last changed
    at or before ``cutoff_ms``. The events that made them stay in the journal
    until compaction or erasure; the projections drop the rows."""

    rule: str
    table: str
    keys: list[str]
    days: int
    cutoff_ms: int
