"""Device side of MQTT (PROTOCOL.md 2.2): one paho client per virtual device, as a real node has.

Last will = HELLO with state OFFLINE, retained on `.../status`, so the broker announces a vanished
device; a retained HELLO on every (re)connect; commands from `.../cmd`; replies, telemetry and
stream windows on their topics with the QoS the table gives. During a pull transfer it subscribes
to `<source>/+` and feeds the chunks to the engine.

The client has no thread of its own: a shared `NetLoop` (app/fleet/netloop.py) does the network
work of every device, connects them in turn and reconnects with back-off, and runs the device's
command handling on its ordered worker pool (one device's commands in order, never on the network
thread). `pump()` may be called from any thread (paho's publish is thread-safe with that loop).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from app.domain.errors import LinkError
from app.fleet.device import Outgoing, VirtualDevice
from app.fleet.netloop import NetLoop, default_loop
from app.protocol import topics
from app.protocol.messages import encode
from app.transport.credentials import password_for
from app.transport.mqtt_link import set_tls
from app.transport.urls import parse_broker_url

log = logging.getLogger(__name__)

# A dead broker is noticed within 1.5 keepalives; short enough for "offline" to appear quickly.
KEEPALIVE_S = 15
# QoS per channel (PROTOCOL.md 2.2): presence and replies must arrive; telemetry/stream may drop.
QOS = {topics.STATUS: 1, topics.REPLY: 1, topics.TELEMETRY: 0, topics.STREAM: 0}
# paho queues at most this many outgoing messages while disconnected (stream/telemetry are lossy).
MAX_QUEUED = 1000
# A graceful stop waits this long for the broker to take the OFFLINE status.
OFFLINE_PUBLISH_TIMEOUT_S = 2.0


class MqttDevice:
    """Connects one VirtualDevice to a broker. `pump(now)` runs its tick; call it from a scheduler."""

    def __init__(self, device: VirtualDevice, broker_url: str, net: NetLoop | None = None) -> None:
        self.device = device
        self.url = parse_broker_url(broker_url)
        self._net = net
        # called (from a worker thread) after every handled command: lets a scheduler re-plan ticks
        self.on_command: Callable[[], None] | None = None
        self._topic = {leaf: topics.device_topic(device.site, device.device_id, leaf)
                       for leaf in (topics.STATUS, topics.REPLY, topics.TELEMETRY, topics.STREAM, topics.CMD)}
        self._pull_sub: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self.connected = threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"tinymlops-sim-{device.device_id}",
                             clean_session=True)
        if self.url.username:
            client.username_pw_set(self.url.username, password_for(self.url))
        if self.url.tls:
            set_tls(client, self.url, device.device_id)
        client.will_set(self._topic[topics.STATUS], device.offline_hello(), qos=1, retain=True)
        client.max_queued_messages_set(MAX_QUEUED)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client

    @property
    def net(self) -> NetLoop:
        if self._net is None:
            self._net = default_loop()
        return self._net

    def start(self) -> None:
        try:
            self.client.connect_async(self.url.host, self.url.port, KEEPALIVE_S)
        except (OSError, ValueError) as exc:
            raise LinkError(f"{self.device.device_id}: cannot reach broker {self.url.address}: {exc}") from exc
        self.net.add(self.client)

    def announce_offline(self) -> mqtt.MQTTMessageInfo | None:
        """First half of a graceful stop: publish OFFLINE ourselves (a clean disconnect fires no will)."""
        self.net.stop_reconnecting(self.client)
        if not self.connected.is_set():
            return None
        return self.client.publish(self._topic[topics.STATUS], self.device.offline_hello(), qos=1, retain=True)

    def disconnect(self) -> None:
        """Second half: DISCONNECT, then the loop flushes it and forgets the client."""
        self.net.stop_reconnecting(self.client)
        self.connected.clear()
        self.client.disconnect()
        self.net.remove(self.client)

    def stop(self, graceful: bool = True) -> None:
        info = self.announce_offline() if graceful else None
        if info is not None:
            try:
                info.wait_for_publish(OFFLINE_PUBLISH_TIMEOUT_S)
            except (RuntimeError, ValueError):
                pass
        self.disconnect()

    def kill(self) -> None:
        """Vanish without a word (the broker's last will announces it): for tests of presence."""
        self.connected.clear()
        self.net.kill(self.client)

    # ------------------------------------------------------------------ paho callbacks
    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if reason_code.is_failure:
            log.warning("%s: broker refused: %s", self.device.device_id, reason_code)
            return
        client.subscribe(self._topic[topics.CMD], qos=1)
        with self._lock:
            self._pull_sub = None
        self._sync_pull()
        self._send([(topics.STATUS, self._hello_bytes())])
        self.connected.set()
        log.info("%s: connected to %s", self.device.device_id, self.url.address)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        self.connected.clear()
        log.info("%s: disconnected (%s)", self.device.device_id, reason_code)

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        # network thread: hand the work to this device's ordered mailbox and return at once
        self.net.dispatch(self, lambda: self._handle(message.topic, message.payload))

    def _handle(self, topic: str, payload: bytes) -> None:
        try:
            if topic == self._topic[topics.CMD]:
                out = self.device.handle(payload)
            else:
                out = self.device.handle_pull_chunk(payload)
            self._send(out)
            self._sync_pull()
        except Exception:  # one bad message must not take the worker down
            log.exception("%s: failed handling a message on %s", self.device.device_id, topic)
        if topic == self._topic[topics.CMD] and self.on_command is not None:
            self.on_command()

    # ------------------------------------------------------------------ output
    def _hello_bytes(self) -> bytes:
        return encode(self.device.hello(), 0)

    def pump(self, now: float | None = None) -> list[Outgoing]:
        """Advance the device to `now`, publish what it produced and return it (for a scheduler)."""
        out = self.device.tick(time.monotonic() if now is None else now)
        self._send(out)
        self._sync_pull()
        return out

    def _send(self, out: list[Outgoing]) -> None:
        for channel, data in out:
            if channel in (topics.TELEMETRY, topics.STREAM) and not self.connected.is_set():
                continue  # lossy channels are not queued across an outage
            self.client.publish(self._topic[channel], data, qos=QOS[channel], retain=channel == topics.STATUS)

    def _sync_pull(self) -> None:
        """Subscribe to the pull source while the engine wants chunks, unsubscribe when done, and
        subscribe again when the engine starts a new fetch round (a subscribe redelivers retained chunks)."""
        want = self.device.pull_request
        with self._lock:
            have = self._pull_sub
            if want == have:
                return
            self._pull_sub = want
        if have:
            self.client.unsubscribe(f"{have[0]}/+")
        if want:
            self.client.subscribe(f"{want[0]}/+", qos=1)
