"""Events about commands themselves (stream ``command:<command_id>``)."""

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
