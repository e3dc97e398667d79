"""MqttConnection against the real Mosquitto and the embedded amqtt broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from app.domain.errors import LinkError
from app.transport.broker import EmbeddedBroker
from app.transport.mqtt_link import MqttConnection, Will
from tests.fixtures.brokers import free_port
from tests.transport.helpers import wait_until


@pytest.fixture(params=["mosquitto", "embedded"])
def broker_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("mosquitto_url" if request.param == "mosquitto" else "embedded_broker_url")


def _collector() -> tuple[list[tuple[str, bytes]], threading.Lock, object]:
    got: list[tuple[str, bytes]] = []
    lock = threading.Lock()

    def handler(topic: str, payload: bytes) -> None:
        with lock:
            got.append((topic, payload))

    return got, lock, handler


def test_publish_subscribe_and_filter_dispatch(broker_url: str) -> None:
    got_all, _, all_handler = _collector()
    got_b, _, b_handler = _collector()
    with MqttConnection(broker_url) as sub, MqttConnection(broker_url) as pub:
        sub.subscribe("t1/+/x", all_handler)
        sub.subscribe("t1/b/#", b_handler)
        sub.wait_subscribed()  # from here on the broker routes every matching publish
        pub.publish("t1/z/x", b"ready", qos=1)
        pub.publish("t1/a/x", b"one", qos=1)
        pub.publish("t1/b/x", b"two", qos=1)
        pub.publish("t1/c/y", b"nobody", qos=1)
        pub.wait_published()
        wait_until(lambda: len(got_all) >= 3 and got_b, what="dispatch")
        assert [p for _, p in got_all] == [b"ready", b"one", b"two"]
        assert got_b == [("t1/b/x", b"two")]


def test_retained_message_reaches_a_late_subscriber(broker_url: str) -> None:
    with MqttConnection(broker_url) as pub:
        pub.publish("t2/status", b"hello", qos=1, retain=True)
        pub.wait_published()
    got, _, handler = _collector()
    with MqttConnection(broker_url) as late:
        late.subscribe("t2/#", handler)
        wait_until(lambda: got, what="retained message")
        assert got == [("t2/status", b"hello")]


def test_unsubscribe_stops_delivery(broker_url: str) -> None:
    got, _, handler = _collector()
    with MqttConnection(broker_url) as conn:
        conn.subscribe("t3/a", handler)
        conn.publish("t3/a", b"kept", qos=1, retain=True)
        wait_until(lambda: got)
        conn.unsubscribe("t3/a")
        conn.publish("t3/a", b"", qos=1, retain=True)
        conn.publish("t3/a", b"dropped", qos=1)
        conn.wait_published()
        conn.subscribe("t3/b", handler)
        conn.publish("t3/b", b"later", qos=1)
        wait_until(lambda: len(got) >= 2)
        assert got == [("t3/a", b"kept"), ("t3/b", b"later")]


def test_last_will_when_client_drops(broker_url: str) -> None:
    got, _, handler = _collector()
    with MqttConnection(broker_url) as watcher:
        watcher.subscribe("t4/dev/status", handler)
        device = MqttConnection(broker_url, will=Will("t4/dev/status", b"offline")).connect()
        device.publish("t4/dev/status", b"online", qos=1, retain=True)
        wait_until(lambda: got, what="online status")
        device.drop()  # socket closed without DISCONNECT, as a crash would
        wait_until(lambda: len(got) >= 2, what="last will")
        assert [p for _, p in got] == [b"online", b"offline"]


def test_clean_close_does_not_fire_the_will(mosquitto_url: str) -> None:
    got, _, handler = _collector()
    with MqttConnection(mosquitto_url) as watcher:
        watcher.subscribe("t5/#", handler)
        with MqttConnection(mosquitto_url, will=Will("t5/will", b"offline")) as device:
            device.publish("t5/alive", b"1", qos=1)
            device.wait_published()
        watcher.subscribe("t5b/marker", handler)
        watcher.publish("t5b/marker", b"end", qos=1)
        wait_until(lambda: any(t == "t5b/marker" for t, _ in got))
        assert ("t5/will", b"offline") not in got


DEVICE_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from app.transport.mqtt_link import MqttConnection, Will
    conn = MqttConnection(sys.argv[1], will=Will("t6/dev/status", b"gone")).connect()
    conn.publish("t6/dev/status", b"here", qos=1, retain=True)
    conn.wait_published()
    print("ready", flush=True)
    time.sleep(60)
    """
)


