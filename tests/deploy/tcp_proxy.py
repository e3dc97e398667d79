"""A TCP proxy on loopback that the MQTT tests put between a client and Mosquitto to make real
network faults: cut every connection (the client's socket drops, paho reconnects), refuse new ones
for a while (an outage), or stall (bytes are held, nothing is closed: a link that hangs).

    proxy = TcpProxy(broker.port).start()
    conn = MqttConnection(proxy.url)
    proxy.cut()             # both sides see the connection drop
    proxy.set_down(True)    # ... and every reconnect is refused until set_down(False)
    proxy.set_stalled(True) # nothing is forwarded (either way) until set_stalled(False)

Plain Python, no pytest, so the campaign can make several. Every socket is closed by `close()`.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading

log = logging.getLogger(__name__)

# How often a pump thread looks at the stall/stop flags while no data flows (not a test wait).
POLL_S = 0.05
# Bytes read per recv: an MQTT chunk publish is ~4 KB, so one read moves it whole.
READ_SIZE = 65536
# Listen backlog: a fleet of devices reconnecting at once.
BACKLOG = 64
# Connecting to the upstream broker on loopback; a refused or slow upstream closes the client side.
UPSTREAM_CONNECT_TIMEOUT_S = 5.0


class _Pair:
    """One client connection and its upstream connection, pumped by one thread."""

    def __init__(self, proxy: TcpProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._pump, name="tcp-proxy-pump", daemon=True)

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _pump(self) -> None:
        peer = {self.client: self.upstream, self.upstream: self.client}
        sel = selectors.DefaultSelector()
        try:
            sel.register(self.client, selectors.EVENT_READ)
            sel.register(self.upstream, selectors.EVENT_READ)
            while not self.closed.is_set():
                if self.proxy.stalled.is_set():
                    self.proxy.unstalled_or_closed(POLL_S)
                    continue
                for key, _ in sel.select(POLL_S):
                    data = key.fileobj.recv(READ_SIZE)  # type: ignore[union-attr]
                    if not data:
                        return
                    peer[key.fileobj].sendall(data)  # type: ignore[index]
                    self.proxy.add_bytes(len(data))
        except (OSError, ValueError):
            pass  # cut by close(), or the other side went away
        finally:
            sel.close()
            self.close()
            self.proxy.forget(self)


class TcpProxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<upstream_port>; see the module docstring."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=BACKLOG)
        self.port = self._listener.getsockname()[1]
        self.stalled = threading.Event()
        self._resumed = threading.Condition()
        self._down = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pairs: set[_Pair] = set()
        self.forwarded = 0
        self.accepted = 0
        self.refused = 0
        self.cuts = 0
        self._thread = threading.Thread(target=self._accept, name="tcp-proxy-accept", daemon=True)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        self._thread.start()
        return self

    # ------------------------------------------------------------------ faults

    def cut(self) -> None:
        """Close every open connection now (both ends see it drop)."""
        with self._lock:
            pairs = list(self._pairs)
            self.cuts += 1
        for pair in pairs:
            pair.close()

    def set_down(self, down: bool) -> None:
        """While down, open connections are cut and new ones are closed as soon as accepted."""
        if down:
            self._down.set()
            self.cut()
        else:
            self._down.clear()

    def set_stalled(self, stalled: bool) -> None:
        """While stalled nothing is forwarded; held bytes flow again when the stall ends."""
        with self._resumed:
            if stalled:
                self.stalled.set()
            else:
                self.stalled.clear()
            self._resumed.notify_all()

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    # ------------------------------------------------------------------ internals

    def unstalled_or_closed(self, timeout: float) -> None:
        with self._resumed:
            self._resumed.wait_for(lambda: not self.stalled.is_set() or self._stop.is_set(), timeout)

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self.forwarded += n

    def forget(self, pair: _Pair) -> None:
        with self._lock:
            self._pairs.discard(pair)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._down.is_set() or self._stop.is_set():
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=UPSTREAM_CONNECT_TIMEOUT_S)
            except OSError:
                self.refused += 1
                client.close()  # the broker itself is down (restarting): the client sees a drop
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = _Pair(self, client, upstream)
            with self._lock:
                self._pairs.add(pair)
                self.accepted += 1
            pair.thread.start()

    def close(self) -> None:
        self._stop.set()
        self.set_stalled(False)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()
        self.cut()
        self._thread.join(UPSTREAM_CONNECT_TIMEOUT_S)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
