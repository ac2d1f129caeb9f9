"""LangGraph's long-term memory on the journal: ``EventKernelStore``.

    from eventkernel.integrations.langgraph import EventKernelStore

    with EventKernelStore.from_conn_string("agents.db") as store:
        graph = builder.compile(checkpointer=saver, store=store)

LangGraph's ``BaseStore`` (``get``/``put``/``delete``/``search``/
``list_namespaces``, sync and async, TTL with refresh on read) on the kernel's
versioned memory. The item ``key`` of namespace ``("users", "42")`` is the
memory ``langgraph:users.42`` / ``key``: every value it has had is a version
of that memory (``store.history``), deleting it is a soft delete, and
``EventKernelStore(k.at(position))`` answers as the store did at that
position. Refreshing a TTL on read is a touch, not a version.

Namespaces and keys: any LangGraph accepts. A label's ``%``, ``/`` and ``#``
(and lone surrogates, which UTF-8 cannot carry) are written ``%XX``; a key's
``%``, ``#``, NUL and lone surrogates likewise, and the empty key as ``%``.
An address longer than the kernel's 256-character ids is named by its hash
(``langgraph:#<sha256>``, ``#<sha256>``), the address itself kept in the
memory's metadata.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import heapq
import logging
import re
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    ensure_embeddings,
    get_text_at_path,
    tokenize_path,
    validate_op_namespace,
)

from eventkernel.aio import AsyncKernel
from eventkernel.errors import InvalidArgument, InvalidTransition, NotFound
from eventkernel.integrations import Opening, bind, catching_up
from eventkernel.kernel import Kernel
from eventkernel.kernel import open as open_kernel
from eventkernel.projections.memory_entries import MemoryEntry
from eventkernel.services.memory import MAX_TTL_MS
from eventkernel.validate import MAX_ID_LEN
from eventkernel.view import KernelView

__all__ = ["EventKernelStore"]

log = logging.getLogger(__name__)

_np: Any
try:  # optional: the [vectors] extra ranks semantic searches in one matrix product
    import numpy as _np
except ImportError:  # pragma: no cover - the test extra installs it
    _np = None

ROOT = "langgraph:"
"""The memory namespaces of the store's items start with this."""
_HASHED = ROOT + "#"
_PAGE = 4096  # the most items a search reads at once (its first page is what it may return)
_LABEL_ESCAPE = re.compile("[%/#\ud800-\udfff]")
_KEY_ESCAPE = re.compile("[%#\x00\ud800-\udfff]")
_ESCAPED = re.compile("%(u[0-9A-F]{4}|[0-9A-F]{2})")
_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
VECTORS = "langgraph-store/"
"""The document index's paths of the items' embeddings start with this."""
VECTOR_MODEL = "langgraph-store"


def vector_prefix(namespace: str, key: str) -> str:
    """Where the embeddings of the item at memory (namespace, key) are: one
    document per embedded field, ``<this><field path>``."""
    digest = hashlib.sha256(f"{namespace}\x00{key}".encode()).hexdigest()[:32]
    return f"{VECTORS}{digest}/"


_ITEM_PREFIX = len(vector_prefix("", ""))  # (every item's prefix has this length)


def _vector_path(prefix: str, path: str) -> str:
    return prefix + (path if len(path) <= 200 and "\x00" not in path and path.isprintable()
                     else "#" + hashlib.sha256(path.encode("utf-8", "surrogatepass")).hexdigest())


def _cosine(query: list[float], vectors: list[bytes]) -> float:
    """The best cosine similarity of ``query`` to any of the item's embeddings
    (float32 bytes); 0 against a zero vector, as LangGraph's stores say."""
    import array
    import math

    qn = math.sqrt(math.fsum(x * x for x in query))
    best = -math.inf
    for raw in vectors:
        v = array.array("f")
        v.frombytes(raw)
        n = math.sqrt(math.fsum(x * x for x in v))
        score = 0.0 if not n or not qn else math.fsum(a * b for a, b in zip(query, v, strict=True)) / (qn * n)
        best = max(best, score)
    return best


