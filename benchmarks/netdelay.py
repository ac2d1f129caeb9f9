"""A network between the benchmarks' clients and their PostgreSQL server:
a TCP proxy (in a process of its own) that forwards each connection to the
server's unix socket and holds every chunk of bytes for a fixed time in each
direction, so that a round trip costs what it would cost between two hosts.

    with DelayedLink(cluster, one_way_ms=0.5) as link:
        url = link.url(dbname)     # postgresql://…@127.0.0.1:<port>/<dbname>

Delays are kept with ``time.sleep`` in one thread per direction (about 0.05
ms late each on this kind of machine); a chunk's bytes go on in order.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import socket
import threading
import time
import urllib.parse
from typing import Any


def _pump(source: socket.socket, sink: socket.socket, delay: float) -> None:
    """Move bytes from ``source`` to ``sink``, each chunk ``delay`` seconds after it arrived."""
    held: queue.SimpleQueue[tuple[float, bytes] | None] = queue.SimpleQueue()

    def send() -> None:
        while True:
            item = held.get()
            if item is None:
                break
            due, data = item
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                sink.sendall(data)
            except OSError:
                break
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            held.put((time.monotonic() + delay, data))
    except OSError:
        pass
    held.put(None)
    sender.join()


def _serve(server_socket: str, one_way_s: float, ports: Any, stop: Any) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.2)
    ports.put(listener.getsockname()[1])

    def relay(client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(server_socket)
        for s in (client,):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        back = threading.Thread(target=_pump, args=(upstream, client, one_way_s), daemon=True)
        back.start()
        _pump(client, upstream, one_way_s)
        back.join()
        client.close()
        upstream.close()

    while not stop.is_set():
        try:
            client, _ = listener.accept()
        except TimeoutError:
            continue
        threading.Thread(target=relay, args=(client,), daemon=True).start()
    listener.close()


class DelayedLink:
    """A TCP port in front of ``cluster``'s server, ``one_way_ms`` each way."""

    def __init__(self, cluster: Any, one_way_ms: float) -> None:
        self.cluster = cluster
        self.one_way_ms = one_way_ms
        self.port = 0

    def __enter__(self) -> DelayedLink:
        ctx = multiprocessing.get_context("spawn")
        ports = ctx.Queue()
        self._stop = ctx.Event()
        socket_path = os.path.join(self.cluster.root, ".s.PGSQL.5432")
        self._proc = ctx.Process(target=_serve, args=(socket_path, self.one_way_ms / 1000, ports, self._stop),
                                 daemon=True)
        self._proc.start()
        self.port = ports.get(timeout=30)
        return self

    def url(self, cluster_url: str) -> str:
        """``cluster_url`` (one of the cluster's, on its unix socket) through this link."""
        parts = urllib.parse.urlsplit(cluster_url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        user = query.pop("user", "")
        query.pop("host", None)
        return urllib.parse.urlunsplit(("postgresql", f"{user}@127.0.0.1:{self.port}", parts.path,
                                        urllib.parse.urlencode(query), ""))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()
