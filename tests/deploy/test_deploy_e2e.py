"""`tinymlops deploy` and the deploy API end to end against the virtual fleet: Mosquitto, the
embedded broker and a paced serial pty; telemetry, rollback, trial + confirm, trial auto-revert,
and the refusals an operator relies on."""

from __future__ import annotations

import json
import queue
import threading
import time

import pytest

from app.cli.main import main
from app.deploy import api, links
from app.deploy.history import DeploymentHistory
from app.deploy.transfer import PushTransfer
from app.domain.errors import ModelError
from app.domain.profiles import get_profile
from app.fleet.fleet import load_factory_image
from app.protocol import topics
from app.protocol.codes import CommitMode, ErrorCode, EventCode, TelemetryFlags
from app.protocol.image import ModelImage, sha256
from app.protocol.messages import Event, Telemetry, decode
from app.services.channel import SerialChannel
from app.transport.mqtt_link import MqttConnection
from tests.deploy.outage_helpers import device_message, retained_topics
from tests.fixtures.models import register_image

# Telemetry comes at 1 Hz; a few periods after activation the new model's scores must be there.
TELEMETRY_WAIT_S = 10.0
# A trial of this many seconds reverts by itself (the device's tick checks it every 50 ms).
TRIAL_S = 1
# A 1 s trial reverts in about a second; this only bounds a failing test on a loaded box.
REVERT_WAIT_S = 30.0


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture
def v3_path(tmp_path, model_image_v3):
    path = tmp_path / "pump-ae-v3.tmlm"
    path.write_bytes(model_image_v3)
    return path


