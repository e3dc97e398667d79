"""MQTT link: paho-mqtt 2.x (callback API v2) behind a small interface that raises LinkError only.

One `MqttConnection` owns one paho client and its network thread (`loop_start`). paho reconnects
by itself with exponential back-off; on every (re)connection the subscriptions are renewed, since
sessions are clean. Incoming messages are dispatched to handlers by topic filter; a failing
handler is logged and counted, never allowed to stop the network thread. Handlers run on that
thread, so they must be quick (decode, update, hand off).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.matcher import MQTTMatcher

from app.domain.errors import LinkError
from app.transport.callbacks import call_each
from app.transport.credentials import password_for
from app.transport.urls import BrokerUrl, parse_broker_url

log = logging.getLogger(__name__)

# The broker drops us (and publishes our will) after 1.5x this without traffic: ~45 s to notice a dead device.
KEEPALIVE_S = 30
# A loopback or LAN broker answers CONNECT in milliseconds; 10 s allows a slow plant network.
CONNECT_TIMEOUT_S = 10.0
# Reconnect back-off starts here (a restarted broker is back within a second or two) ...
RECONNECT_MIN_S = 1
# ... and doubles up to this, so a long outage does not hammer the broker nor leave us waiting long.
RECONNECT_MAX_S = 30
# Waiting for QoS 1 publishes to be acknowledged (a model rollout publishes many chunks).
PUBLISH_TIMEOUT_S = 30.0
# Topic -> handlers cache entries before it is cleared (bounds memory, ~200 B an entry, when many
# devices appear): a 10,000-device fleet's telemetry and status topics fit, so it is not cleared
# again and again as each round of telemetry comes by.
DISPATCH_CACHE_MAX = 32768
# Some brokers (amqtt) send one copy of a message per matching subscription, Mosquitto sends one:
# every handler of every matching filter already gets each copy, so an identical payload on the
# same topic within this window is dropped when filters overlap. Protocol messages carry a seq or
# counter, so a legitimate identical repeat is itself a duplicate. Retained deliveries (the answer to
# a new subscription) are never dropped.
DUPLICATE_WINDOW_S = 0.5
# Default subscription QoS: the broker delivers at min(publish QoS, this), so QoS 1 topics stay QoS 1.
SUBSCRIBE_QOS = 1
# A QoS 1 publish or a SUBSCRIBE the broker has not acknowledged for this long means our link is
# stalled (a LAN broker acknowledges in milliseconds; a busy one within a second or two).
STALLED_PUBLISH_S = 5.0
# Waiting for the broker to acknowledge subscriptions (a SUBACK takes one round trip on a LAN).
SUBSCRIBE_TIMEOUT_S = 10.0

Handler = Callable[[str, bytes], None]
StateCallback = Callable[[bool, str], None]


@dataclass(frozen=True)
class Will:
    """Last will: what the broker publishes for us when our connection dies without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def set_tls(client: mqtt.Client, url: BrokerUrl, identity: str = "") -> None:
    """TLS with the URL's CA (else the system's) and client certificate; unreadable files are a
    LinkError naming the file, before any connection attempt. `{device}` in a certificate or key
    path becomes `identity`, so one URL serves a whole virtual fleet with a certificate each."""
    cert, key = ((p.replace("{device}", identity) if p else p) for p in (url.cert, url.key))
    for what, path in (("CA certificate", url.ca), ("client certificate", cert), ("client key", key)):
        if path and not os.path.isfile(path):
            raise LinkError(f"{what} {path} does not exist")
    try:
        client.tls_set(ca_certs=url.ca, certfile=cert, keyfile=key)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError: a bad PEM, a key not matching
        raise LinkError(f"TLS settings for {url.address} unusable: {exc}") from exc


