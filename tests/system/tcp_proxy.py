"""A TCP proxy on loopback that a test can cut and restore, to fake a database outage.

``cut()`` closes every proxied connection and the listening socket, so that
new connections are refused at once; ``restore()`` listens again on the same
port. Threads, not asyncio: the tests that use it are threaded already.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream`` until cut."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.port = 0
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._accepting: threading.Event | None = None
        self._accept_thread: threading.Thread | None = None

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        accepting = threading.Event()
        accepting.set()
        self._accepting = accepting
        self._accept_thread = threading.Thread(
            target=self._accept_loop,
            args=(listener, accepting),
            name="tcp-proxy-accept",
            daemon=True,
        )
        self._accept_thread.start()

    def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        if self._accepting is not None:
            self._accepting.clear()
        if self._accept_thread is not None:
            # The accept loop closes the listening socket as it ends.
            self._accept_thread.join(5)
        with self._lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            _close(connection)

    def restore(self) -> None:
        """Listen again, on the same port."""
        self.start()

    def close(self) -> None:
        self.cut()

    def connection_count(self) -> int:
        """Connections being forwarded now."""
        with self._lock:
            return len(self._connections) // 2

    def _accept_loop(self, listener: socket.socket, accepting: threading.Event) -> None:
        # A blocked accept() is not woken by close() on Linux: poll instead.
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            while accepting.is_set():
                if not selector.select(timeout=0.05):
                    continue
                try:
                    client, _ = listener.accept()
                except OSError:
                    continue
                self._connect(client, accepting)
        listener.close()

    def _connect(self, client: socket.socket, accepting: threading.Event) -> None:
        try:
            server = socket.create_connection(self.upstream, timeout=5)
            server.settimeout(None)
        except OSError:
            _close(client)
            return
        with self._lock:
            if not accepting.is_set():
                _close(client)
                _close(server)
                return
            self._connections.update((client, server))
        for source, target in ((client, server), (server, client)):
            thread = threading.Thread(
                target=self._pump, args=(source, target), name="tcp-proxy-pump", daemon=True
            )
            thread.start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._connections.discard(source)
                self._connections.discard(target)
            _close(source)
            _close(target)


def _close(sock: socket.socket) -> None:
    # shutdown() first: it wakes a thread blocked in recv() on this socket.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