def _cli(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().out


def _wait_telemetry(url: str, device, predicate, timeout: float = TELEMETRY_WAIT_S) -> Telemetry:
    return device_message(url, device, topics.TELEMETRY, predicate, timeout)


def test_cli_deploy_over_mosquitto_new_model_scores_in_telemetry(capsys, mosquitto_url, virtual_fleet, v3_path,
                                                                 model_image_v3):
    fleet = virtual_fleet(mosquitto_url, 2)
    code, out = _cli(capsys, "deploy", str(v3_path), "--device", "sim-001", "--via", "mqtt",
                     "--broker", mosquitto_url, "--json")
    assert code == 0, out
    (result,) = json.loads(out)
    assert result["outcome"] == "ok" and result["transport"] == "mqtt-push"
    assert result["model_version"] == 3 and result["model_sha"] == sha256(model_image_v3).hex()
    assert result["host_deploy_s"] > 0 and result["device_deploy_us"] > 0 and result["load_us"] > 0
    assert result["bench_n"] == 100
    assert 0 < result["inference_min_us"] <= result["inference_median_us"] <= result["inference_p95_us"] \
        <= result["inference_max_us"]
    assert result["wire_bytes"] >= result["image_size"] == len(model_image_v3)
    dev = fleet.device("sim-001")
    assert dev.active_model.sha256 == sha256(model_image_v3)
    threshold = ModelImage.from_bytes(model_image_v3).threshold
    tele = _wait_telemetry(mosquitto_url, dev, lambda t: t.model_version == 3)
    assert tele.threshold == pytest.approx(threshold, rel=1e-6) and tele.score > 0
    assert fleet.device("sim-002").active_model.image.name == "factory"  # only the named device changed

    code, out = _cli(capsys, "deployments", "--json")
    (row,) = json.loads(out)
    assert row["device"] == "sim-001" and row["outcome"] == "ok" and row["broker"] == mosquitto_url
    assert row["load_us"] == result["load_us"]
    code, out = _cli(capsys, "deployments", "--csv")
    assert out.splitlines()[0].startswith("id,started,device") and "sim-001" in out.splitlines()[1]


def test_staged_rollout_over_embedded_broker_publishes_the_model_once(embedded_broker_url, virtual_fleet,
                                                                      model_image_v3):
    fleet = virtual_fleet(embedded_broker_url, 4, profiles=["stm32l4r5"])
    ids = [d.device_id for d in fleet.devices]
    seen: dict[str, int] = {}
    results = api.deploy(model_image_v3, ids, via="mqtt", broker=embedded_broker_url, canary=1,
                         canary_threshold=1.0, concurrency=2,
                         progress=lambda d, done, total: seen.__setitem__(d, max(done, seen.get(d, 0))))
    assert [r.outcome for r in results] == ["ok"] * 4, [r.error_message for r in results]
    assert {r.transport for r in results} == {"mqtt-pull"}
    assert seen == {d: len(model_image_v3) for d in ids}
    for d in fleet.devices:
        assert d.active_model.sha256 == sha256(model_image_v3)
    # the operator's uplink carried the model once per site (PROTOCOL.md 5.2), not once per device:
    # the chunks cost about one image per site (plus MQTT and chunk headers); commands are the rest
    sites = {d.site for d in fleet.devices}
    assert len(sites) < len(ids)
    (uplink,) = {r.rollout_published_bytes for r in results}
    (chunks,) = {r.rollout_chunk_bytes for r in results}
    # (per chunk: an 18-byte XFER_CHUNK header and a ~95-byte content-addressed topic; 7% of this
    # 7 KB test image in 2 KB chunks, under 5% for a real 4 KB-chunk model)
    assert len(sites) * len(model_image_v3) < chunks < 1.10 * len(sites) * len(model_image_v3), chunks
    assert chunks < uplink < len(ids) * len(model_image_v3), uplink
    # inference figures came from BENCHMARK after the deployment clock stopped
    assert all(r.bench_n == api.DEFAULT_BENCH_COUNT and r.load_us and r.device_deploy_us for r in results)
    # the retained chunks are gone: a late subscriber gets nothing under models/ before a marker
    # published after its SUBACK (the broker sends retained messages right after the SUBACK)
    assert retained_topics(embedded_broker_url, f"{topics.ROOT}/+/models/#",
                           f"{topics.ROOT}/zz-test/models/marker") == []
    assert len(DeploymentHistory().list()) == 4


def test_failed_canary_stops_the_rollout(mosquitto_url, virtual_fleet, model_image_v3, model_factory):
    # the model fails its self-test on the canary (what no check before the transfer can know):
    # the canary fails, nobody else is touched (a model that does not fit is refused before any
    # transfer: tests/deploy/test_deploy_choices.py)
    fleet = virtual_fleet(mosquitto_url, 3, profiles=["stm32l4r5"])
    results = api.deploy(model_factory.selftest_wrong(model_image_v3), ["sim-001", "sim-002", "sim-003"],
                         via="mqtt", broker=mosquitto_url, canary=1, canary_threshold=1.0)
    assert results[0].outcome == "failed" and results[0].error_code == ErrorCode.SELFTEST_FAILED
    assert [r.outcome for r in results[1:]] == ["skipped", "skipped"]
    assert "canary" in results[1].error_message
    for d in fleet.devices:
        assert d.active_model.image.name == "factory"


def test_serial_trial_confirm_and_rollback_through_the_cli(capsys, virtual_fleet, v3_path, model_image_v3):
    fleet = virtual_fleet(None, 1, serial=True, baud=921600)
    port = fleet.serial_ports["sim-001"]
    dev = fleet.device("sim-001")
    code, out = _cli(capsys, "deploy", str(v3_path), "--via", "serial", "--port", port, "--baud", "921600",
                     "--trial", "--json")
    assert code == 0, out
    (result,) = json.loads(out)
    assert result["outcome"] == "ok" and result["trial"] and result["transport"] == "serial"
    assert result["wire_bytes"] <= 1.05 * len(model_image_v3)
    assert dev.trial and dev.active_model.sha256 == sha256(model_image_v3)
    # the device's telemetry on the same serial line now carries the new model's scores, on trial
    got: queue.Queue[Telemetry] = queue.Queue()
    with SerialChannel.open(port, 921600) as channel:
        channel.on_packet(lambda p: got.put(p.msg) if isinstance(p.msg, Telemetry) else None)
        tele = got.get(timeout=TELEMETRY_WAIT_S)
        while tele.model_version != 3:
            tele = got.get(timeout=TELEMETRY_WAIT_S)
    assert tele.flags & TelemetryFlags.TRIAL and tele.score > 0

    code, out = _cli(capsys, "confirm", "--via", "serial", "--port", port, "--baud", "921600", "--json")
    assert code == 0 and json.loads(out)[0]["model_version"] == 3
    assert not dev.trial

    code, out = _cli(capsys, "rollback", "--via", "serial", "--port", port, "--baud", "921600", "--json")
    (rb,) = json.loads(out)
    assert code == 0 and rb["ok"] and rb["model_name"] == "factory"
    assert dev.active_model.image.name == "factory"
    outcomes = [r.outcome for r in api.history()]
    assert outcomes == ["rolled-back", "confirmed", "ok"]


def test_trial_reverts_by_itself_unless_confirmed(mosquitto_url, virtual_fleet, model_image_v3):
    fleet = virtual_fleet(mosquitto_url, 1)
    dev = fleet.device("sim-001")
    events: queue.Queue[Event] = queue.Queue()
    conn = MqttConnection(mosquitto_url)
    conn.connect()
    try:
        def on_reply(_topic, payload):
            msg = decode(payload).msg
            if isinstance(msg, Event):
                events.put(msg)

        conn.subscribe(topics.device_topic(dev.site, dev.device_id, topics.REPLY), on_reply)
        conn.wait_subscribed(REVERT_WAIT_S)  # the TRIAL_REVERTED event must not beat the subscription
        (r,) = api.deploy(model_image_v3, "sim-001", via="mqtt", connection=conn, trial=True,
                          trial_timeout_s=TRIAL_S)
        # not `dev.trial` here: a slow machine may take longer than TRIAL_S to get here, and the
        # TRIAL_REVERTED event below proves the model was on trial
        assert r.ok and r.trial
        deadline = time.monotonic() + REVERT_WAIT_S
        while time.monotonic() < deadline:
            ev = events.get(timeout=max(0.01, deadline - time.monotonic()))
            if ev.code == EventCode.TRIAL_REVERTED:
                break
        else:
            raise AssertionError("no TRIAL_REVERTED event")
    finally:
        conn.close()
    assert not dev.trial and dev.active_model.image.name == "factory"
    res = api.confirm("sim-001", broker=mosquitto_url)
    assert not res.ok and res.error_code == ErrorCode.NOT_TRIAL and "no model on trial" in res.error_message


def test_too_large_is_refused_before_a_byte_is_sent(mosquitto_url, virtual_fleet, model_image_v3, model_factory):
    fleet = virtual_fleet(mosquitto_url, 1, profiles=["stm32f446"])
    big = model_factory.oversized(model_image_v3, get_profile("stm32f446"))
    (r,) = api.deploy(big, "sim-001", via="mqtt", broker=mosquitto_url)
    assert r.outcome == "refused" and r.error_code == ErrorCode.TOO_LARGE
    assert "free slot" in r.error_message and "sim-001" in r.error_message and r.wire_bytes == 0
    assert fleet.device("sim-001")._transfer is None  # no XFER_BEGIN reached it
    (rec,) = api.history()
    assert rec.outcome == "refused" and rec.error_code == ErrorCode.TOO_LARGE


def test_model_failing_its_self_test_keeps_the_old_one(mosquitto_url, virtual_fleet, model_image_v3, model_factory):
    fleet = virtual_fleet(mosquitto_url, 1)
    (r,) = api.deploy(model_factory.selftest_wrong(model_image_v3), "sim-001", via="mqtt", broker=mosquitto_url)
    assert r.outcome == "failed" and r.error_code == ErrorCode.SELFTEST_FAILED
    assert "self-test" in r.error_message and "sim-001" in r.error_message
    assert fleet.device("sim-001").active_model.image.name == "factory"
    assert api.history()[0].error_code == ErrorCode.SELFTEST_FAILED


def test_two_operators_at_once_one_is_told_busy(mosquitto_url, virtual_fleet, model_image_v3, model_factory):
    fleet = virtual_fleet(mosquitto_url, 1)
    dev = fleet.device("sim-001")
    conn = MqttConnection(mosquitto_url)
    conn.connect()
    try:
        # operator 1 has sent every chunk and is about to commit
        first = PushTransfer(links.mqtt_channel(conn, dev.site, dev.device_id), model_image_v3,
                             device_id="sim-001", max_chunk=dev.profile.max_chunk)
        first._transfer()
        # operator 2, another model, meanwhile
        (second,) = api.deploy(model_factory.with_version(model_image_v3, 9), "sim-001", via="mqtt",
                               broker=mosquitto_url)
        assert second.outcome == "failed" and second.error_code == ErrorCode.BUSY
        assert "sim-001" in second.error_message and "another transfer" in second.error_message
        assert first._commit(CommitMode.ACTIVATE, 0).model_version == 3  # operator 1 is unaffected
    finally:
        conn.close()
    assert dev.active_model.sha256 == sha256(model_image_v3)


def test_offline_device_and_bad_references_get_clear_errors(mosquitto_url, virtual_fleet, tmp_path):
    fleet = virtual_fleet(mosquitto_url, 1)
    fleet.mqtt_adapter("sim-001").kill()  # the broker announces it OFFLINE (last will)
    (r,) = api.deploy(load_factory_image(), "sim-001", via="mqtt", broker=mosquitto_url)
    # the broker may not have announced the will yet: then GET_INFO goes unanswered
    assert r.outcome == "failed" and "sim-001" in r.error_message
    assert "not online" in r.error_message or "did not answer" in r.error_message
    junk = tmp_path / "junk.tmlm"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a deployable model image"):
        api.deploy(junk, "sim-001", via="mqtt", broker=mosquitto_url)
    with pytest.raises(ModelError, match="no model 'no-such-thing@3' in the registry"):
        api.deploy("no-such-thing@3", "sim-001", via="mqtt", broker=mosquitto_url)


def test_deploy_a_registry_reference(mosquitto_url, virtual_fleet, model_image_v3):
    fleet = virtual_fleet(mosquitto_url, 1)
    mv, registered = register_image(model_image_v3)
    (r,) = api.deploy("pump-ae@latest", ["sim-001"], via="mqtt", broker=mosquitto_url)
    assert r.ok and r.model_name == "pump-ae" and r.model_version == mv.version
    assert fleet.device("sim-001").active_model.sha256 == sha256(registered)


def test_broker_vanishing_mid_push_resumes_and_completes(mosquitto_factory, virtual_fleet, model_image_v3):
    """Mosquitto is killed after the first chunk is acknowledged and comes back on the same port a
    moment later: both ends reconnect, the host re-synchronises from the device's bitmap, and the
    deployment completes with the new image; nothing half-written is ever activated."""
    broker = mosquitto_factory()
    fleet = virtual_fleet(broker.url, 1, profiles=["stm32f446"])  # 1 KB chunks: several in the image
    dev = fleet.device("sim-001")
    old = dev.active_model.sha256
    restarted = threading.Event()

    def progress(_device: str, done: int, total: int) -> None:
        if 0 < done < total and not restarted.is_set():
            restarted.set()
            broker.kill()
            threading.Timer(1.0, broker.restart).start()

    (result,) = api.deploy(model_image_v3, ["sim-001"], via="mqtt", broker=broker.url, pull=False,
                           progress=progress)
    assert restarted.is_set(), "the broker was never killed: the test did not test anything"
    assert result.ok, result.error_message
    assert dev.active_model.sha256 == sha256(model_image_v3) != old
    # the transfer really spanned the outage: the broker was away for 1 s before it came back
    # (a lower bound, whatever the machine's speed); paho re-sent the queued QoS 1 chunks
    assert result.host_deploy_s >= 1.0, result.host_deploy_s


def test_broker_restart_mid_rollout_loses_the_retained_chunks_and_the_rollout_still_completes(
        mosquitto_factory, virtual_fleet, model_image_v3, monkeypatch):
    """A broker without persistence comes back empty: the retained model chunks are gone. The
    rollout notices devices making no progress and publishes the chunks again."""
    from app.deploy.rollout import Rollout

    broker = mosquitto_factory()
    fleet = virtual_fleet(broker.url, 2, profiles=["stm32f446"])
    ids = [d.device_id for d in fleet.devices]
    publish = Rollout._publish_chunks
    rounds: list[int] = []

    def publish_then_lose_them(self, sites):
        publish(self, sites)
        rounds.append(len(sites))
        if len(rounds) == 1:  # the first copy: the broker restarts before any device fetched it
            broker.restart()

    monkeypatch.setattr(Rollout, "_publish_chunks", publish_then_lose_them)
    results = api.deploy(model_image_v3, ids, via="mqtt", broker=broker.url, bench_count=3)
    assert [r.outcome for r in results] == ["ok", "ok"], [r.error_message for r in results]
    assert len(rounds) >= 2, "the chunks were never published again"
    assert any("published again" in n for r in results for n in r.notes)
    for d in fleet.devices:
        assert d.active_model.sha256 == sha256(model_image_v3)