def _best_cosines(query: list[float], items: list[list[bytes]]) -> list[float]:
    """``_cosine`` of each item (each with at least one embedding), in one
    matrix product when NumPy is installed (the ``[vectors]`` extra) and the
    embeddings all have the query's length."""
    dim = len(query)
    if _np is None or any(len(raw) != 4 * dim for vectors in items for raw in vectors):
        return [_cosine(query, vectors) for vectors in items]
    q = _np.asarray(query, dtype=_np.float64)
    qn = float(_np.linalg.norm(q))
    rows = _np.frombuffer(b"".join(raw for vectors in items for raw in vectors), dtype="<f4")
    matrix = rows.reshape(-1, dim).astype(_np.float64)
    norms = _np.linalg.norm(matrix, axis=1)
    scores = _np.zeros(len(matrix)) if not qn else _np.divide(
        matrix @ q, norms * qn, out=_np.zeros(len(matrix)), where=norms > 0)
    owner = _np.repeat(_np.arange(len(items)), [len(vectors) for vectors in items])
    best = _np.full(len(items), -_np.inf)
    _np.maximum.at(best, owner, scores)
    return [float(x) for x in best]


def _escape_char(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"%{code:02X}" if code < 0x100 else f"%u{code:04X}"


def _unescape(text: str) -> str:
    return _ESCAPED.sub(lambda m: chr(int(m.group(1).lstrip("u"), 16)), text)


def _plain_namespace(namespace: tuple[str, ...]) -> str:
    return ROOT + ".".join(_LABEL_ESCAPE.sub(_escape_char, label) for label in namespace)


def _plain_key(key: str) -> str:
    return _KEY_ESCAPE.sub(_escape_char, key) if key else "%"


def _hashed(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def address(namespace: tuple[str, ...], key: str) -> tuple[str, str, dict[str, Any] | None]:
    """The memory (namespace, key) of a store item, and the metadata that
    keeps an address too long for the kernel's ids (None otherwise)."""
    ns, k = _plain_namespace(namespace), _plain_key(key)
    metadata: dict[str, Any] = {}
    if len(ns) > MAX_ID_LEN:
        metadata["namespace"] = ns
        ns = _HASHED + _hashed(ns)
    if len(k) > MAX_ID_LEN:
        metadata["key"] = k
        k = "#" + _hashed(k)
    return ns, k, {"langgraph": metadata} if metadata else None


def item_address(entry: MemoryEntry) -> tuple[tuple[str, ...], str]:
    """The store namespace and key of a memory written by the store."""
    kept = (entry.metadata or {}).get("langgraph", {})
    ns = kept.get("namespace", entry.namespace) if entry.namespace.startswith(_HASHED) else entry.namespace
    k = kept.get("key", entry.key) if entry.key.startswith("#") else entry.key
    return tuple(_unescape(label) for label in ns[len(ROOT):].split(".")), "" if k == "%" else _unescape(k)


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _compare(value: Any, wanted: Any) -> bool:
    """LangGraph's filter rule: a dict of ``$`` operators, a nested dict
    (every key matches), a list (element by element), else equality."""
    if isinstance(wanted, dict):
        if any(k.startswith("$") for k in wanted):
            return all(_operator(value, op, operand) for op, operand in wanted.items())
        return isinstance(value, dict) and all(_compare(value.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, list | tuple):
        return (isinstance(value, list | tuple) and len(value) == len(wanted)
                and all(_compare(v, w) for v, w in zip(value, wanted, strict=True)))
    return bool(value == wanted)


def _operator(value: Any, op: str, operand: Any) -> bool:
    if op == "$eq":
        return bool(value == operand)
    if op == "$ne":
        return bool(value != operand)
    try:
        a, b = float(value), float(operand)
    except (TypeError, ValueError):
        return False  # not numbers: no order, no match
    if op == "$gt":
        return a > b
    if op == "$gte":
        return a >= b
    if op == "$lt":
        return a < b
    return a <= b


def _check_filter(where: str, wanted: Any) -> None:
    """Refuse an operator LangGraph does not define, wherever it is nested."""
    if isinstance(wanted, dict):
        for k, v in wanted.items():
            if isinstance(k, str) and k.startswith("$") and k not in _OPERATORS:
                raise InvalidArgument(
                    f"{where} refused: filter operator {k!r} is not one of {', '.join(_OPERATORS)}")
            _check_filter(where, v)
    elif isinstance(wanted, list | tuple):
        for v in wanted:
            _check_filter(where, v)


def _matches_condition(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    if condition.match_type == "prefix":
        pairs = zip(namespace, path, strict=False)
    elif condition.match_type == "suffix":
        pairs = zip(reversed(namespace), reversed(path), strict=False)
    else:
        raise InvalidArgument(
            f"store.list_namespaces refused: match_type must be 'prefix' or 'suffix', got {condition.match_type!r}")
    return all(p == "*" or n == p for n, p in pairs)


class EventKernelStore(BaseStore):
    """A LangGraph store on an eventkernel journal (see the module's docstring).

    ``ttl`` is LangGraph's ``TTLConfig`` (``default_ttl`` minutes,
    ``refresh_on_read``, ``omit_expired``, ``sweep_interval_minutes``).
    ``index`` is LangGraph's ``IndexConfig`` (``dims``, ``embed``,
    ``fields``): the fields of every put are embedded (before the write
    transaction) and stored in the kernel's document index, one document per
    field (under ``langgraph-store/``), and ``search(query=…)`` ranks the
    items that pass the prefix and filter by their best cosine similarity,
    as LangGraph's ``InMemoryStore`` does. Without it, ``search`` filters and
    orders by last write.
    """

    supports_ttl = True

    def __init__(
        self, kernel: Kernel | AsyncKernel | KernelView, *, ttl: TTLConfig | None = None,
        index: IndexConfig | None = None,
    ) -> None:
        self.kernel, self._call = bind(kernel)
        self._catch_up = catching_up(self.kernel)
        self.index_config: dict[str, Any] | None = None
        self.embeddings: Any = None
        self._fields: list[tuple[str, Any]] = []
        if index is not None:
            self.index_config = dict(index)
            self.embeddings = ensure_embeddings(self.index_config.get("embed"))
            self._fields = [(p, tokenize_path(p)) if p != "$" else (p, p)
                            for p in (self.index_config.get("fields") or ["$"])]
        self.ttl_config = ttl
        self._owned = False
        self._sweeper: threading.Thread | None = None
        self._stop = threading.Event()

    @classmethod
    def from_conn_string(
        cls, path: str, *, ttl: TTLConfig | None = None, index: IndexConfig | None = None, **options: Any
    ) -> Opening[EventKernelStore]:
        """A store on its own kernel at ``path`` (options of
        :func:`eventkernel.open`), closed at the end of the ``with`` or
        ``async with`` block."""
        def make() -> EventKernelStore:
            store = cls(open_kernel(path, **options), ttl=ttl, index=index)
            store._owned = True
            return store

        return Opening(make)

    def close(self) -> None:
        """Stop the TTL sweeper; close the kernel if this store opened it."""
        self.stop_ttl_sweeper()
        if self._owned and isinstance(self.kernel, Kernel):
            self.kernel.close()

    # --- the one entry point ------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops`` in order: reads see the store as it was before the
        batch (as LangGraph's ``InMemoryStore`` does), then every write (the
        last write of each item wins) and TTL refresh commits together."""
        ops = list(ops)
        for op in ops:
            validate_op_namespace(op)
        if not all(isinstance(op, PutOp) for op in ops):
            self._catch_up()
        now = self._now()
        queries: dict[str, list[float]] = {}
        if self.embeddings is not None:
            for text in dict.fromkeys(op.query for op in ops if isinstance(op, SearchOp) and op.query):
                queries[text] = [float(x) for x in self.embeddings.embed_query(text)]
        results: list[Result] = []
        puts: dict[tuple[tuple[str, ...], str], PutOp] = {}
        touches: dict[tuple[str, str], None] = {}
        for op in ops:
            if isinstance(op, GetOp):
                entry = self._entry(op.namespace, op.key, now)
                results.append(None if entry is None else self._item(entry, op.namespace, op.key))
                if entry is not None and op.refresh_ttl and entry.ttl_ms is not None:
                    touches[(entry.namespace, entry.key)] = None
            elif isinstance(op, SearchOp):
                if op.query and op.query in queries:
                    scored = self._semantic(op, now, queries[op.query])
                    results.append([SearchItem(ns, key, e.value, _time(e.created_at), _time(e.updated_at),
                                               score=score) for score, e, ns, key in scored])
                    found = [(e, ns, key) for _, e, ns, key in scored]
                else:
                    found = self._search(op, now)
                    results.append([SearchItem(ns, key, e.value, _time(e.created_at), _time(e.updated_at))
                                    for e, ns, key in found])
                if op.refresh_ttl:
                    touches.update(((e.namespace, e.key), None) for e, _, _ in found if e.ttl_ms is not None)
            elif isinstance(op, ListNamespacesOp):
                results.append(self._list_namespaces(op, now))
            elif isinstance(op, PutOp):
                self._check_put(op)
                puts[(tuple(op.namespace), op.key)] = op
                results.append(None)
            else:
                raise InvalidArgument(f"store.batch refused: unknown operation {type(op).__name__}")
        if puts or (touches and not isinstance(self.kernel, KernelView)):
            self._write(puts, touches, self._embed(puts))
        return results

    def _embed(self, puts: dict[tuple[tuple[str, ...], str], PutOp]) -> dict[tuple[tuple[str, ...], str],
                                                                              list[tuple[str, str, list[float]]]]:
        """(field path, text, embedding) of every field each put indexes, the
        texts embedded in one call (outside any transaction: it may be a
        network call)."""
        if self.embeddings is None:
            return {}
        wanted: dict[tuple[tuple[str, ...], str], list[tuple[str, str]]] = {}
        for address_, op in puts.items():
            if op.value is None or op.index is False:
                continue
            fields = self._fields if op.index is None else [(p, tokenize_path(p)) for p in op.index]
            out = wanted.setdefault(address_, [])
            for path, field in fields:
                texts = get_text_at_path(op.value, field)
                if len(texts) > 1:
                    out += [(f"{path}.{i}", text) for i, text in enumerate(texts)]
                elif texts:
                    out.append((path, texts[0]))
        unique = list(dict.fromkeys(text for fields in wanted.values() for _, text in fields))
        if not unique:
            return {}
        vectors = dict(zip(unique, self.embeddings.embed_documents(unique), strict=True))
        return {a: [(path, text, [float(x) for x in vectors[text]]) for path, text in fields]
                for a, fields in wanted.items()}

    def _semantic(self, op: SearchOp, now: int, query: list[float]) -> list[
            tuple[float | None, MemoryEntry, tuple[str, ...], str]]:
        """Items under the prefix that pass the filter, ranked by their best
        cosine similarity to the query (offset and limit over the ranked
        ones); as LangGraph's InMemoryStore does, items without embeddings
        fill what the limit leaves, without a score."""
        documents = self.kernel.documents
        embedded, scoreless = [], []
        with self.kernel.reading():  # the items and their embeddings from one snapshot
            candidates = self._search(SearchOp(op.namespace_prefix, op.filter, 1 << 62, 0), now)
            # Every embedding of the store in one read when there are not many more of them than
            # the candidates have (a store of one user, say); else each candidate's own.
            every = documents.list(prefix=VECTORS, limit=4 * len(candidates) + 4)
            by_item: dict[str, list[bytes]] | None = None
            if len(every) <= 4 * len(candidates) + 3:
                by_item = {}
                for d in every:
                    if d.embedding is not None:
                        by_item.setdefault(d.file_path[:_ITEM_PREFIX], []).append(d.embedding)
            for e, ns, key in candidates:
                prefix = vector_prefix(e.namespace, e.key)
                vectors = by_item.get(prefix, []) if by_item is not None else [
                    d.embedding for d in documents.list(prefix=prefix) if d.embedding is not None]
                if vectors:
                    embedded.append((vectors, e, ns, key))
                else:
                    scoreless.append((None, e, ns, key))
        scores = _best_cosines(query, [vectors for vectors, _, _, _ in embedded])
        scored = [(score, e, ns, key) for score, (_, e, ns, key) in zip(scores, embedded, strict=True)]
        scored.sort(key=lambda s: -s[0])  # stable: ties keep the most recent first
        kept: list[tuple[float | None, MemoryEntry, tuple[str, ...], str]] = []
        kept += scored[op.offset:op.offset + op.limit]
        if scoreless and len(kept) < op.limit:
            kept += scoreless[:op.limit - len(kept)]
        return kept

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """``batch`` off the event loop."""
        return await self._call(self.batch, list(ops))  # type: ignore[no-any-return]

    # --- what the journal adds ----------------------------------------------------

    def history(self, namespace: tuple[str, ...], key: str) -> list[MemoryEntry]:
        """Every version of the item, oldest first: each put, delete and expiry
        (``value``, ``operation``, ``position``; the kernel's ``MemoryEntry``)."""
        ns, k, _ = address(tuple(namespace), str(key))
        return self.kernel.memory.history(ns, k)

    def sweep_ttl(self) -> int:
        """Record the expiry of every item whose TTL ran out; returns how many."""
        if isinstance(self.kernel, KernelView):
            return 0
        return self.kernel.memory.expire(ROOT)

    async def asweep_ttl(self) -> int:
        return await self._call(self.sweep_ttl)  # type: ignore[no-any-return]

    def start_ttl_sweeper(self, sweep_interval_minutes: float | None = None) -> concurrent.futures.Future[None]:
        """Sweep every ``sweep_interval_minutes`` (default: the TTL config's,
        else 5) on a daemon thread until ``stop_ttl_sweeper`` or ``close``.
        The future completes when the sweeper stops; cancelling it stops it."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        if not self.ttl_config or (self._sweeper is not None and self._sweeper.is_alive()):
            if not self.ttl_config:
                future.set_result(None)
            else:
                future.add_done_callback(lambda f: self._stop.set() if f.cancelled() else None)
            return future
        interval = 60.0 * float(sweep_interval_minutes or self.ttl_config.get("sweep_interval_minutes") or 5)
        self._stop.clear()

        def sweep() -> None:
            while not self._stop.wait(interval):
                try:
                    self.sweep_ttl()
                except Exception:  # a failed sweep is logged; the next one tries again
                    log.exception("EventKernelStore: TTL sweep failed")
            if not future.cancelled():
                future.set_result(None)

        self._sweeper = threading.Thread(target=sweep, daemon=True, name="eventkernel-store-ttl")
        self._sweeper.start()
        future.add_done_callback(lambda f: self._stop.set() if f.cancelled() else None)
        return future

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        """Stop the sweeper; False if it is still running after ``timeout`` seconds."""
        if self._sweeper is None or not self._sweeper.is_alive():
            return True
        self._stop.set()
        self._sweeper.join(timeout)
        if self._sweeper.is_alive():
            return False
        self._sweeper = None
        return True

    # --- reading ------------------------------------------------------------------

    def _now(self) -> int:
        return self.kernel.memory._ctx.now()

    def _omit(self, entry: MemoryEntry, now: int) -> bool:
        """An item past its deadline, not yet swept, is hidden only under ``omit_expired``."""
        return bool(self.ttl_config and self.ttl_config.get("omit_expired")
                    and entry.expires_at is not None and entry.expires_at <= now)

    def _entry(self, namespace: tuple[str, ...], key: str, now: int) -> MemoryEntry | None:
        ns, k, _ = address(tuple(namespace), str(key))
        entry = self.kernel.memory.get(ns, k)
        return None if entry is None or self._omit(entry, now) else entry

    @staticmethod
    def _item(entry: MemoryEntry, namespace: tuple[str, ...], key: str) -> Item:
        return Item(value=entry.value, key=key, namespace=tuple(namespace),
                    created_at=_time(entry.created_at), updated_at=_time(entry.updated_at))

    @staticmethod
    def _sources(prefix: tuple[str, ...]) -> list[str]:
        """The memory namespace prefixes that hold every item under ``prefix``
        (and maybe others, to check): its plain name's, and the namespaces
        named by a hash (rare)."""
        plain = _plain_namespace(prefix)
        # A plain prefix never covers a hashed namespace ('#' is escaped in labels), except the root.
        return [ROOT] if not prefix else [plain, _HASHED] if len(plain) <= MAX_ID_LEN else [_HASHED]

    def _live(self, prefix: tuple[str, ...], now: int) -> Iterator[tuple[MemoryEntry, tuple[str, ...], str]]:
        """Every live item under ``prefix``: those of plain namespaces through
        a range of the index, those named by a hash (rare) all, each checked
        against the prefix here."""
        n = len(prefix)
        for source in self._sources(prefix):
            for entry in self.kernel.memory.list(source):
                ns, key = item_address(entry)
                if ns[:n] == prefix and not self._omit(entry, now):
                    yield entry, ns, key

    def _search(self, op: SearchOp, now: int) -> list[tuple[MemoryEntry, tuple[str, ...], str]]:
        """Items under the prefix that pass the filter, the most recently
        written first (then by address), ``offset``/``limit`` applied: read
        newest first in pages, so that a search stops once it has its page
        instead of reading every item under the prefix."""
        if op.filter:
            _check_filter("store.search", op.filter)
        if op.limit < 0 or op.offset < 0:
            raise InvalidArgument(f"store.search refused: limit and offset must be >= 0, got {op.limit} and {op.offset}")
        if op.limit == 0:
            return []
        wanted = op.filter or {}
        prefix = tuple(op.namespace_prefix)
        n, skip = len(prefix), op.offset
        found: list[tuple[MemoryEntry, tuple[str, ...], str]] = []
        first = op.offset + op.limit if not wanted else 4 * (op.offset + op.limit)
        with self.kernel.reading():  # one snapshot for every page
            pages = [self._recent(source, first) for source in self._recent_sources(prefix)]
            for e in pages[0] if len(pages) == 1 else heapq.merge(*pages, key=lambda e: -e.position):
                ns, key = item_address(e)
                if ns[:n] != prefix or self._omit(e, now) or not all(_compare(e.value.get(k), v)
                                                                      for k, v in wanted.items()):
                    continue
                if skip:
                    skip -= 1
                    continue
                found.append((e, ns, key))
                if len(found) == op.limit:
                    break
        return found

    @staticmethod
    def _recent_sources(prefix: tuple[str, ...]) -> list[tuple[str, str | None]]:
        """What holds every item under ``prefix`` (and maybe others, to
        check), as (prefix, namespace) of ``memory.recent``: the namespace of
        the prefix itself, those below it, and the namespaces named by a hash (rare)."""
        if not prefix:
            return [(ROOT, None)]
        plain = _plain_namespace(prefix)
        if len(plain) > MAX_ID_LEN:
            return [(_HASHED, None)]  # (every namespace under it is named by a hash too)
        out: list[tuple[str, str | None]] = [("", plain), (_HASHED, None)]
        if len(plain) + 2 <= MAX_ID_LEN:  # (a plain namespace below it: one more label)
            out.append((plain + ".", None))
        return out

    def _recent(self, source: tuple[str, str | None], first: int) -> Iterator[MemoryEntry]:
        """The live entries of ``source``, the most recently written first,
        in pages that grow from ``first`` entries."""
        memory, before, size = self.kernel.memory, None, max(1, min(first, _PAGE))
        while True:
            page = memory.recent(source[0], namespace=source[1], limit=size, before=before)
            yield from page
            if len(page) < size:
                return
            before, size = page[-1].position, min(size * 4, _PAGE)

    def _list_namespaces(self, op: ListNamespacesOp, now: int) -> list[tuple[str, ...]]:
        if op.limit < 0 or op.offset < 0:
            raise InvalidArgument(
                f"store.list_namespaces refused: limit and offset must be >= 0, got {op.limit} and {op.offset}")
        if op.max_depth is not None and op.max_depth < 1:
            raise InvalidArgument(f"store.list_namespaces refused: max_depth must be >= 1, got {op.max_depth}")
        names: set[tuple[str, ...]] = set()
        if self.ttl_config and self.ttl_config.get("omit_expired"):
            names = {ns for _, ns, _ in self._live((), now)}
        else:
            memory = self.kernel.memory
            for name in memory.namespaces(ROOT):
                first = memory.list(name, limit=1)[0] if name.startswith(_HASHED) else None
                names.add(item_address(first)[0] if first is not None else
                          tuple(_unescape(label) for label in name[len(ROOT):].split(".")))
        conditions = op.match_conditions or ()
        kept = {ns if op.max_depth is None else ns[:op.max_depth]
                for ns in names if all(_matches_condition(c, ns) for c in conditions)}
        return sorted(kept)[op.offset:op.offset + op.limit]

    # --- writing ------------------------------------------------------------------

    def _check_put(self, op: PutOp) -> None:
        if not op.namespace:
            raise InvalidArgument("store.put refused: the namespace must not be empty")
        if op.value is not None and not isinstance(op.value, dict):
            raise InvalidArgument(f"store.put refused: value must be a dict, got {type(op.value).__name__}")
        ttl = op.ttl
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float)
                                or not 0 < ttl * 60_000 <= MAX_TTL_MS):
            raise InvalidArgument(f"store.put refused: ttl must be a positive number of minutes, got {ttl!r:.60}")

    def _write(self, puts: dict[tuple[tuple[str, ...], str], PutOp], touches: dict[tuple[str, str], None],
               embedded: dict[tuple[tuple[str, ...], str], list[tuple[str, str, list[float]]]]) -> None:
        memory, documents = self.kernel.memory, self.kernel.documents
        together = self.kernel.transaction() if isinstance(self.kernel, Kernel) else contextlib.nullcontext()
        with together:
            for (namespace, key), op in puts.items():
                ns, k, metadata = address(namespace, key)
                touches.pop((ns, k), None)  # written anew: its TTL counts from now anyway
                if self.embeddings is not None:  # its embeddings are those of this put (or none)
                    prefix = vector_prefix(ns, k)
                    for old in documents.list(prefix=prefix):
                        documents.delete(old.file_path)
                    for path, text, vector in embedded.get((namespace, key), ()):
                        documents.index(_vector_path(prefix, path), title=path[:10_000] or "$", content=text,
                                        embedding=vector, embedding_model=VECTOR_MODEL)
                if op.value is None:
                    with contextlib.suppress(NotFound, InvalidTransition):  # deleting nothing is fine
                        memory.delete(ns, k)
                else:
                    ttl_ms = None if op.ttl is None else max(1, round(op.ttl * 60_000))
                    memory.put(ns, k, dict(op.value), metadata=metadata, ttl_ms=ttl_ms)
            for ns, k in touches:
                memory.touch(ns, k)
