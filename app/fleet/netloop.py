"""One network thread for many paho clients (paho-mqtt 2.x external-loop API).

Every virtual device keeps its own MQTT connection, because its last will (HELLO OFFLINE,
retained) is per connection. A `loop_start()` thread per client would cost a thread per device;
here one selector thread reads and writes every socket (`loop_read`, `loop_write`) and keeps them
alive (`loop_misc`), and one connector thread opens connections: TCP connects block, so they never
run on the selector thread, and at most `MAX_CONNECTING` CONNECTs await their CONNACK at a time, so
a thousand devices starting at once queue instead of storming the broker. A lost connection is
reopened with jittered exponential back-off. Message callbacks that do real work belong on
`dispatch` (an ordered worker pool), not on the network thread.

Thread safety: paho's `publish`/`subscribe` may be called from any thread. They queue the packet
and call `on_socket_register_write`; off the network thread that becomes a wake-up of the selector,
which then writes. Only the network thread touches sockets and the selector.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import selectors
import socket
import threading
import time
from collections.abc import Callable, Hashable

import paho.mqtt.client as mqtt

from app.fleet.mailbox import OrderedPool

log = logging.getLogger(__name__)

# CONNECTs awaiting CONNACK at once: Mosquitto answers a loopback CONNECT in about a millisecond, so
# 64 keeps it busy without piling up connections that all time out together on a slow broker.
MAX_CONNECTING = 64
# loop_misc (keepalive pings, dead-connection detection) runs for every client this often; paho asks
# for at least once a second.
MISC_PERIOD_S = 0.5
# Reconnect back-off bounds, seconds: quick after a blip, gentle on a broker that is down.
RECONNECT_MIN_S = 1.0
RECONNECT_MAX_S = 15.0
# Back-off is spread by up to this fraction, so devices dropped together do not return together.
RECONNECT_JITTER = 0.3
# Worker threads for message handlers: a deployment verifies images on a few devices at once; more
# threads buy nothing on a 2-core laptop.
HANDLER_THREADS = 4
# How long remove/kill/stop wait for the network thread to act.
OP_TIMEOUT_S = 5.0


class _Conn:
    """What the loop knows about one client."""

    __slots__ = ("awaiting_connack", "backoff", "client", "name", "reconnect", "scheduled", "sock", "want_write_io")

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client
        self.name = client._client_id.decode(errors="replace")  # paho has no public getter; for logs
        self.sock: socket.socket | None = None
        self.reconnect = True  # reopen after a loss; False once removed or killed
        self.backoff = RECONNECT_MIN_S
        self.awaiting_connack = False
        self.scheduled = False
        self.want_write_io = False  # registered for EVENT_WRITE (the socket buffer was full)


class NetLoop:
    """Runs the network side of many paho clients on one selector thread plus one connector thread."""

    def __init__(self, name: str = "mqtt-net", max_connecting: int = MAX_CONNECTING,
                 handler_threads: int = HANDLER_THREADS) -> None:
        self.name = name
        self.max_connecting = max_connecting
        self.dispatch_pool = OrderedPool(handler_threads, f"{name}-handler")
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._ops: list[Callable[[], None]] = []
        self._flush_requests: set[_Conn] = set()
        self._wake_pending = False
        self._conns: dict[mqtt.Client, _Conn] = {}
        self._flush: set[_Conn] = set()  # network thread only
        self._writing: _Conn | None = None
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, _Conn]] = []
        self._tiebreak = itertools.count()
        self._connecting = 0
        self._stopping = False
        self._net_ident = 0
        self._net_thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._connector = threading.Thread(target=self._connect_loop, name=f"{name}-connect", daemon=True)
        self._started = False
        self.counters = {"connects": 0, "connect_failures": 0, "connection_losses": 0}

    # ------------------------------------------------------------------ public
    def start(self) -> NetLoop:
        if not self._started:
            self._started = True
            self.dispatch_pool.start()
            self._net_thread.start()
            self._connector.start()
        return self

    @property
    def running(self) -> bool:
        return self._started and not self._stopping

    def add(self, client: mqtt.Client) -> None:
        """Take over a client set up with `connect_async()`: it is connected soon, in turn."""
        conn = _Conn(client)
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        with self._lock:
            self._conns[client] = conn
        self._schedule(conn, 0.0)

    def dispatch(self, key: Hashable, fn: Callable[[], object]) -> None:
        """Run `fn` off the network thread, after every earlier `fn` of the same key."""
        self.dispatch_pool.submit(key, fn)

    def stop_reconnecting(self, client: mqtt.Client) -> None:
        """A clean disconnect follows: do not reopen the connection when it closes."""
        conn = self._conns.get(client)
        if conn is not None:
            conn.reconnect = False

    def remove(self, client: mqtt.Client, timeout: float = OP_TIMEOUT_S) -> None:
        """Send what the client has queued (a DISCONNECT, say), close its socket and forget it."""
        self._call(lambda: self._drop(client, flush=True), timeout)

    def kill(self, client: mqtt.Client, timeout: float = OP_TIMEOUT_S) -> None:
        """Close the client's socket without a word (no DISCONNECT: the broker sends its last will)."""
        self._call(lambda: self._drop(client, flush=False), timeout)

    def stop(self, timeout: float = OP_TIMEOUT_S) -> None:
        """Flush and close every connection, then end the threads."""
        if not self._started or self._stopping:
            return
        self._call(self._drop_all, timeout)
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._wake()
        self._net_thread.join(timeout)
        self._connector.join(timeout)
        self.dispatch_pool.stop(timeout)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    # ------------------------------------------------------------------ paho socket callbacks
    def _on_net_thread(self) -> bool:
        return threading.get_ident() == self._net_ident

    def _on_socket_open(self, client: mqtt.Client, userdata: object, sock: socket.socket) -> None:
        conn = self._conns.get(client)
        if conn is not None:
            self._post(lambda: self._register(conn, sock))

    def _on_socket_close(self, client: mqtt.Client, userdata: object, sock: socket.socket) -> None:
        conn = self._conns.get(client)
        if conn is None:
            return
        if self._on_net_thread():
            self._closed(conn, sock)
        else:  # a stale socket closed by reconnect(): it was never (or is no longer) ours
            self._post(lambda: self._closed(conn, sock))

    def _on_register_write(self, client: mqtt.Client, userdata: object, sock: socket.socket) -> None:
        conn = self._conns.get(client)
        if conn is None:
            return
        if not self._on_net_thread():
            with self._lock:
                self._flush_requests.add(conn)
            self._wake()
        elif self._writing is conn:  # loop_write could not send it all: wait for the socket
            self._set_write_interest(conn, True)
        else:  # a callback on this thread published: write after the current event
            self._flush.add(conn)

    def _on_unregister_write(self, client: mqtt.Client, userdata: object, sock: socket.socket) -> None:
        conn = self._conns.get(client)
        if conn is None:
            return
        if not self._on_net_thread():
            return  # only _sock_close of a stale socket gets here; _closed deals with it
        self._set_write_interest(conn, False)
        if client.want_write():  # published between paho's check and the unregister: do not strand it
            self._flush.add(conn)

    # ------------------------------------------------------------------ network thread
    def _run(self) -> None:
        self._net_ident = threading.get_ident()
        next_misc = time.monotonic() + MISC_PERIOD_S
        while True:
            timeout = 0.0 if self._flush else max(0.0, next_misc - time.monotonic())
            for key, mask in self._sel.select(timeout):
                conn = key.data
                if conn is None:
                    self._drain_wake()
                    continue
                if mask & selectors.EVENT_READ and conn.sock is key.fileobj:
                    self._read(conn)
                if mask & selectors.EVENT_WRITE and conn.sock is key.fileobj:
                    self._write(conn)
            if self._run_ops():
                return
            while self._flush:
                batch, self._flush = self._flush, set()
                for conn in batch:
                    if conn.sock is not None:
                        self._write(conn)
            now = time.monotonic()
            if now >= next_misc:
                next_misc = now + MISC_PERIOD_S
                for conn in list(self._conns.values()):
                    if conn.sock is not None:
                        self._guard(conn, conn.client.loop_misc)

    def _guard(self, conn: _Conn, fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception:  # a callback bug of one client must not end the loop for all
            log.exception("%s: network step failed", conn.name)

    def _read(self, conn: _Conn) -> None:
        self._guard(conn, conn.client.loop_read)
        sock = conn.sock
        if conn.awaiting_connack and conn.client.is_connected():
            conn.awaiting_connack = False
            conn.backoff = RECONNECT_MIN_S
            self.counters["connects"] += 1
            self._release_connect_slot()
        if sock is not None and hasattr(sock, "pending") and sock.pending():
            self._flush.add(conn)  # TLS holds decrypted bytes the selector cannot see: come back
            self._guard(conn, conn.client.loop_read)

    def _write(self, conn: _Conn) -> None:
        self._writing = conn
        try:
            self._guard(conn, conn.client.loop_write)
        finally:
            self._writing = None

    def _set_write_interest(self, conn: _Conn, on: bool) -> None:
        if conn.sock is None or conn.want_write_io == on:
            return
        conn.want_write_io = on
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if on else 0)
        try:
            self._sel.modify(conn.sock, events, conn)
        except (KeyError, ValueError, OSError):
            log.debug("write interest change on a closed socket ignored")

    def _register(self, conn: _Conn, sock: socket.socket) -> None:
        if not conn.reconnect or conn.client not in self._conns:
            sock.close()  # removed while connecting
            return
        conn.sock = sock
        conn.want_write_io = False
        self._sel.register(sock, selectors.EVENT_READ, conn)
        self._flush.add(conn)  # the CONNECT packet is queued

    def _closed(self, conn: _Conn, sock: socket.socket) -> None:
        if conn.sock is not sock:
            return  # a stale socket: never registered, or already unregistered
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        conn.sock = None
        conn.want_write_io = False
        if conn.awaiting_connack:
            conn.awaiting_connack = False
            self.counters["connect_failures"] += 1
            self._release_connect_slot()
        elif conn.reconnect:
            self.counters["connection_losses"] += 1
        if conn.reconnect and not self._stopping:
            delay = conn.backoff * (1.0 + RECONNECT_JITTER * random.random())
            conn.backoff = min(conn.backoff * 2.0, RECONNECT_MAX_S)
            log.info("%s: connection closed, reconnecting in %.1f s", conn.name, delay)
            self._schedule(conn, delay)

    def _drop(self, client: mqtt.Client, flush: bool) -> None:
        conn = self._conns.get(client)
        if conn is None:
            return
        conn.reconnect = False
        if flush and conn.sock is not None and client.want_write():
            self._write(conn)  # paho closes the socket itself once its DISCONNECT is out
        sock = conn.sock
        if sock is not None:
            try:
                self._sel.unregister(sock)
            except (KeyError, ValueError):
                pass
            conn.sock = None
            sock.close()
        if conn.awaiting_connack:
            conn.awaiting_connack = False
            self._release_connect_slot()
        self._flush.discard(conn)
        with self._lock:
            self._conns.pop(client, None)

    def _drop_all(self) -> None:
        for client in list(self._conns):
            self._drop(client, flush=True)

    # ------------------------------------------------------------------ cross-thread plumbing
    def _wake(self) -> None:
        with self._lock:
            if self._wake_pending:
                return
            self._wake_pending = True
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (a wake-up is pending anyway) or closed at stop

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _post(self, op: Callable[[], None]) -> None:
        with self._lock:
            self._ops.append(op)
        self._wake()

    def _run_ops(self) -> bool:
        """Apply what other threads asked for; True when the loop must end."""
        with self._lock:
            ops, self._ops = self._ops, []
            self._flush |= self._flush_requests
            self._flush_requests = set()
            self._wake_pending = False
        for op in ops:
            try:
                op()
            except Exception:
                log.exception("network loop operation failed")
        return self._stopping and not self._ops

    def _call(self, fn: Callable[[], None], timeout: float) -> None:
        """Run fn on the network thread and wait for it (directly when already there or not running)."""
        if self._on_net_thread() or not self._net_thread.is_alive():
            fn()
            return
        done = threading.Event()

        def op() -> None:
            try:
                fn()
            finally:
                done.set()

        self._post(op)
        if not done.wait(timeout):
            log.warning("%s: network thread did not act within %.1f s", self.name, timeout)

    # ------------------------------------------------------------------ connector thread
    def _schedule(self, conn: _Conn, delay: float) -> None:
        with self._cv:
            if conn.scheduled:
                return
            conn.scheduled = True
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._tiebreak), conn))
            self._cv.notify()

    def _release_connect_slot(self) -> None:
        with self._cv:
            self._connecting = max(0, self._connecting - 1)
            self._cv.notify()

    def _next_due(self) -> _Conn | None:
        """Block until a connection may be opened; None at stop."""
        with self._cv:
            while not self._stopping:
                now = time.monotonic()
                if self._heap and self._connecting < self.max_connecting and self._heap[0][0] <= now:
                    _, _, conn = heapq.heappop(self._heap)
                    conn.scheduled = False
                    if not conn.reconnect or conn.sock is not None or conn.awaiting_connack:
                        continue
                    self._connecting += 1
                    conn.awaiting_connack = True
                    return conn
                wait = None
                if self._heap and self._connecting < self.max_connecting:
                    wait = self._heap[0][0] - now
                self._cv.wait(wait)
        return None

    def _connect_loop(self) -> None:
        while (conn := self._next_due()) is not None:
            name = conn.name
            try:
                conn.client.reconnect()
            except (OSError, ValueError, mqtt.WebsocketConnectionError) as exc:
                log.info("%s: cannot connect: %s", name, exc)
                self._post(lambda c=conn: self._connect_failed(c))
            except Exception:
                log.exception("%s: connect failed", name)
                self._post(lambda c=conn: self._connect_failed(c))

    def _connect_failed(self, conn: _Conn) -> None:
        if conn.sock is not None or not conn.awaiting_connack:
            return  # it did open after all; the socket close path handles it
        conn.awaiting_connack = False
        self.counters["connect_failures"] += 1
        self._release_connect_slot()
        if conn.reconnect and not self._stopping:
            delay = conn.backoff * (1.0 + RECONNECT_JITTER * random.random())
            conn.backoff = min(conn.backoff * 2.0, RECONNECT_MAX_S)
            self._schedule(conn, delay)


_default: NetLoop | None = None
_default_lock = threading.Lock()


def default_loop() -> NetLoop:
    """The process-wide loop for MQTT devices created without one (it lives as long as the process)."""
    global _default
    with _default_lock:
        if _default is None or not _default.running:
            _default = NetLoop("mqtt-net-default").start()
        return _default
