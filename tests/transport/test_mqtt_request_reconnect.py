"""Issue 11.5: a command over MQTT rides out a reconnect of the operator's own connection.

Real Mosquitto and a real virtual device; the operator reaches the broker through a loopback TCP
proxy (tests/deploy/tcp_proxy.py) that holds the command and then cuts the connection, so paho
sees a real drop and reconnects. Before the fix the pending request failed the moment the link
dropped ("lost connection ..."), although paho was about to reconnect and deliver it.
"""

from __future__ import annotations

import threading

import pytest

from app.deploy.rollout import COMMAND_RETRIES, COMMAND_TIMEOUT_S
from app.protocol.messages import GetInfo, Hello
from app.services.channel import MqttChannel
from app.transport.mqtt_link import MqttConnection
from tests.deploy.tcp_proxy import TcpProxy
from tests.fixtures.brokers import MosquittoProcess
from tests.transport.helpers import wait_until


@pytest.mark.parametrize("retries", [COMMAND_RETRIES, 0])
def test_a_pending_command_survives_a_dropped_operator_connection(mosquitto_factory, virtual_fleet,
                                                                  retries: int) -> None:
    """With retries the channel sends the command again as soon as the link is back; without (a
    command that must not run twice) only paho's redelivery of the unacknowledged publish goes out."""
    broker: MosquittoProcess = mosquitto_factory()
    fleet = virtual_fleet(broker.url, 1)
    dev = fleet.devices[0]
    with TcpProxy(broker.port) as proxy:
        conn = MqttConnection(proxy.url)
        conn.connect()
        try:
            channel = MqttChannel(conn, dev.site, dev.device_id)
            conn.wait_subscribed()
            proxy.set_stalled(True)  # the command leaves paho but is held on the way
            box: dict = {}
            done = threading.Event()

            def ask() -> None:
                try:
                    box["reply"] = channel.request(GetInfo(), timeout=COMMAND_TIMEOUT_S, retries=retries)
                except Exception as exc:
                    box["error"] = exc
                finally:
                    done.set()

            worker = threading.Thread(target=ask, daemon=True)
            worker.start()
            wait_until(lambda: channel.counters["sent"] >= 1, what="the command to be sent")
            drops = conn.counters["disconnects"]
            proxy.cut()  # the held command is lost with the connection
            proxy.set_stalled(False)
            wait_until(lambda: conn.counters["disconnects"] > drops, what="the operator to see the drop")
            assert done.wait((retries + 1) * COMMAND_TIMEOUT_S + 10), "request hung"
            assert "error" not in box, f"the request failed instead of riding out the reconnect: {box.get('error')}"
            assert isinstance(box["reply"].msg, Hello) and box["reply"].msg.device_id == dev.device_id
            if not retries:  # (with retries, whether the re-send beat paho's redelivery is a race)
                assert channel.counters["resent_after_reconnect"] == 0, channel.counters
            channel.close()
        finally:
            conn.close()
