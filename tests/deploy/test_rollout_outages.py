"""Pull rollouts through a broker outage of the operator's own link (issue 11: 11.4, 11.5, 11.14,
11.17, 11.19, 11.20).

Real Mosquitto, real virtual devices (connected straight to the broker), and the operator reaching
the broker through a loopback TCP proxy (tests/deploy/tcp_proxy.py) that the test cuts or takes
down at the moment a device receives XFER_BEGIN. Outage bounds are shortened through the module
constants so that a failing rollout fails in seconds; nothing is mocked.
"""

from __future__ import annotations

import json
from typing import ClassVar

import pytest

from app.deploy import links
from app.deploy import rollout as rollout_mod
from app.deploy.rollout import Rollout, find_devices
from app.domain.errors import LinkError
from app.domain.paths import DATA_DIR_ENV
from app.protocol import topics
from app.protocol.codes import DeviceState
from app.protocol.image import sha256
from app.services import cleanups
from app.services.channel import MqttChannel
from app.transport.mqtt_link import MqttConnection
from tests.deploy.outage_helpers import LogEvent, operator_link, retained_under, roll_out
from tests.deploy.tcp_proxy import TcpProxy
from tests.transport.helpers import wait_until

# A command's wait per attempt in these tests: the devices answer on loopback in milliseconds, but
# other workers may be training on both cores; 3 s keeps the cases that must succeed clear of that.
COMMAND_S = 3.0
# The stall case's attempts: long enough that a resent command waits past STALLED_PUBLISH_S.
STALL_ATTEMPT_S = 3.0
# The operator's link outage a rollout rides out, shortened so the failing cases end in seconds.
RIDE_OUT_S = 3.0
# paho's reconnect back-off after several seconds of outage can reach 8 s; a generous bound on top.
RECONNECTED_S = 40.0
PROFILE = ["stm32l4r5"]


@pytest.fixture
def short_outages(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "data"))
    monkeypatch.setattr(rollout_mod, "LINK_RIDE_OUT_S", RIDE_OUT_S, raising=False)
    monkeypatch.setattr(rollout_mod, "PUBLISH_ACK_TIMEOUT_S", RIDE_OUT_S, raising=False)


def _prefix(image: bytes, site: str) -> str:
    return topics.model_chunk_prefix(site, sha256(image).hex())


def test_one_dropped_operator_connection_does_not_fail_the_rollout(mosquitto_factory, virtual_fleet,
                                                                  model_image_v3, short_outages):
    """11.5: pending commands failed the moment the link dropped, so one reconnect failed every device."""
    broker = mosquitto_factory()
    fleet = virtual_fleet(broker.url, 2, profiles=PROFILE)
    ids = [d.device_id for d in fleet.devices]
    with operator_link(broker.port, fleet.devices, lambda proxy: proxy.cut()) as link:
        report = roll_out(link.conn, model_image_v3, ids, 3, COMMAND_S)
    assert link.fired.is_set() and link.conn.counters["disconnects"] >= 1
    assert [r.ok for r in report.results] == [True, True], [str(r.error) for r in report.results]
    for dev in fleet.devices:
        assert dev.active_model.sha256 == sha256(model_image_v3)


def test_a_rollout_that_loses_its_link_after_xfer_begin_leaves_no_device_busy(mosquitto_factory, virtual_fleet,
                                                                             model_image, model_image_v3,
                                                                             short_outages):
    """11.4: the link drops after the device accepted XFER_BEGIN, before its reply reaches the
    operator, for longer than the rollout waits. No XFER_ABORT was sent, so the next deployment was
    refused BUSY for 30 s. Now every begun transfer is aborted when the link is back."""
    broker = mosquitto_factory()
    fleet = virtual_fleet(broker.url, 1, profiles=PROFILE)
    dev = fleet.devices[0]
    with operator_link(broker.port, fleet.devices, lambda proxy: proxy.set_down(True)) as link:
        # the link comes back once the rollout has given up on the device
        with LogEvent("app.deploy.rollout", "rollout to", lambda: link.proxy.set_down(False)) as gave_up:
            first = roll_out(link.conn, model_image_v3, [dev.device_id], 3, COMMAND_S)
        assert gave_up.event.is_set() and not first.results[0].ok
        # the next deployment, of another image, is taken at once instead of refused BUSY
        second = roll_out(link.conn, model_image, [dev.device_id], 2, COMMAND_S)
    assert second.results[0].ok, str(second.results[0].error)
    assert dev.active_model.sha256 == sha256(model_image)
    assert dev.hello().state != DeviceState.UPDATING


