"""Device side of MQTT (PROTOCOL.md 2.2): one paho client per virtual device, as a real node has.

Last will = HELLO with state OFFLINE, retained on `.../status`, so the broker announces a vanished
device; a retained HELLO on every (re)connect; commands from `.../cmd`; replies, telemetry and
stream windows on their topics with the QoS the table gives. During a pull transfer it subscribes
to `<source>/+` and feeds the chunks to the engine. paho reconnects by itself with back-off.
"""

from __future__ import annotations

import logging
import threading
import time

import paho.mqtt.client as mqtt

from app.domain.errors import LinkError
from app.fleet.device import Outgoing, VirtualDevice
from app.protocol import topics
from app.transport.urls import parse_broker_url

log = logging.getLogger(__name__)

# A dead broker is noticed within 1.5 keepalives; short enough for "offline" to appear quickly.
KEEPALIVE_S = 15
# Reconnect back-off bounds, seconds: quick after a blip, gentle on a broker that is down.
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 15
# QoS per channel (PROTOCOL.md 2.2): presence and replies must arrive; telemetry/stream may drop.
QOS = {topics.STATUS: 1, topics.REPLY: 1, topics.TELEMETRY: 0, topics.STREAM: 0}
# paho queues at most this many outgoing messages while disconnected (stream/telemetry are lossy).
MAX_QUEUED = 1000


class MqttDevice:
    """Connects one VirtualDevice to a broker. `pump(now)` runs its tick; call it from a scheduler."""

    def __init__(self, device: VirtualDevice, broker_url: str) -> None:
        self.device = device
        self.url = parse_broker_url(broker_url)
        self._topic = {leaf: topics.device_topic(device.site, device.device_id, leaf)
                       for leaf in (topics.STATUS, topics.REPLY, topics.TELEMETRY, topics.STREAM, topics.CMD)}
        self._pull_sub: str | None = None
        self._lock = threading.Lock()
        self.connected = threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"tinymlops-sim-{device.device_id}",
                             clean_session=True)
        if self.url.username:
            client.username_pw_set(self.url.username, self.url.password)
        if self.url.tls:
            client.tls_set()
        client.will_set(self._topic[topics.STATUS], device.offline_hello(), qos=1, retain=True)
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        client.max_queued_messages_set(MAX_QUEUED)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client

    def start(self) -> None:
        try:
            self.client.connect_async(self.url.host, self.url.port, KEEPALIVE_S)
        except (OSError, ValueError) as exc:
            raise LinkError(f"{self.device.device_id}: cannot reach broker {self.url.address}: {exc}") from exc
        self.client.loop_start()

    def stop(self, graceful: bool = True) -> None:
        """Graceful: publish OFFLINE ourselves (a clean disconnect does not fire the will)."""
        if graceful and self.connected.is_set():
            info = self.client.publish(self._topic[topics.STATUS], self.device.offline_hello(), qos=1, retain=True)
            try:
                info.wait_for_publish(2.0)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()

    def kill(self) -> None:
        """Vanish without a word (the broker's last will announces it): for tests of presence."""
        sock = self.client.socket()
        self.client.loop_stop()
        self.connected.clear()
        if sock is not None:
            sock.close()

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
        try:
            if message.topic == self._topic[topics.CMD]:
                out = self.device.handle(message.payload)
            else:
                out = self.device.handle_pull_chunk(message.payload)
            self._send(out)
            self._sync_pull()
        except Exception:  # a paho callback must never raise: it would kill the network loop
            log.exception("%s: failed handling a message on %s", self.device.device_id, message.topic)

    # ------------------------------------------------------------------ output
    def _hello_bytes(self) -> bytes:
        from app.protocol.messages import encode

        return encode(self.device.hello(), 0)

    def pump(self, now: float | None = None) -> None:
        """Advance the device to `now` and publish what it produced."""
        self._send(self.device.tick(time.monotonic() if now is None else now))
        self._sync_pull()

    def _send(self, out: list[Outgoing]) -> None:
        for channel, data in out:
            if channel in (topics.TELEMETRY, topics.STREAM) and not self.connected.is_set():
                continue  # lossy channels are not queued across an outage
            self.client.publish(self._topic[channel], data, qos=QOS[channel], retain=channel == topics.STATUS)

    def _sync_pull(self) -> None:
        """Subscribe to the pull source while the engine wants chunks, unsubscribe when done."""
        want = self.device.pull_source
        with self._lock:
            have = self._pull_sub
            if want == have:
                return
            self._pull_sub = want
        if have:
            self.client.unsubscribe(f"{have}/+")
        if want:
            self.client.subscribe(f"{want}/+", qos=1)