def test_last_will_when_device_process_is_killed(mosquitto_url: str) -> None:
    got, _, handler = _collector()
    proc = subprocess.Popen([sys.executable, "-c", DEVICE_SCRIPT, mosquitto_url], stdout=subprocess.PIPE,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        with MqttConnection(mosquitto_url) as watcher:
            watcher.subscribe("t6/dev/status", handler)
            wait_until(lambda: got, what="retained status")
            proc.send_signal(signal.SIGKILL)
            wait_until(lambda: len(got) >= 2, what="last will after SIGKILL")
            assert [p for _, p in got] == [b"here", b"gone"]
    finally:
        proc.kill()
        proc.wait()


def test_reconnects_and_resubscribes_after_broker_restart(mosquitto_factory) -> None:
    broker = mosquitto_factory()
    states: list[tuple[bool, str]] = []
    got, _, handler = _collector()
    with MqttConnection(broker.url) as conn:
        conn.on_state(lambda up, reason: states.append((up, reason)))
        conn.subscribe("t7/x", handler)
        broker.kill()
        wait_until(lambda: not conn.connected, what="disconnect noticed")
        with pytest.raises(LinkError, match="not connected"):
            conn.publish("t7/x", b"lost", qos=0)
        broker.restart()
        wait_until(lambda: conn.connected, timeout=20, what="reconnect")
        with MqttConnection(broker.url) as pub:
            # Subscriptions are renewed on reconnect: a retained message proves it without a race.
            pub.publish("t7/x", b"after restart", qos=1, retain=True)
            pub.wait_published()
        wait_until(lambda: got, what="message after reconnect")
    assert got == [("t7/x", b"after restart")]
    assert states[0][0] is False and "lost connection" in states[0][1]
    assert states[1] == (True, "connected")


def test_refused_connection_on_dead_port() -> None:
    port = free_port()
    with pytest.raises(LinkError, match=f"broker 127.0.0.1:{port} refused the connection"):
        MqttConnection(f"mqtt://127.0.0.1:{port}").connect(timeout=5)


def test_not_authorised(mosquitto_factory) -> None:
    broker = mosquitto_factory(allow_anonymous=False)
    with pytest.raises(LinkError, match=f"broker 127.0.0.1:{broker.port} refused the connection: Not authorized"):
        MqttConnection(broker.url).connect(timeout=5)


def test_silent_server_times_out() -> None:
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with pytest.raises(LinkError, match="did not answer within 1 s"):
            MqttConnection(f"mqtt://127.0.0.1:{port}").connect(timeout=1)


def test_failing_handler_does_not_stop_delivery(mosquitto_url: str) -> None:
    got, _, handler = _collector()

    def broken(topic: str, payload: bytes) -> None:
        raise RuntimeError("bug in a handler")

    with MqttConnection(mosquitto_url) as conn:
        conn.subscribe("t8/#", broken)
        conn.subscribe("t8/#", handler)
        conn.publish("t8/a", b"1", qos=1, retain=True)
        wait_until(lambda: got)
        conn.publish("t8/a", b"2", qos=1)
        wait_until(lambda: len(got) == 2)
        assert conn.counters["handler_errors"] == 2
        conn.publish("t8/a", b"", qos=1, retain=True)
        conn.wait_published()


def test_publish_after_close_raises(mosquitto_url: str) -> None:
    conn = MqttConnection(mosquitto_url).connect()
    conn.close()
    with pytest.raises(LinkError, match="closed"):
        conn.publish("t9", b"x")


def test_embedded_broker_stops_cleanly_and_frees_its_port() -> None:
    import socket

    broker = EmbeddedBroker()
    url = broker.start()
    port = int(url.rsplit(":", 1)[1])
    conn = MqttConnection(url).connect()
    broker.stop()
    wait_until(lambda: not conn.connected, what="client notices the broker stopped")
    conn.close()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_new_subscriber_on_a_shared_connection_gets_the_retained_message(broker_url: str) -> None:
    """A channel opened right after a status arrived on overlapping filters of the same connection
    (fleet monitor + another channel) must still get the retained status: the broker's retained
    delivery answers its own new subscription and is not an overlap copy."""
    conn = MqttConnection(broker_url)
    conn.connect()
    try:
        monitor: list[bytes] = []
        channel: list[bytes] = []
        late: list[bytes] = []
        conn.subscribe("tinymlops/v1/+/+/status", lambda _t, p: monitor.append(p))
        conn.subscribe("tinymlops/v1/site/dev-1/#", lambda _t, p: channel.append(p))
        conn.publish("tinymlops/v1/site/dev-1/status", b"hello-2", qos=1, retain=True)
        wait_until(lambda: b"hello-2" in monitor and b"hello-2" in channel)
        conn.subscribe("tinymlops/v1/site/dev-1/status", lambda _t, p: late.append(p))
        wait_until(lambda: b"hello-2" in late)
    finally:
        # the broker may be the session's shared one: a retained non-protocol status left there
        # would be counted as a bad message by every later fleet monitor on it
        conn.publish("tinymlops/v1/site/dev-1/status", b"", qos=1, retain=True)
        conn.close()


def test_wait_subscribed_reports_a_broker_that_never_answers() -> None:
    conn = MqttConnection(f"mqtt://127.0.0.1:{free_port()}")  # nothing listens there; never connected
    conn.subscribe("t9/#", lambda topic, payload: None)
    with pytest.raises(LinkError, match="did not acknowledge"):
        conn.wait_subscribed(timeout=0.2)
    conn.close()


def test_a_subscription_in_flight_is_not_a_stalled_link_but_one_never_acknowledged_is(mosquitto_url: str) -> None:
    """link_problem() lets a deployment tell "the device is silent" from "our own link is": a SUBSCRIBE
    sent a moment ago (a device lookup's reply topic) is in flight, not a stall (it was reported as one
    under load); one the broker never acknowledges becomes a stall after STALLED_PUBLISH_S."""
    from app.transport import mqtt_link
    from tests.deploy.tcp_proxy import TcpProxy

    port = int(mosquitto_url.rsplit(":", 1)[1])
    with TcpProxy(port) as proxy:
        conn = MqttConnection(proxy.url)
        conn.connect()
        try:
            assert conn.link_problem() == ""
            proxy.set_stalled(True)  # the broker's SUBACK can no longer reach us
            conn.subscribe("tinymlops/v1/test/in-flight", lambda _t, _p: None)
            assert conn.link_problem() == ""  # just sent: in flight
            wait_until(lambda: "has not acknowledged its subscriptions" in conn.link_problem(),
                       timeout=mqtt_link.STALLED_PUBLISH_S + 30, what="the stall to be named")
            proxy.set_stalled(False)
            wait_until(lambda: conn.link_problem() == "", timeout=30, what="the SUBACK after the stall")
        finally:
            conn.close()
