"""The kernel's domains, each declared once.

A domain is its events, its projection (a module with its SQL), its service
and the stream kinds it owns. One line of :class:`Services` registers it: the
attribute is the service the kernel exposes (``k.work``), typed for users'
type checkers, and its :class:`Domain` says what the rest of the kernel needs.
The projector, views of the past, ``k.append``'s and ``verify``'s guard of
the kernel's streams, the CLI's exports and the tests all read
:data:`DOMAINS`; nothing else keeps a list of domains.
"""

from collections.abc import Sequence
from types import ModuleType
from typing import Annotated, Any, get_type_hints

import msgspec

from eventkernel import journal
from eventkernel.codec import Event
from eventkernel.errors import InvalidArgument
from eventkernel.events import checkpoints as checkpoint_events
from eventkernel.events import commands as command_events
from eventkernel.events import config as config_events
from eventkernel.events import connections as connection_events
from eventkernel.events import documents as document_events
from eventkernel.events import graphs as graph_events
from eventkernel.events import idempotency as idempotency_events
from eventkernel.events import memory as memory_events
from eventkernel.events import metrics as metric_events
from eventkernel.events import recovery as recovery_events
from eventkernel.events import retention as retention_events
from eventkernel.events import sessions as session_events
from eventkernel.events import tasks as task_events
from eventkernel.events import work as work_events
from eventkernel.projections import (
    checkpoints,
    configurations,
    connections,
    document_index,
    graphs,
    idempotency_keys,
    memory_entries,
    metrics,
    recovery,
    retention,
    sessions,
    tasks,
    work_items,
)
from eventkernel.services.base import Context
from eventkernel.services.checkpoints import Checkpoints
from eventkernel.services.config import Config
from eventkernel.services.connections import Connections
from eventkernel.services.documents import Documents
from eventkernel.services.graphs import Graphs
from eventkernel.services.idempotency import Idempotency
from eventkernel.services.memory import Memory
from eventkernel.services.metrics import Metrics
from eventkernel.services.recovery import Recovery
from eventkernel.services.retention import Retention
from eventkernel.services.sessions import Sessions
from eventkernel.services.tasks import Tasks
from eventkernel.services.work import WorkQueue


class Domain(msgspec.Struct, frozen=True):
    """What the kernel needs to know of a domain besides its service."""

    events: ModuleType  # the module declaring its events (importing it registers them)
    projection: ModuleType  # NAME, VERSION, HANDLES, apply(), queries; SQL in schema/projections/NAME.sql
    stream_kinds: tuple[str, ...]  # the '<kind>:' of the streams only its commands write


class Services:
    """Every domain's service, one line each."""

    work: Annotated[WorkQueue, Domain(work_events, work_items, ("work_item",))]
    checkpoints: Annotated[Checkpoints, Domain(checkpoint_events, checkpoints, ("checkpoint",))]
    idempotency: Annotated[Idempotency, Domain(idempotency_events, idempotency_keys, ("idempotency",))]
    sessions: Annotated[Sessions, Domain(session_events, sessions, ("session",))]
    memory: Annotated[Memory, Domain(memory_events, memory_entries, ("memory", "memory_ttl"))]
    recovery: Annotated[Recovery, Domain(recovery_events, recovery, ("recovery",))]
    tasks: Annotated[Tasks, Domain(task_events, tasks, ("task", "workflow", "agent"))]
    graphs: Annotated[Graphs, Domain(graph_events, graphs, ("graph",))]
    retention: Annotated[Retention, Domain(retention_events, retention, ("retention",))]
    config: Annotated[Config, Domain(config_events, configurations, ("config", "config_keyring"))]
    connections: Annotated[Connections, Domain(connection_events, connections, ("connection",))]
    metrics: Annotated[Metrics, Domain(metric_events, metrics, ("metric",))]
    documents: Annotated[Documents, Domain(document_events, document_index, ("document",))]

    def _attach(self, ctx: Context) -> None:
        """Give this object (a kernel, or a view of the past) every domain's service."""
        for name, (service, _) in DOMAINS.items():
            setattr(self, name, service(ctx))


def _domains() -> dict[str, tuple[type, Domain]]:
    out = {}
    for name, hint in get_type_hints(Services, include_extras=True).items():
        service, domain = hint.__origin__, hint.__metadata__[0]
        out[name] = (service, domain)
    return out


DOMAINS: dict[str, tuple[type, Domain]] = _domains()
"""attribute name → (service class, Domain), in declaration order."""

PROJECTIONS: tuple[ModuleType, ...] = tuple(domain.projection for _, domain in DOMAINS.values())
"""The built-in projections, in the order they are applied."""

# Commands that change nothing record themselves under 'command:<id>'; erasures under 'erasure:<id>'.
KERNEL_STREAM_KINDS: frozenset[str] = frozenset(
    {kind for _, domain in DOMAINS.values() for kind in domain.stream_kinds} | {"command", "erasure"}
)
KERNEL_EVENTS: tuple[ModuleType, ...] = (*(domain.events for _, domain in DOMAINS.values()), command_events)


def check_application_append(stream: str, events: Any, event_ids: Any) -> Any:
    """Refuse an application append that would write what only the kernel's
    own commands write (their stream kinds, their events, command ids); the
    events as a list when one Event was given."""
    if isinstance(events, Event):
        events = [events]
    kind = journal.check_stream("append", stream).partition(":")[0]
    if kind in KERNEL_STREAM_KINDS:
        raise InvalidArgument(
            f"append refused: stream {stream!r} is of kind {kind!r}, which only the kernel's own commands "
            "write (k.work, k.memory, k.sessions, …), so that their rules hold; application events go to "
            "streams of other kinds, e.g. 'note:1'"
        )
    if isinstance(events, Sequence):
        for e in events:
            if getattr(type(e), "__kernel_owned__", False):
                raise InvalidArgument(
                    f"append refused: {type(e).__event_type__} events are written only by the kernel's "
                    "commands (k.work.* …), so that their rules hold"
                )
    if event_ids is not None and not isinstance(event_ids, str) and isinstance(event_ids, Sequence):
        for event_id in event_ids:
            if isinstance(event_id, str) and event_id.startswith("cmd:"):
                raise InvalidArgument(
                    f"append refused: event id {event_id!r} starts with 'cmd:', which is reserved for "
                    "command ids"
                )
    return events
