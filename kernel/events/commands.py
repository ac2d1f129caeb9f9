"""Events about commands themselves (stream ``command:<command_id>``) and the
journal's own operations (stream ``erasure:<id>``)."""

from __future__ import annotations

from eventkernel.events.base import KernelEvent


class CommandRecorded(KernelEvent, tag="command.recorded"):
    """A command given a ``command_id`` ran and changed nothing (a claim that
    found no work, a status set to the one it had). Recorded so that the id
    stays bound to that command: a retry with it returns what the first call
    returned, as of this event, instead of running again. ``outcome`` names
    which answer it was, where a command has several that change nothing."""

    command: str
    outcome: str | None = None


class PayloadsErased(KernelEvent, tag="journal.payloads_erased"):
    """``k.erase`` blanked the payloads (and metadata) of ``count`` journal
    rows chosen by the selector (one of ``stream``, ``stream_prefix``,
    ``correlation_id``), the first at ``first`` and the last at ``last``;
    the table ``erased`` lists each with the digests it was chained over.
    ``reason`` says why, the event's actor who."""

    reason: str
    count: int
    first: int
    last: int
    stream: str | None = None
    stream_prefix: str | None = None
    correlation_id: str | None = None
