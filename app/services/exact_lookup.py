"""Finding a device by its exact topics, for brokers that do not send retained messages to wildcards.

RabbitMQ's MQTT plugin keeps a device's retained HELLO but delivers it only to a subscription to
that exact status topic, and in a cluster only on the node the device published it to (issue 18).
So once a device's site is known (the fleet memory remembers it; its telemetry names it) the fleet
monitor subscribes its exact status topic, and when the device is demonstrably online (telemetry
came) but unknown, asks it directly: GET_INFO on its exact command topic, the HELLO on its exact
reply topic. The reply subscription ends with the answer or after `ASK_TIMEOUT_S`: a monitor must
not keep receiving every device's deployment replies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from app.domain.errors import LinkError, ProtocolError
from app.protocol import messages as m
from app.protocol import topics
from app.transport.mqtt_link import MqttConnection

log = logging.getLogger(__name__)

# A device answers GET_INFO in one round trip; a loaded broker or device within a few seconds. After
# this the question is dropped (the device's next heartbeat will tell).
ASK_TIMEOUT_S = 5.0

HelloHandler = Callable[[str, m.Hello], None]  # (site, hello)


class ExactLookup:
    """Exact-topic lookups of one monitor; thread-safe, never calls back under its own lock."""

    def __init__(self, connection: MqttConnection, on_status: Callable[[str, bytes], None],
                 on_hello: HelloHandler, next_seq: Callable[[], int]) -> None:
        self.connection = connection
        self._on_status = on_status
        self._on_hello = on_hello
        self._next_seq = next_seq
        self._cond = threading.Condition()
        self._watched: dict[str, str] = {}  # device id -> its exact status topic
        self._asking: dict[str, tuple[str, float]] = {}  # device id -> (reply topic, deadline)
        self._closed = False
        self.counters = {"looked_up": 0, "asked": 0, "answered": 0, "unanswered": 0}

    def watch(self, site: str, device_id: str) -> None:
        """Subscribe the device's exact status topic (once): its retained HELLO or will comes there."""
        if not (topics.valid_id(site) and topics.valid_id(device_id)):
            return
        topic = topics.device_topic(site, device_id, topics.STATUS)
        with self._cond:
            if self._closed or device_id in self._watched:
                return
            self._watched[device_id] = topic
            self.counters["looked_up"] += 1
        try:
            self.connection.subscribe(topic, self._on_status, qos=1)
        except LinkError as exc:
            log.warning("could not watch %s's status topic: %s", device_id, exc)

    def ask(self, site: str, device_id: str) -> None:
        """Watch the device and ask it GET_INFO on its exact topics (once until answered or expired)."""
        self.watch(site, device_id)
        if not (topics.valid_id(site) and topics.valid_id(device_id)):
            return
        reply = topics.device_topic(site, device_id, topics.REPLY)
        with self._cond:
            if self._closed or device_id in self._asking:
                return
            self._asking[device_id] = (reply, time.monotonic() + ASK_TIMEOUT_S)
            self.counters["asked"] += 1
        try:
            # subscribed before the question leaves: the broker handles our packets in order
            self.connection.subscribe(reply, self._on_reply, qos=1)
            self.connection.publish(topics.device_topic(site, device_id, topics.CMD),
                                    m.encode(m.GetInfo(), self._next_seq()), qos=1)
            log.debug("asked %s/%s for its HELLO on its exact topics", site, device_id)
        except (LinkError, ProtocolError) as exc:
            log.warning("could not ask %s for its HELLO: %s", device_id, exc)
            self._end(device_id)

    def _on_reply(self, topic: str, payload: bytes) -> None:
        parsed = topics.parse_device_topic(topic)
        if parsed is None:
            return
        try:
            msg = m.decode(payload).msg
        except ProtocolError:
            return  # another operator's reply traffic is not ours to judge
        if not isinstance(msg, m.Hello) or msg.device_id != parsed[1]:
            return
        with self._cond:
            mine = parsed[1] in self._asking
            if mine:
                self.counters["answered"] += 1
        if mine:
            self._end(parsed[1])
            self._on_hello(parsed[0], msg)

    def _end(self, device_id: str) -> None:
        with self._cond:
            entry = self._asking.pop(device_id, None)
            self._cond.notify_all()
        if entry is not None:
            self.connection.unsubscribe(entry[0], self._on_reply)

    def expire(self) -> None:
        """Drop questions unanswered for ASK_TIMEOUT_S (housekeeping)."""
        now = time.monotonic()
        with self._cond:
            late = [d for d, (_, deadline) in self._asking.items() if deadline <= now]
            self.counters["unanswered"] += len(late)
        for device_id in late:
            log.info("%s did not answer GET_INFO within %.0f s", device_id, ASK_TIMEOUT_S)
            self._end(device_id)

    def wait_answered(self, timeout: float = ASK_TIMEOUT_S) -> bool:
        """Block until no question is open (answered or expired); False after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                if not self._asking:
                    return True
                next_expiry = min(d for _, d in self._asking.values())
                left = min(deadline, next_expiry) - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
            if time.monotonic() >= deadline:
                return False
            self.expire()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            watched, asking = list(self._watched.values()), [t for t, _ in self._asking.values()]
            self._watched.clear()
            self._asking.clear()
            self._cond.notify_all()
        for topic in watched:
            self.connection.unsubscribe(topic, self._on_status)
        for topic in asking:
            self.connection.unsubscribe(topic, self._on_reply)
