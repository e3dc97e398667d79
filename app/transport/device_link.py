"""DeviceTransport: the bytes-level link to one device that a DeviceChannel sits on.

Two links satisfy it: SerialLink (a port, framed) and MqttDeviceLink here (a device's command and
reply topics on a shared broker connection). The channel above does sequence numbers, replies and
listeners once, for both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from app.protocol import topics
from app.transport.mqtt_link import MqttConnection

MessageCallback = Callable[[bytes], None]
StateCallback = Callable[[bool, str], None]

# Commands must arrive (PROTOCOL.md 2.2): QoS 1; a redelivered duplicate is answered from the device's
# reply cache without acting twice (PROTOCOL.md 2.3).
COMMAND_QOS = 1


@runtime_checkable
class DeviceTransport(Protocol):
    """Send one encoded message; hear the messages that may answer a command; hear the link go
    up and down; close (what closing frees is the link's business: a shared connection stays)."""

    def send(self, message: bytes) -> int | None: ...

    def on_message(self, callback: MessageCallback) -> None: ...

    def on_state(self, callback: StateCallback) -> None: ...

    def close(self) -> None: ...


class MqttDeviceLink:
    """One device through the broker: commands to `.../cmd`, replies from `.../reply`; its
    telemetry and status (which never answer a command) go to `on_broadcast` listeners."""

    def __init__(self, connection: MqttConnection, site: str, device_id: str) -> None:
        self.connection = connection
        self._lock = threading.Lock()
        # "reply": messages that may answer a command; "broadcast": telemetry and status; "state"
        self._listeners: dict[str, list[Callable]] = {"reply": [], "broadcast": [], "state": []}
        self._cmd_topic = topics.device_topic(site, device_id, topics.CMD)
        self._subs = [
            (topics.device_topic(site, device_id, topics.REPLY), self._on_reply),
            (topics.device_topic(site, device_id, topics.TELEMETRY), self._on_broadcast),
            (topics.device_topic(site, device_id, topics.STATUS), self._on_broadcast),
        ]
        for topic, handler in self._subs:
            connection.subscribe(topic, handler)
        connection.on_state(self._on_state)

    def send(self, message: bytes) -> None:
        self.connection.publish(self._cmd_topic, message, qos=COMMAND_QOS)

    def on_message(self, callback: MessageCallback) -> None:
        self._listen("reply", callback)

    def on_broadcast(self, callback: MessageCallback) -> None:
        self._listen("broadcast", callback)

    def on_state(self, callback: StateCallback) -> None:
        self._listen("state", callback)

    def close(self) -> None:
        """Drop this device's subscriptions and listeners; the shared connection stays up."""
        for topic, handler in self._subs:
            self.connection.unsubscribe(topic, handler)
        self.connection.remove_state_listener(self._on_state)
        with self._lock:
            self._listeners = {kind: [] for kind in self._listeners}

    def _listen(self, kind: str, callback: Callable) -> None:
        with self._lock:
            self._listeners[kind].append(callback)

    def _tell(self, kind: str, *args: object) -> None:
        with self._lock:
            callbacks = list(self._listeners[kind])
        for callback in callbacks:
            callback(*args)

    def _on_reply(self, _topic: str, payload: bytes) -> None:
        self._tell("reply", payload)

    def _on_broadcast(self, _topic: str, payload: bytes) -> None:
        self._tell("broadcast", payload)

    def _on_state(self, up: bool, reason: str) -> None:
        self._tell("state", up, reason)
