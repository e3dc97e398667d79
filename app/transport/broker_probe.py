"""What the broker we are connected to really does, found out by trying it once at connect.

Brokers differ where the fleet depends on them (issue 18): RabbitMQ's MQTT plugin keeps retained
messages but does not deliver them to subscriptions whose filter holds a wildcard, so presence from
retained statuses and pull rollouts from retained chunks silently get nothing there. Rather than
guess from a product name, `probe()` tries each behaviour on a private topic
(`tinymlops/probe/<nonce>/...`, outside the fleet's tree, cleared afterwards):

* QoS 1: the broker acknowledges a QoS 1 publish;
* retained: a retained message reaches a later subscription to its exact topic;
* retained to wildcards: ... and a later subscription whose filter holds a wildcard;
* will: a second, short-lived connection with a last will vanishes, and the will arrives;
* chunk-sized messages: a message as large as the largest model chunk passes (MQTT 3.1.1 has no
  way for a broker to announce its maximum packet size, so that is what can be known); sent by the
  short-lived connection, since a broker drops the client that exceeds its limit.

Whether something was delivered is decided by a marker: a message published after the subscription
was acknowledged arrives after whatever the broker sends for the subscription itself, and a short
quiet period covers a broker that does not keep that order. No fixed sleep decides anything.
The result is cached per connection (`capabilities_of`). Qt-free; it logs, never prints.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field

from app.domain.errors import LinkError
from app.protocol import topics
from app.protocol.codes import MAX_CHUNK
from app.transport.mqtt_link import MqttConnection, Will

log = logging.getLogger(__name__)

# Outside the fleet's topic tree (tinymlops/v1/...), so no monitor or device ever sees a probe.
PROBE_ROOT = "tinymlops/probe"
# One round trip to a LAN broker takes milliseconds; this bounds a step on a slow plant network.
STEP_TIMEOUT_S = 5.0
# After a marker arrived, anything the broker still sends for a subscription comes within this
# (on loopback it came before the marker on every broker tried); it bounds one probe's cost.
QUIET_S = 0.1
# A chunk's XFER_CHUNK header (PROTOCOL.md 5) on top of MAX_CHUNK data: the largest message a
# rollout publishes.
CHUNK_MESSAGE_BYTES = MAX_CHUNK + 64


@dataclass(frozen=True)
class BrokerCapabilities:
    """What one broker did when tried; None means "could not tell" (the step failed or timed out)."""

    address: str
    qos1: bool | None = None
    retained: bool | None = None
    retained_wildcard: bool | None = None
    will: bool | None = None
    chunk_messages: bool | None = None  # a message of CHUNK_MESSAGE_BYTES passes
    max_packet: int | None = None  # announced maximum packet size (MQTT 5 only: None on 3.1.1)
    probe_s: float = 0.0
    problems: tuple[str, ...] = field(default=())

    @property
    def wildcard_retained_ok(self) -> bool:
        """Whether retained messages were seen reaching wildcard subscriptions (unknown counts as no
        here; a rollout switches to push only on a definite `retained_wildcard is False`)."""
        return bool(self.retained_wildcard)

    def describe(self) -> str:
        """The result in words, for the log, `fleet list` and the status bar's tooltip."""
        parts = []
        if self.retained_wildcard:
            parts.append("delivers retained messages to wildcard subscriptions (presence from retained "
                         "statuses, rollouts pull)")
        elif self.retained:
            parts.append("does not deliver retained messages to wildcard subscriptions: presence comes from "
                         "heartbeats and exact-topic lookups, rollouts push")
        elif self.retained is False:
            parts.append("does not keep retained messages: presence comes from heartbeats only, rollouts push")
        else:
            parts.append("retained delivery could not be tried: presence also from heartbeats and exact-topic "
                         "lookups, rollouts pull as usual")
        parts.append({True: "acknowledges QoS 1", False: "does not acknowledge QoS 1",
                      None: "QoS 1 untested"}[self.qos1])
        parts.append({True: "publishes last wills", False: "did not publish a last will",
                      None: "last will untested"}[self.will])
        if self.max_packet is not None:
            parts.append(f"maximum packet {self.max_packet} bytes")
        else:
            parts.append({True: f"carries {CHUNK_MESSAGE_BYTES}-byte messages (a model chunk); maximum packet "
                                "size not announced (MQTT 3.1.1)",
                          False: f"did not carry a {CHUNK_MESSAGE_BYTES}-byte message (a model chunk)",
                          None: "message size untested"}[self.chunk_messages])
        text = f"broker {self.address} " + "; ".join(parts)
        if self.problems:
            text += " (" + "; ".join(self.problems) + ")"
        return text

    def as_dict(self) -> dict:
        out = asdict(self)
        out["problems"] = list(self.problems)
        out["summary"] = self.describe()
        return out


