"""Exact-topic lookups (issue 18): a device named only by its telemetry is asked GET_INFO on its exact
topics; its answer makes it known, and a silent id costs one question and no lasting subscription."""

from __future__ import annotations

from app.protocol import messages as m
from app.protocol import topics
from app.services import exact_lookup
from app.services.fleet_monitor import FleetMonitor
from app.transport.mqtt_link import MqttConnection
from tests.transport.helpers import wait_until


def test_a_device_named_by_its_telemetry_is_asked_and_known_from_its_answer(mosquitto_factory) -> None:
    url = mosquitto_factory().url
    cmd, reply = (topics.device_topic("plant-q", "quiet-1", leaf) for leaf in (topics.CMD, topics.REPLY))
    hello = m.Hello(device_id="quiet-1", location="plant-q/line/m", profile="stm32f446", model_name="pump",
                    model_version=3, state=1)
    with MqttConnection(url) as device:
        # a device whose retained status the broker does not hand out: it answers GET_INFO only
        device.subscribe(cmd, lambda _t, payload: device.publish(
            reply, m.encode(hello, m.decode(payload).seq), qos=1) if isinstance(m.decode(payload).msg, m.GetInfo)
            else None)
        device.wait_subscribed()
        with MqttConnection(url) as conn, FleetMonitor(conn) as monitor:
            monitor.settle()
            device.publish(topics.device_topic("plant-q", "quiet-1", topics.TELEMETRY),
                           m.encode(m.Telemetry(score=0.2)), qos=1)
            wait_until(lambda: monitor.get("quiet-1") is not None, what="the answer to GET_INFO")
            record = monitor.get("quiet-1")
            assert (record.site, record.profile, record.model_name, record.model_version) == (
                "plant-q", "stm32f446", "pump", 3)
            assert monitor.lookups.counters["answered"] == 1
            assert monitor.lookups.wait_answered()
            assert reply not in conn._subs  # the reply subscription ended with the answer


def test_a_silent_id_costs_one_question_and_no_lasting_subscription(mosquitto_factory, monkeypatch) -> None:
    monkeypatch.setattr(exact_lookup, "ASK_TIMEOUT_S", 2.0)  # the 3 messages come in one burst
    reply = topics.device_topic("plant-ghost", "ghost-2", topics.REPLY)
    with MqttConnection(mosquitto_factory().url) as conn, FleetMonitor(conn) as monitor:
        monitor.settle()
        for _ in range(3):
            conn.publish(topics.device_topic("plant-ghost", "ghost-2", topics.TELEMETRY),
                         m.encode(m.Telemetry(score=0.9)), qos=1)
        wait_until(lambda: monitor.counters["bad_unknown_device"] == 3, what="the ghost's telemetry")
        assert monitor.lookups.wait_answered(timeout=30)  # expired, not answered
        assert monitor.lookups.counters["asked"] == 1 and monitor.lookups.counters["unanswered"] == 1
        assert reply not in conn._subs
        assert monitor.get("ghost-2") is None  # still no ghost device
