"""DeviceChannel.request honours a cancel event while it waits (issue 11.6: a lost BENCHMARK reply
must not hold an operator who pressed Cancel). Real Mosquitto; the "device" is a subscriber on the
command topic that never answers, and it is what presses Cancel once the command has arrived."""

from __future__ import annotations

import threading

import pytest

from app.domain.errors import Cancelled
from app.protocol import topics
from app.protocol.messages import Benchmark
from app.services.channel import MqttChannel
from app.transport.mqtt_link import MqttConnection

# Far longer than any test may take: a request that returns at all did not wait for it.
HOUR_S = 3600.0
# Generous for a loaded machine; the cancel is felt within CANCEL_POLL_S.
JOIN_S = 30.0


def test_request_returns_cancelled_when_cancel_is_set_while_it_waits(mosquitto_url):
    conn = MqttConnection(mosquitto_url)
    conn.connect()
    cancel = threading.Event()
    conn.subscribe(topics.device_topic("plant-a", "mute-1", topics.CMD), lambda _t, _p: cancel.set())
    channel = MqttChannel(conn, "plant-a", "mute-1")
    outcome: dict = {}

    def work() -> None:
        try:
            channel.request(Benchmark(10), timeout=HOUR_S, retries=0, cancel=cancel)
        except Exception as exc:  # handed to the test thread
            outcome["error"] = exc

    try:
        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        thread.join(JOIN_S)
        assert not thread.is_alive(), "the request ignored the cancel"
        assert cancel.is_set()
        with pytest.raises(Cancelled):
            raise outcome["error"]
    finally:
        channel.close()
        conn.close()
