"""The embedded broker serves a connect storm with clients subscribing at the same time.

(amqtt 0.12 once killed a connecting client's session with "dictionary changed size during
iteration" in a CI run of the fleet tests; app.transport.broker iterates a snapshot since. This
storm is the situation it happened in; it has not reproduced that race on demand.)
"""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt

from app.transport.urls import parse_broker_url

CLIENTS = 40
# Generous: 40 local connects and subscribes normally take well under a second.
READY_TIMEOUT_S = 30


def test_connect_storm_with_concurrent_subscribes(embedded_broker_url):
    url = parse_broker_url(embedded_broker_url)
    got: dict[int, threading.Event] = {i: threading.Event() for i in range(CLIENTS)}
    clients = []

    def make(i: int) -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"storm-{i}")

        def on_connect(c, _userdata, _flags, _rc, _props):
            c.subscribe(f"storm/{i}/#", qos=1)
            c.subscribe(f"storm/extra/{i}", qos=0)
            c.subscribe("storm/+/hello", qos=0)
            c.publish(f"storm/{i}/hello", b"x", qos=1, retain=True)

        def on_message(_c, _userdata, msg):
            if msg.topic == f"storm/{i}/hello":
                got[i].set()

        client.on_connect = on_connect
        client.on_message = on_message
        client.connect_async(url.host, url.port)
        client.loop_start()
        return client

    try:
        threads = [threading.Thread(target=lambda i=i: clients.append(make(i))) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        missing = [i for i, ev in got.items() if not ev.wait(READY_TIMEOUT_S)]
        assert missing == []
    finally:
        for c in clients:
            c.disconnect()
            c.loop_stop()