class _Inbox:
    """Messages of the probe topics, with a condition to wait on."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.got: dict[str, bytes] = {}

    def __call__(self, topic: str, payload: bytes) -> None:
        with self.cond:
            self.got[topic] = payload
            self.cond.notify_all()

    def wait_for(self, topic: str, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: topic in self.got, timeout)


def _settled(conn: MqttConnection, inbox: _Inbox, marker: str, payload: bytes, timeout: float) -> bool:
    """Publish `payload` to `marker` (a topic the current subscriptions match) and wait for it, then
    QUIET_S more: whatever the broker sends for those subscriptions has come by then."""
    conn.wait_subscribed(timeout)
    conn.publish(marker, payload, qos=1)
    if not inbox.wait_for(marker, timeout):
        return False
    with inbox.cond:
        inbox.cond.wait(QUIET_S)  # a quiet period, not a synchronisation: an early wake-up costs nothing
    return True


def _vanish(conn: MqttConnection, will_topic: str, big_topic: str, timeout: float) -> bool:
    """A second connection with a will on `will_topic` publishes a chunk-sized QoS 1 message to
    `big_topic`, then vanishes without a DISCONNECT; returns whether the broker acknowledged the
    message. On its own connection: a broker that caps the packet size drops the client that sent a
    larger one, and the operator's connection must not be that client (paho would resend the
    message after every reconnect, and be dropped every time).

    Driven by hand on this thread (no network thread to stop, which would cost paho's 1 s select)."""
    doomed = MqttConnection(conn.url, client_id=f"{conn.client_id}-probe",
                            will=Will(will_topic, b"gone", qos=1, retain=False))
    client = doomed._client  # same package: the probe needs the socket without paho's thread
    try:
        client.connect(conn.url.host, conn.url.port, doomed.keepalive)
        deadline = time.monotonic() + timeout
        while not doomed.connected and time.monotonic() < deadline:
            client.loop(QUIET_S)  # reads the CONNACK (returns as soon as it came)
        if not doomed.connected:
            raise LinkError(f"the probe's second connection got no CONNACK within {timeout:.0f} s")
        info = client.publish(big_topic, bytes(CHUNK_MESSAGE_BYTES), qos=1)
        while not info.is_published() and doomed.connected and time.monotonic() < deadline:
            client.loop(QUIET_S)  # until the PUBACK, or the broker drops us for the size
        return info.is_published()
    except (OSError, ValueError, RuntimeError) as exc:
        raise LinkError(f"the probe's second connection failed: {exc}") from exc
    finally:
        sock = client.socket()
        if sock is not None:
            sock.close()


def probe_root(site: str | None) -> str:
    """Where a probe publishes: under a site's model-chunk tree when a site is known (an operator
    confined by an ACL, e.g. `tinymlops broker kit`'s, may write there; no device subscribes a
    `probe-...` image), else under PROBE_ROOT."""
    nonce = secrets.token_hex(6)
    if site and topics.valid_id(site):
        return topics.model_chunk_prefix(site, f"probe-{nonce}")
    return f"{PROBE_ROOT}/{nonce}"


def probe(conn: MqttConnection, timeout: float = STEP_TIMEOUT_S, site: str | None = None) -> BrokerCapabilities:
    """Try the broker on `conn` (connected) under `probe_root(site)`; never raises for what the broker
    does not do. When not even a plain message comes back (publishing there is not allowed), the rest
    is not tried: everything stays unknown."""
    started = time.monotonic()
    base = probe_root(site)
    # two retained messages: one for a wildcard subscription, one for an exact one (separate topics,
    # so one marker settles both and no unsubscribe/resubscribe round trip is needed)
    wild_topic, exact_topic, will_topic = f"{base}/w/retained", f"{base}/exact", f"{base}/will"
    inbox = _Inbox()
    found: dict[str, object] = {}
    problems: list[str] = []
    subscribed: list[str] = []
    published: list[str] = []

    def sub(topic_filter: str) -> None:
        conn.subscribe(topic_filter, inbox)
        subscribed.append(topic_filter)

    try:
        for topic in (wild_topic, exact_topic):
            conn.publish(topic, b"probe", qos=1, retain=True)
            published.append(topic)
        try:
            conn.wait_published(timeout)
            found["qos1"] = True
        except LinkError as exc:
            found["qos1"] = False
            problems.append(f"QoS 1 publish not acknowledged: {exc}")
        for topic_filter in (f"{base}/w/+", exact_topic, will_topic):
            sub(topic_filter)
        if _settled(conn, inbox, f"{base}/w/marker", b"m", timeout):
            found["retained_wildcard"] = wild_topic in inbox.got
            found["retained"] = exact_topic in inbox.got
        else:
            found["qos1"] = None  # acknowledged, yet not delivered: an ACL drops our publishes there
            raise LinkError(f"a message published on {base}/ did not come back within {timeout:.0f} s "
                            "(may this operator publish there? an ACL drops such messages silently)")
        # a client that sends a chunk-sized message and vanishes: a broker that caps the packet size
        # drops it at the message (no acknowledgement), and publishes its will either way
        big_topic = f"{base}/w/big"
        try:
            acknowledged = _vanish(conn, will_topic, big_topic, timeout)
            found["chunk_messages"] = acknowledged and inbox.wait_for(big_topic, timeout)
            found["will"] = inbox.wait_for(will_topic, timeout)
            if not found["will"]:
                problems.append(f"no last will within {timeout:.0f} s of a client vanishing")
        except LinkError as exc:
            problems.append(str(exc))
    except LinkError as exc:
        problems.append(f"probe stopped: {exc}")
    finally:
        for topic_filter in subscribed:
            conn.unsubscribe(topic_filter, inbox)
        try:
            for topic in published:
                conn.publish(topic, b"", qos=1, retain=True)  # clears the probe's retained messages
            conn.wait_published(timeout)
        except LinkError as exc:
            log.debug("could not clear the probe's retained message: %s", exc)
    return BrokerCapabilities(address=conn.url.address, probe_s=time.monotonic() - started,
                              problems=tuple(problems), **found)  # type: ignore[arg-type]


# Probe results by broker address: a deployment's own connection to the same broker reuses the
# session's result. Bounded by the brokers one process talks to (a handful).
_CACHE: dict[str, BrokerCapabilities] = {}
_CACHE_LOCK = threading.Lock()


def capabilities_of(conn: MqttConnection, *, run: bool = True, site: str | None = None) -> BrokerCapabilities | None:
    """The probe result for this connection's broker: probed (and logged in words) once per broker
    address in this process, then cached. `run=False` only looks (None when nobody probed yet).
    `site`: a site of the fleet, under whose model-chunk tree the probe may publish (probe_root)."""
    key = conn.url.address
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
    if cached is not None or not run:
        return cached
    caps = probe(conn, site=site)
    level = logging.INFO if caps.wildcard_retained_ok and not caps.problems else logging.WARNING
    log.log(level, "%s (probed in %.2f s)", caps.describe(), caps.probe_s)
    if caps.problems and caps.qos1 is None:
        return caps  # the probe itself failed (link down?): try again next time
    with _CACHE_LOCK:
        return _CACHE.setdefault(key, caps)