def test_chunks_left_by_an_outage_are_cleared_when_the_broker_is_back(mosquitto_factory, virtual_fleet,
                                                                     model_image_v3, short_outages, tmp_path):
    """11.14: the rollout fails in an outage that outlasts it; its retained chunks stayed on the
    broker. Now the clean-up is remembered and done when this connection is back."""
    broker = mosquitto_factory()
    fleet = virtual_fleet(broker.url, 1, profiles=PROFILE)
    dev = fleet.devices[0]
    prefix = _prefix(model_image_v3, dev.site)
    store = cleanups.PendingCleanups()
    with operator_link(broker.port, fleet.devices, lambda proxy: proxy.set_down(True)) as link:
        report = roll_out(link.conn, model_image_v3, [dev.device_id], 3, COMMAND_S)
        assert not report.results[0].ok
        assert report.chunks_left_on_broker == report.n_chunks
        assert retained_under(broker.url, prefix) == report.n_chunks  # the outage left them there
        assert [c.prefix for c in store.for_broker(link.proxy.url.split("//")[1])] == [prefix]
        link.proxy.set_down(False)  # the broker is back for the operator
        wait_until(lambda: not store.path.exists(), RECONNECTED_S, "the remembered clean-up to be done")
    assert retained_under(broker.url, prefix) == 0
    wait_until(lambda: dev.hello().state != DeviceState.UPDATING, RECONNECTED_S, "the XFER_ABORT")


def test_chunks_left_by_a_failed_rollout_are_cleared_on_the_next_start(mosquitto_factory, virtual_fleet,
                                                                       model_image_v3, short_outages):
    """11.14 as an operator meets it: the CLI's rollout fails in an outage and the process ends; the
    chunks stayed on the broker until the same image was rolled out again. Now the next command
    that opens the broker clears them."""
    broker = mosquitto_factory()
    fleet = virtual_fleet(broker.url, 1, profiles=PROFILE)
    dev = fleet.devices[0]
    prefix = _prefix(model_image_v3, dev.site)
    with operator_link(broker.port, fleet.devices, lambda proxy: proxy.set_down(True)) as link:
        report = roll_out(link.conn, model_image_v3, [dev.device_id], 3, COMMAND_S)
        link.conn.close()  # the process ends
        assert not report.results[0].ok
        assert retained_under(broker.url, prefix) == report.n_chunks  # the outage left them there
        link.proxy.set_down(False)
        with links.broker_connection(link.proxy.url):  # the next command, e.g. `tinymlops fleet list`
            pass
    assert retained_under(broker.url, prefix) == 0


def test_cli_rollout_through_a_lasting_outage_prints_json_and_exits_1(mosquitto_factory, virtual_fleet,
                                                                      model_image_v3, short_outages, tmp_path,
                                                                      monkeypatch, capsys):
    """11.17: the outage starts while the model is being published and outlasts the rollout. It gave
    exit code 2, no JSON, and "broker ... did not acknowledge publishes" (as if it were slow)."""
    from app.cli.main import main

    broker = mosquitto_factory()
    fleet = virtual_fleet(broker.url, 2, profiles=PROFILE)
    image = tmp_path / "v3.tmlm"
    image.write_bytes(model_image_v3)
    with TcpProxy(broker.port) as proxy:
        publish = Rollout._publish_chunks

        def outage_then_publish(self, sites):
            proxy.set_down(True)  # the broker becomes unreachable as the model goes out
            return publish(self, sites)

        monkeypatch.setattr(Rollout, "_publish_chunks", outage_then_publish)
        code = main(["deploy", str(image), "--broker", proxy.url, "--json"]
                    + [a for d in fleet.devices for a in ("--device", d.device_id)])
    out = capsys.readouterr().out
    report = json.loads(out)
    assert code == 1
    assert [r["outcome"] for r in report] == ["failed", "failed"]
    for r in report:
        assert "connection to broker" in r["error_message"], r["error_message"]
        assert "did not acknowledge" not in r["error_message"], r["error_message"]


class _ClockedConnection:
    """The real connection, noting when the first chunk publish is handed to it."""

    def __init__(self, conn: MqttConnection, prefix: str) -> None:
        self._conn, self._prefix = conn, prefix
        self.first_chunk_at: float | None = None

    def publish(self, topic, payload, qos=0, retain=False):
        import time

        if self.first_chunk_at is None and topic.startswith(self._prefix) and payload:
            self.first_chunk_at = time.perf_counter()
        return self._conn.publish(topic, payload, qos=qos, retain=retain)

    def __getattr__(self, name):
        return getattr(self._conn, name)


