"""The broker capability probe against the three brokers it must tell apart (issue 18)."""

from __future__ import annotations

import os

import pytest

from app.transport.broker_probe import capabilities_of, probe
from app.transport.mqtt_link import MqttConnection


@pytest.mark.parametrize("broker", ["embedded_broker_url", "mosquitto_url"])
def test_wildcard_retained_brokers_are_recognised(broker: str, request: pytest.FixtureRequest) -> None:
    with MqttConnection(request.getfixturevalue(broker)) as conn:
        caps = probe(conn)
    assert (caps.qos1, caps.retained, caps.retained_wildcard, caps.will, caps.chunk_messages) == (
        True, True, True, True, True), caps.problems
    assert caps.wildcard_retained_ok
    assert "rollouts pull" in caps.describe()


def test_rabbitmq_is_recognised_as_retained_to_exact_topics_only(rabbitmq_url: str) -> None:
    with MqttConnection(rabbitmq_url) as conn:
        caps = capabilities_of(conn)
        assert capabilities_of(conn, run=False) is caps  # probed once per connection
    assert (caps.qos1, caps.retained, caps.retained_wildcard, caps.will, caps.chunk_messages) == (
        True, True, False, True, True), caps.problems
    assert not caps.wildcard_retained_ok
    assert "does not deliver retained messages to wildcard subscriptions" in caps.describe()
    assert caps.as_dict()["summary"] == caps.describe()


def test_the_probe_leaves_no_retained_message_behind(mosquitto_url: str) -> None:
    with MqttConnection(mosquitto_url) as conn:
        probe(conn)
    got: list[tuple[str, bytes]] = []
    with MqttConnection(mosquitto_url) as late:
        late.subscribe("tinymlops/probe/#", lambda t, p: got.append((t, p)))
        late.wait_subscribed()
        late.publish("tinymlops/probe/x/end", b"m", qos=1)
        from tests.transport.helpers import wait_until

        wait_until(lambda: any(t.endswith("/end") for t, _ in got), what="the marker")
    assert [t for t, _ in got] == ["tinymlops/probe/x/end"]


def test_a_broker_capping_the_packet_size_below_a_chunk_is_named(mosquitto_factory) -> None:
    broker = mosquitto_factory(extra_config="max_packet_size 2048\n")
    with MqttConnection(broker.url) as conn:
        caps = probe(conn)
    assert caps.chunk_messages is False
    assert (caps.retained, caps.retained_wildcard) == (True, True)  # told apart by a small marker
    assert "did not carry a 4160-byte message (a model chunk)" in caps.describe()


# An operator confined by an ACL like `tinymlops broker kit`'s: it reads the fleet's tree and writes
# its site's model chunks only (anonymous here, for brevity).
KIT_LIKE_ACL = "topic read tinymlops/v1/#\ntopic readwrite tinymlops/v1/plant-k/models/#\n"


def test_an_acl_confined_operator_settles_and_probes_under_its_sites_models(mosquitto_factory, tmp_path) -> None:
    from app.services.fleet_monitor import FleetMonitor

    acl = tmp_path / "acl"
    acl.write_text(KIT_LIKE_ACL)
    run_as = "user root\n" if os.geteuid() == 0 else ""  # as root Mosquitto drops to a user who cannot read tmp_path
    broker = mosquitto_factory(extra_config=f"acl_file {acl}\n{run_as}")
    with MqttConnection(broker.url) as conn:
        with FleetMonitor(conn) as monitor:
            monitor.settle()  # needs no right to publish: the marker is a subscription's acknowledgement
        caps = probe(conn, site="plant-k")
        assert (caps.qos1, caps.retained, caps.retained_wildcard, caps.will, caps.chunk_messages) == (
            True, True, True, True, True), caps.problems
        unknown = probe(conn, timeout=2.0)  # the default root is not writable: nothing is concluded
    assert (unknown.retained, unknown.retained_wildcard) == (None, None)
    assert "ACL" in " ".join(unknown.problems)
    assert "rollouts pull as usual" in unknown.describe()


def test_a_broker_capping_packets_below_a_chunk_gets_smaller_chunks_push_and_pull(mosquitto_factory, virtual_fleet,
                                                                                 model_image_v3, caplog):
    """Issue 18, bad input: a broker that does not carry a 4 KB chunk. The probe names it, and the
    deployment sends chunks it carries (push to one device, a pull rollout to two) instead of
    stalling on chunks the broker drops."""
    import logging

    from app.deploy import api
    from app.protocol.image import ModelImage
    from app.transport import broker_probe

    broker = mosquitto_factory(extra_config="max_packet_size 2048\n")
    broker_probe._CACHE.pop(MqttConnection(broker.url).url.address, None)  # a fresh broker on a reused port
    fleet = virtual_fleet(broker.url, 3)
    version = ModelImage.from_bytes(model_image_v3).version
    with caplog.at_level(logging.WARNING, logger="app.deploy.api"):
        (pushed,) = api.deploy(model_image_v3, ["sim-001"], via="mqtt", broker=broker.url, pull=False)
        pulled = api.deploy(model_image_v3, ["sim-002", "sim-003"], via="mqtt", broker=broker.url, pull=True)
    assert pushed.ok and pushed.transport == "mqtt-push", pushed.error_message
    assert all(r.ok and r.transport == "mqtt-pull" for r in pulled), [r.error_message for r in pulled]
    assert all(fleet.device(d).active_model.image.version == version for d in ("sim-001", "sim-002", "sim-003"))
    assert any(f"sending {api.CAPPED_BROKER_CHUNK}-byte chunks" in r.getMessage() for r in caplog.records)
