"""MqttConnection's topic -> handlers dispatch (one filter trie, a per-topic cache) against a real
Mosquitto: it follows subscriptions added and removed after topics were cached, and forgets a
filter the client refused."""

from __future__ import annotations

import threading

import pytest

from app.domain.errors import LinkError
from app.transport.mqtt_link import MqttConnection
from tests.transport.helpers import wait_until


class Collector:
    def __init__(self) -> None:
        self.got: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()

    def __call__(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self.got.append((topic, payload))


def _send(pub: MqttConnection, topic: str, payload: bytes) -> None:
    pub.publish(topic, payload, qos=1)
    pub.wait_published()


def test_dispatch_follows_filters_added_and_removed_after_topics_were_cached(mosquitto_url: str) -> None:
    plus, hashed, exact, marker = Collector(), Collector(), Collector(), Collector()
    with MqttConnection(mosquitto_url) as sub, MqttConnection(mosquitto_url) as pub:
        sub.subscribe("disp/+/x", plus)
        sub.subscribe("disp/marker", marker)
        sub.wait_subscribed()
        _send(pub, "disp/a/x", b"1")  # cached: disp/a/x -> plus only
        wait_until(lambda: plus.got, what="first message")

        sub.subscribe("disp/#", hashed)  # a second filter for a cached topic
        sub.wait_subscribed()
        _send(pub, "disp/a/x", b"2")
        wait_until(lambda: len(plus.got) == 2 and hashed.got, what="both filters")

        sub.unsubscribe("disp/+/x", plus)
        sub.subscribe("disp/a/x", exact)
        sub.wait_subscribed()
        _send(pub, "disp/a/x", b"3")
        _send(pub, "disp/b/y", b"4")
        _send(pub, "disp/marker", b"end")  # QoS 1 in order: all before it were dispatched
        wait_until(lambda: marker.got, what="marker")

    assert plus.got == [("disp/a/x", b"1"), ("disp/a/x", b"2")]
    assert exact.got == [("disp/a/x", b"3")]
    assert [p for t, p in hashed.got if t != "disp/marker"] == [b"2", b"3", b"4"]


def test_a_refused_filter_is_forgotten_and_its_handler_never_called(mosquitto_url: str) -> None:
    bad, good = Collector(), Collector()
    with MqttConnection(mosquitto_url) as sub, MqttConnection(mosquitto_url) as pub:
        sub.wait_subscribed()
        with pytest.raises(LinkError, match="cannot subscribe"):
            sub.subscribe("refused/#/x", bad)  # '#' only as the last level
        sub.subscribe("refused/+/x", good)
        sub.wait_subscribed()
        _send(pub, "refused/a/x", b"1")
        wait_until(lambda: good.got, what="delivery")
    assert good.got == [("refused/a/x", b"1")] and bad.got == []