class MqttConnection:
    """A connection to one broker; see the module docstring. Thread-safe."""

    def __init__(self, url: str | BrokerUrl, client_id: str | None = None, will: Will | None = None,
                 keepalive: int = KEEPALIVE_S) -> None:
        self.url = parse_broker_url(url)
        self.client_id = client_id or f"tinymlops-{uuid.uuid4().hex[:12]}"
        self.keepalive = keepalive
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._subs: dict[str, tuple[int, list[Handler]]] = {}
        self._dispatch: dict[str, tuple[tuple[Handler, ...], bool]] = {}
        # every filter of _subs in one trie, value = the filter: one walk per new topic finds all the
        # filters it matches (paho's topic_matches_sub builds such a trie for each call)
        self._matcher = MQTTMatcher()
        self._state_callbacks: list[StateCallback] = []
        self._connected = threading.Event()
        self._first_result: tuple[bool, str] | None = None
        self._first_done = threading.Event()
        self._closed = False
        self._started = False
        self._pending: dict[int, mqtt.MQTTMessageInfo] = {}
        self._pending_since: dict[int, float] = {}  # mid -> when it was handed to paho
        self._sub_lock = threading.Lock()
        self._live = False  # connected and subscriptions sent; guarded by _sub_lock
        self._sub_acked = threading.Condition(self._sub_lock)
        # SUBSCRIBE message ids the broker has not acknowledged, with when each was sent
        self._unacked: dict[int, float] = {}
        self._recent: dict[str, tuple[bytes, float]] = {}

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv311, clean_session=True)
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        if self.url.username:
            client.username_pw_set(self.url.username, password_for(self.url))
        if self.url.tls:
            set_tls(client, self.url)
        if will is not None:
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        self._client = client

    # ------------------------------------------------------------------ lifecycle

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Block until the connection is up (paho reconnects by itself); False after `timeout`."""
        return not self._closed and self._connected.wait(timeout) and not self._closed

    def link_problem(self) -> str:
        """What is wrong with this connection itself, or "" when it is up and the broker acknowledged
        every subscription: lets a caller tell "the device is silent" from "our own link is"."""
        if self._closed:
            return f"this operator's connection to broker {self.url.address} is closed"
        if not self.connected:
            return f"this operator's connection to broker {self.url.address} is down (reconnecting)"
        with self._sub_lock:
            oldest_sub = min(self._unacked.values(), default=None)
        # a SUBSCRIBE sent a moment ago (a lookup's reply topic) is in flight, not stalled
        if oldest_sub is not None and time.monotonic() - oldest_sub > STALLED_PUBLISH_S:
            return (f"this operator's connection to broker {self.url.address} is stalled (the broker has not "
                    f"acknowledged its subscriptions)")
        with self._lock:
            # paho calls on_publish before it marks the message published, so an entry may outlive
            # its acknowledgement: prune those first
            for mid in [mid for mid, info in self._pending.items() if self._is_published(info)]:
                self._pending.pop(mid, None)
                self._pending_since.pop(mid, None)
            oldest = min(self._pending_since.values(), default=None)
        if oldest is not None and time.monotonic() - oldest > STALLED_PUBLISH_S:
            return (f"this operator's connection to broker {self.url.address} is stalled (a publish has waited "
                    f"{time.monotonic() - oldest:.0f} s for the broker's acknowledgement)")
        return ""

    def connect(self, timeout: float = CONNECT_TIMEOUT_S) -> MqttConnection:
        """Connect and wait for the broker's answer; raises LinkError if refused or unreachable."""
        if self._closed:
            raise LinkError(f"connection to {self.url.address} is closed")
        if self._started:
            if not self._connected.wait(timeout):
                raise LinkError(f"broker {self.url.address} did not answer within {timeout:.0f} s")
            return self
        try:
            self._client.connect(self.url.host, self.url.port, self.keepalive)
        except ConnectionRefusedError as exc:
            raise LinkError(f"broker {self.url.address} refused the connection: nothing listens there") from exc
        except TimeoutError as exc:
            raise LinkError(f"broker {self.url.address} unreachable: connection timed out") from exc
        except OSError as exc:
            raise LinkError(f"broker {self.url.address} unreachable: {exc.strerror or exc}") from exc
        except ValueError as exc:
            raise LinkError(f"cannot connect to {self.url.address}: {exc}") from exc
        self._started = True
        self._client.loop_start()
        if not self._first_done.wait(timeout):
            self._shutdown()
            raise LinkError(f"broker {self.url.address} did not answer within {timeout:.0f} s")
        ok, reason = self._first_result or (False, "no answer")
        if not ok:
            self._shutdown()
            raise LinkError(f"broker {self.url.address} refused the connection: {reason}")
        return self

    def close(self) -> None:
        """Disconnect cleanly (the broker does not publish our will) and stop the network thread."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            self._client.disconnect()
        self._shutdown()

    def drop(self) -> None:
        """Vanish without a DISCONNECT, as a crashed device would: the broker publishes our will."""
        if self._closed:
            return
        self._closed = True
        self._client.loop_stop()
        sock = self._client.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        self._set_connected(False, "dropped")

    def _shutdown(self) -> None:
        self._client.loop_stop()
        self._started = False
        self._set_connected(False, "closed")

    def __enter__(self) -> MqttConnection:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def on_state(self, callback: StateCallback) -> None:
        """`callback(connected, reason)` on every connection change, on the network thread."""
        with self._lock:
            self._state_callbacks.append(callback)

    def remove_state_listener(self, callback: StateCallback) -> None:
        """Undo `on_state` (a closed channel must not be kept alive by a shared connection)."""
        with self._lock:
            self._state_callbacks = [c for c in self._state_callbacks if c != callback]

    # ------------------------------------------------------------------ pub/sub

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = SUBSCRIBE_QOS) -> None:
        """Call `handler(topic, payload)` for every message matching the filter (also after reconnects)."""
        if not topic_filter:
            raise LinkError("empty topic filter")
        with self._sub_lock:  # with _on_connect: each filter is sent exactly once per connection
            with self._lock:
                entry = self._subs.get(topic_filter)
                self._subs[topic_filter] = (qos, [*(entry[1] if entry else []), handler])
                self._matcher[topic_filter] = topic_filter
                self._dispatch.clear()
            if entry is None and self._live:
                try:
                    self._track(self._client.subscribe(topic_filter, qos))
                except ValueError as exc:  # paho's check of the filter or QoS
                    with self._lock:
                        self._subs.pop(topic_filter, None)
                        del self._matcher[topic_filter]
                        self._dispatch.clear()
                    raise LinkError(f"cannot subscribe to {topic_filter!r}: {exc}") from exc

    def wait_subscribed(self, timeout: float = SUBSCRIBE_TIMEOUT_S) -> None:
        """Block until connected and every subscription is acknowledged, so the broker routes (and
        will not re-deliver as retained) whatever is published after this returns."""
        with self._sub_acked:
            if not self._sub_acked.wait_for(lambda: self._live and not self._unacked, timeout):
                raise LinkError(f"{self.url.address} did not acknowledge the subscriptions within {timeout:.0f} s")

    def _track(self, result: tuple[int, int | None]) -> None:
        """Remember a sent SUBSCRIBE until its SUBACK; caller holds _sub_lock."""
        rc, mid = result
        if rc == mqtt.MQTT_ERR_SUCCESS and mid is not None:
            self._unacked[mid] = time.monotonic()

    def unsubscribe(self, topic_filter: str, handler: Handler | None = None) -> None:
        """Drop one handler (or all) of a filter; the broker subscription ends with its last handler."""
        with self._sub_lock, self._lock:
            entry = self._subs.get(topic_filter)
            if entry is None:
                return
            # `==`, not `is`: each `obj.method` access makes a new bound-method object (equal, not identical)
            handlers = [h for h in entry[1] if handler is not None and h != handler]
            if handlers:
                self._subs[topic_filter] = (entry[0], handlers)
            else:
                del self._subs[topic_filter]
                del self._matcher[topic_filter]
            self._dispatch.clear()
            if not handlers and self._live:
                self._client.unsubscribe(topic_filter)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Send one message. QoS 0 needs a live connection; QoS 1/2 are queued through a reconnect."""
        if self._closed:
            raise LinkError(f"connection to {self.url.address} is closed")
        if qos == 0 and not self.connected:
            raise LinkError(f"not connected to broker {self.url.address}")
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
        except ValueError as exc:
            raise LinkError(f"cannot publish to {topic!r}: {exc}") from exc
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            raise LinkError(f"publish queue to {self.url.address} is full")
        if qos == 0 and info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
            raise LinkError(f"publish to {self.url.address} failed: {mqtt.error_string(info.rc)}")
        self.counters["published"] += 1
        if qos > 0:
            with self._lock:
                if not self._is_published(info):
                    self._pending[info.mid] = info
                    self._pending_since[info.mid] = time.monotonic()

    def wait_published(self, timeout: float = PUBLISH_TIMEOUT_S) -> None:
        """Block until every QoS 1/2 publish so far is acknowledged by the broker; LinkError on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            pending = list(self._pending.values())
        for info in pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._wait_info(info, remaining):
                if not self.connected:  # not a slow broker: we cannot reach it at all
                    raise LinkError(f"lost the connection to broker {self.url.address} (reconnecting): "
                                    f"{len(pending)} publishes not delivered within {timeout:.0f} s")
                raise LinkError(f"broker {self.url.address} did not acknowledge publishes within {timeout:.0f} s")
            with self._lock:
                self._pending.pop(info.mid, None)
                self._pending_since.pop(info.mid, None)

    @staticmethod
    def _is_published(info: mqtt.MQTTMessageInfo) -> bool:
        """paho queues a QoS 1/2 message published while the connection is down (rc NO_CONN) and
        sends it after the reconnect, but its is_published() raises for that rc: read the flag it
        sets on the broker's acknowledgement instead (paho < 3, pinned)."""
        if info.rc == mqtt.MQTT_ERR_NO_CONN:
            with info._condition:
                return info._published
        try:
            return info.is_published()
        except (RuntimeError, ValueError):
            return False

    @classmethod
    def _wait_info(cls, info: mqtt.MQTTMessageInfo, timeout: float) -> bool:
        if info.rc == mqtt.MQTT_ERR_NO_CONN:
            with info._condition:
                return info._condition.wait_for(lambda: info._published, timeout)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    # ------------------------------------------------------------------ paho callbacks (network thread)

    def _set_connected(self, connected: bool, reason: str) -> None:
        was = self._connected.is_set()
        if connected:
            self._connected.set()
        else:
            self._connected.clear()
        if was == connected:
            return
        with self._lock:
            callbacks = list(self._state_callbacks)
        call_each(callbacks, (connected, reason), log, "state callback failed")

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object,
                    reason_code: mqtt.ReasonCode, properties: object) -> None:
        if reason_code.is_failure:
            reason = str(reason_code)
            log.warning("broker %s refused the connection: %s", self.url.address, reason)
            self.counters["refused"] += 1
            if not self._first_done.is_set():
                self._first_result = (False, reason)
                self._first_done.set()
            return
        with self._sub_lock:
            with self._lock:
                subs = [(topic, qos) for topic, (qos, _) in self._subs.items()]
            self._unacked.clear()  # acknowledgements of the lost connection never come
            if subs:
                self._track(client.subscribe(subs))
            self._live = True
            self._sub_acked.notify_all()
        self.counters["connects"] += 1
        log.info("connected to broker %s as %s", self.url.address, self.client_id)
        self._set_connected(True, "connected")
        if not self._first_done.is_set():
            self._first_result = (True, "connected")
            self._first_done.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        self.counters["connect_failures"] += 1
        log.debug("reconnect to %s failed; paho retries with back-off", self.url.address)

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object,
                       reason_code: mqtt.ReasonCode, properties: object) -> None:
        with self._sub_lock:
            self._live = False
        if self._closed or not self.counters["connects"]:
            self._set_connected(False, "closed")
            return
        reason = str(reason_code)
        self.counters["disconnects"] += 1
        log.warning("lost broker %s (%s); reconnecting", self.url.address, reason)
        self._set_connected(False, f"lost connection to {self.url.address}: {reason}")

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int,
                      reason_codes: list[mqtt.ReasonCode], properties: object) -> None:
        with self._sub_acked:
            self._unacked.pop(mid, None)
            self._sub_acked.notify_all()
        for rc in reason_codes:
            if rc.is_failure:
                self.counters["subscribe_refused"] += 1
                log.warning("broker %s refused a subscription: %s", self.url.address, rc)

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int,
                    reason_code: mqtt.ReasonCode, properties: object) -> None:
        with self._lock:
            self._pending.pop(mid, None)
            self._pending_since.pop(mid, None)

    def _handlers_for(self, topic: str) -> tuple[tuple[Handler, ...], bool]:
        """Handlers of every filter matching `topic`, and whether more than one filter matched."""
        cached = self._dispatch.get(topic)
        if cached is None:
            with self._lock:
                matched = set(self._matcher.iter_match(topic))
                # in subscription order, as the handlers were added
                found = [h for topic_filter, (_, hs) in self._subs.items() if topic_filter in matched for h in hs]
                cached = (tuple(found), len(matched) > 1)
                if len(self._dispatch) >= DISPATCH_CACHE_MAX:
                    self._dispatch.clear()
                self._dispatch[topic] = cached
        return cached

    def _duplicate(self, topic: str, payload: bytes) -> bool:
        """True for the second copy of a message that overlapping subscriptions made the broker send."""
        now = time.monotonic()
        last = self._recent.get(topic)
        self._recent[topic] = (payload, now)
        if len(self._recent) > DISPATCH_CACHE_MAX:
            self._recent.clear()
        return last is not None and last[0] == payload and now - last[1] < DUPLICATE_WINDOW_S

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        self.counters["received"] += 1
        try:
            topic = message.topic
        except UnicodeDecodeError:
            self.counters["bad_topic"] += 1
            log.warning("dropped a message whose topic is not UTF-8: %r", message._topic[:80])
            return
        handlers, overlapping = self._handlers_for(topic)
        # A retained delivery answers a (new) subscription: its handler has not seen it yet, even when
        # another handler got the same bytes a moment ago; only live copies can be overlap duplicates.
        if overlapping and not message.retain and self._duplicate(topic, message.payload):
            self.counters["duplicates_dropped"] += 1
            return
        for handler in handlers:
            try:
                handler(topic, message.payload)
            except Exception:
                self.counters["handler_errors"] += 1
                log.exception("handler for %s failed", topic)