class _ClockedChannel(MqttChannel):
    commit_answered_at: ClassVar[dict[str, float]] = {}

    def request(self, msg, timeout=None, retries=0, **kwargs):
        import time

        from app.protocol.messages import XferCommit

        pkt = super().request(msg, timeout=timeout, retries=retries, **kwargs)
        if isinstance(msg, XferCommit):
            self.commit_answered_at[self.device_id] = time.perf_counter()
        return pkt


def test_pull_deployment_latency_counts_from_the_first_chunk_published(mosquitto_factory, virtual_fleet,
                                                                      model_image_v3):
    """11.19: pull left the publishing out (0.2 s reported for a 3.7 s command). One definition for
    both paths: first byte sent for the deployment -> device answered COMMIT. The bounds below are
    orderings of clock readings, not timing assumptions. A broker of its own, as the other tests
    here: on the session's shared broker, earlier tests' sim-001/sim-002 (same client ids, retained
    statuses) can meet this fleet (a shuffled run saw sim-002 answer nothing for 15 s)."""
    broker = mosquitto_factory()
    fleet = virtual_fleet(broker.url, 2, profiles=PROFILE)
    ids = [d.device_id for d in fleet.devices]
    with MqttConnection(broker.url) as real:
        conn = _ClockedConnection(real, f"{topics.ROOT}/")
        report = Rollout(conn, model_image_v3, find_devices(real, ids), model_name="pump-ae", model_version=3,
                         channel_factory=lambda c, site, d: _ClockedChannel(real, site, d)).run()
    assert conn.first_chunk_at is not None
    for r in report.results:
        assert r.ok, r.error
        # the clock started no later than the first chunk and stopped no earlier than the COMMIT answer
        assert r.stats.host_deploy_s >= _ClockedChannel.commit_answered_at[r.device_id] - conn.first_chunk_at
        assert r.stats.host_deploy_s <= report.elapsed_s


def test_a_stalled_operator_link_is_not_reported_as_devices_offline(mosquitto_factory, virtual_fleet):
    """11.20: with the operator's own link stalled, every device was "not online"; say whose link it is."""
    broker = mosquitto_factory()
    fleet = virtual_fleet(broker.url, 1, profiles=PROFILE)
    with TcpProxy(broker.port) as proxy:
        conn = MqttConnection(proxy.url)
        conn.connect()
        try:
            proxy.set_stalled(True)
            with pytest.raises(LinkError) as err, links.mqtt_device(conn, fleet.devices[0].device_id):
                pass
        finally:
            proxy.set_stalled(False)
            conn.close()
    assert "operator's connection" in str(err.value) and "stalled" in str(err.value), str(err.value)


def test_cli_deploy_that_cannot_reach_the_broker_still_prints_json(model_image_v3, tmp_path, monkeypatch, capsys):
    """11.17, the start: with --json a script gets one failed entry per device (and exit code 2:
    the command could not run), not only a line on stderr."""
    from app.cli.main import main
    from tests.fixtures.brokers import free_port

    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "data"))
    image = tmp_path / "v3.tmlm"
    image.write_bytes(model_image_v3)
    code = main(["deploy", str(image), "--device", "sim-001", "--device", "sim-002", "--json",
                 "--broker", f"mqtt://127.0.0.1:{free_port()}"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == 2
    assert [(r["device"], r["outcome"]) for r in report] == [("sim-001", "failed"), ("sim-002", "failed")]
    assert "nothing listens there" in report[0]["error_message"]
    assert "error:" in captured.err


def test_a_stall_of_the_operator_link_mid_rollout_is_named_as_such(mosquitto_factory, virtual_fleet, model_image_v3,
                                                                  short_outages):
    """11.20: the operator's link stalls (nothing flows, nothing drops) right after XFER_BEGIN: the
    device was blamed ("did not answer"). The error now says that our own link is stalled."""
    broker = mosquitto_factory()
    fleet = virtual_fleet(broker.url, 1, profiles=PROFILE)
    dev = fleet.devices[0]
    with operator_link(broker.port, fleet.devices, lambda proxy: proxy.set_stalled(True)) as link, \
            LogEvent("app.deploy.rollout", "rollout to", lambda: link.proxy.set_stalled(False)):
        # attempts long enough that the resent command waits past STALLED_PUBLISH_S unacknowledged
        report = roll_out(link.conn, model_image_v3, [dev.device_id], 3, STALL_ATTEMPT_S)
    message = str(report.results[0].error)
    assert "operator's connection" in message and "stalled" in message, message
