"""The embedded default: an amqtt MQTT broker in a background thread, on loopback only.

A fresh machine has no broker; the application starts this one so that the virtual fleet and the
operator can talk at once. It listens on 127.0.0.1 only (nothing is exposed to the plant network)
on a port the OS picks, so two instances never collide.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from concurrent.futures import Future
from typing import Any

from app.domain.errors import LinkError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# amqtt binds in milliseconds; a slow, loaded machine still starts it well within this.
START_TIMEOUT_S = 15.0
# Shutdown closes every session; beyond this the thread is abandoned (it is a daemon).
STOP_TIMEOUT_S = 10.0
# amqtt 0.12 logs a client that went away before its CONNECT (a port check, a crashed or killed
# client, a laptop that slept) at ERROR, and then again at WARNING. It is an everyday event, not a
# fault of the broker: (amqtt's level, start of its message, the level it is logged at here).
_REGRADED = (
    (logging.ERROR, "No data from ", logging.INFO),
    (logging.WARNING, "Failed to initialize client session: No data", logging.DEBUG),
)


def _config() -> dict[str, Any]:
    """amqtt 0.12 BrokerConfig in dict form: one TCP listener, anonymous clients, no $SYS noise."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:0"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


def _quiet_cancelled(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    if isinstance(context.get("exception"), asyncio.CancelledError):
        log.debug("cancelled during broker shutdown: %s", context.get("message"))
        return
    loop.default_exception_handler(context)


class _Regrade(logging.Filter):
    """Lowers amqtt's records for a client that went away to the level they deserve (`_REGRADED`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for level, prefix, lowered in _REGRADED:
            if record.levelno == level and str(record.msg).startswith(prefix):
                record.levelno, record.levelname = lowered, logging.getLevelName(lowered)
                return logging.getLogger(record.name).isEnabledFor(lowered)
        return True


def _regrade_amqtt_logs() -> None:
    amqtt_log = logging.getLogger("amqtt.broker")
    if not any(isinstance(f, _Regrade) for f in amqtt_log.filters):
        amqtt_log.addFilter(_Regrade())


class _SnapshotDict(dict):
    """A dict whose iteration walks a copy of its keys/items, safe across awaits that mutate it."""

    def __iter__(self):
        return iter(list(super().keys()))

    def items(self):
        return list(super().items())


class EmbeddedBroker:
    """`start()` returns `mqtt://127.0.0.1:PORT`; `stop()` shuts the broker and its loop down."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self._stopped: asyncio.Event | None = None
        self.port: int | None = None

    @property
    def url(self) -> str | None:
        return f"mqtt://{HOST}:{self.port}" if self.port else None

    def start(self) -> str:
        if self._thread is not None:
            raise LinkError("embedded broker already started")
        ready: Future[int] = Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="embedded-broker", daemon=True)
        self._thread.start()
        try:
            self.port = ready.result(START_TIMEOUT_S)
        except TimeoutError as exc:
            raise LinkError(f"embedded MQTT broker did not start within {START_TIMEOUT_S:.0f} s") from exc
        except Exception as exc:
            self._thread = None
            raise LinkError(f"embedded MQTT broker failed to start: {exc}") from exc
        log.info("embedded MQTT broker listening on %s", self.url)
        return self.url or ""

    def _run(self, ready: Future[int]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(ready))
        except Exception as exc:  # a failure after start-up must not kill the process silently
            log.exception("embedded MQTT broker stopped with an error")
            if not ready.done():
                ready.set_exception(exc)
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self, ready: Future[int]) -> None:
        from amqtt.broker import Broker  # imported here: amqtt is only needed for the embedded default

        self._stopped = asyncio.Event()
        _regrade_amqtt_logs()
        self._broker = Broker(_config())
        # amqtt 0.12 iterates its subscription table across awaits (publishing retained messages
        # to a connecting client) while other clients (un)subscribe: "dictionary changed size
        # during iteration" kills that client's session. Iterating a snapshot is what it means.
        self._broker._subscriptions = _SnapshotDict(self._broker._subscriptions)
        await self._broker.start()
        server = self._broker._servers["default"].instance  # amqtt keeps the asyncio.Server here
        ready.set_result(server.sockets[0].getsockname()[1])
        await self._stopped.wait()
        await self._broker.shutdown()
        # Connections still in their handshake are tasks amqtt does not track: cancel them cleanly.
        # (Python 3.11's stream callback then reports their CancelledError: that one is expected.)
        asyncio.get_running_loop().set_exception_handler(_quiet_cancelled)
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def stop(self) -> None:
        """Disconnect every client and stop; safe to call twice."""
        thread, loop, stopped = self._thread, self._loop, self._stopped
        if thread is None or loop is None or stopped is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already ended on its own
            loop.call_soon_threadsafe(stopped.set)
        thread.join(STOP_TIMEOUT_S)
        if thread.is_alive():
            log.warning("embedded MQTT broker did not stop within %.0f s", STOP_TIMEOUT_S)
        self._thread = None
        self.port = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
