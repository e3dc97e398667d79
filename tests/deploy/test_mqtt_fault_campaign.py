"""Seeded randomized fault campaign over MQTT (issue 11), the counterpart of the serial path's lossy
transfers (tests/deploy/test_transfer_faults.py).

Each run deploys (pull rollout to 2-3 devices, or a push to one) through the real API while the
chaos thread (tests/deploy/mqtt_chaos.py) cuts, takes down or stalls the operator's and the devices'
links to Mosquitto, restarts Mosquitto or reboots a device, and sometimes a second operator deploys
another image to one of the devices at the same time. Every device outcome is counted as ok / clear
error / hung / no valid model / unexpected model; the last three must be zero. The table is printed
and logged.

    TINYMLOPS_CAMPAIGN_RUNS=200 TINYMLOPS_CAMPAIGN_SEED=7 pytest tests/deploy/test_mqtt_fault_campaign.py

The default run is sized for CI (about a minute on a loaded 2-core machine).
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time

import pytest

from app.deploy import api
from app.deploy.history import DeploymentHistory
from app.domain.errors import TinyMLOpsError
from app.domain.paths import DATA_DIR_ENV
from app.protocol.codes import DeviceState
from app.protocol.image import sha256
from app.transport.mqtt_link import MqttConnection
from tests.deploy.mqtt_chaos import Campaign, Chaos
from tests.deploy.tcp_proxy import TcpProxy
from tests.transport.helpers import wait_until

log = logging.getLogger(__name__)

RUNS_ENV = "TINYMLOPS_CAMPAIGN_RUNS"
SEED_ENV = "TINYMLOPS_CAMPAIGN_SEED"
# Runs in the default (CI) campaign; a longer one is asked for through RUNS_ENV.
DEFAULT_RUNS = 10
RUNS = int(os.environ.get(RUNS_ENV) or DEFAULT_RUNS)
FLEET_SIZE = 3
PROFILE = ["stm32l4r5"]
# A deployment that has not returned after this is "hung": the worst fault sequence is a few
# outages of MAX_OUTAGE_S plus a rollout's own bounded waits (LINK_RIDE_OUT_S, PULL_QUIET_S).
RUN_DEADLINE_S = 240.0
# Devices reconnect with back-off (netloop RECONNECT_MAX_S = 15 s) after an outage or restart.
HEAL_S = 60.0
# A device whose abort was lost while it was itself offline frees its slot after XFER_STALE_S (30 s);
# the campaign waits this long for devices to be idle before the next run, then notes it.
IDLE_S = 10.0
# Error messages are tallied by their first characters (ids and numbers blanked) in the table.
ERROR_KEY_CHARS = 90
# Probability that a second operator deploys to one of the devices during a run.
SECOND_OPERATOR_P = 0.3


def _deploy(box: dict, key: str, image: bytes, devices: list[str], conn, pull: bool, hist) -> None:
    try:
        box[key] = api.deploy(image, devices, via="mqtt", connection=conn, pull=pull, history=hist)
    except Exception as exc:  # an exception is an outcome too: it must be a clear TinyMLOpsError
        box[key + "-error"] = exc


def _classify(result: api.DeploymentResult, dev, before: bytes, allowed: set[bytes], image_sha: bytes,
              rival_sha: bytes | None, campaign: Campaign) -> str:
    """`rival_sha`: the image the other operator also deployed successfully to this device (either
    may have come second), else None."""
    active = dev.active_model
    if active is None or active.sha256 not in allowed:
        return "no valid model" if active is None else "unexpected model"
    if result.ok:
        return "ok" if active.sha256 in {image_sha, rival_sha} else "unexpected model"
    if not result.error_message:
        campaign.notes["failed without a message"] += 1
        return "unexpected model"
    if active.sha256 == image_sha and before != image_sha:
        campaign.notes["reported failed, new model active"] += 1
    campaign.errors[re.sub(r"\b(sim-\d+|\d+(\.\d+)?)\b", "#", result.error_message)[:ERROR_KEY_CHARS]] += 1
    return "clear error"


# pytest-timeout's default (300 s) is for one test; the campaign's budget grows with its runs.
@pytest.mark.timeout(max(300, RUNS * 30 + RUN_DEADLINE_S + HEAL_S))
def test_mqtt_fault_campaign(mosquitto_factory, virtual_fleet, model_image, model_image_v3, tmp_path, monkeypatch,
                             caplog, capsys, record_property) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "data"))
    caplog.set_level(logging.INFO)
    runs = RUNS
    seed = int(os.environ.get(SEED_ENV) or 11)
    campaign = Campaign()
    hist = DeploymentHistory(tmp_path / "history.sqlite3")
    broker = mosquitto_factory()
    started = time.monotonic()
    with TcpProxy(broker.port) as dev_proxy, TcpProxy(broker.port) as op_proxy:
        fleet = virtual_fleet(dev_proxy.url, FLEET_SIZE, profiles=PROFILE)
        devices = {d.device_id: d for d in fleet.devices}
        factory_sha = fleet.devices[0].active_model.sha256
        images = [model_image, model_image_v3]
        operator = MqttConnection(op_proxy.url, client_id="campaign-operator")
        operator.connect()
        second = MqttConnection(broker.url, client_id="campaign-second-operator")
        second.connect()
        try:
            for run in range(runs):
                rng = random.Random(seed * 100_003 + run)
                wait_until(lambda: fleet.connected_count == FLEET_SIZE, HEAL_S, "every device back on the broker")
                assert operator.wait_connected(HEAL_S) and second.wait_connected(HEAL_S)
                try:
                    wait_until(lambda: all(d.hello().state != DeviceState.UPDATING for d in fleet.devices), IDLE_S,
                               "devices idle")
                except AssertionError:
                    campaign.notes["device still busy at the next run"] += 1
                before = {i: d.active_model.sha256 for i, d in devices.items()}
                pull = rng.random() < 0.7
                targets = rng.sample(sorted(devices), rng.randint(2, FLEET_SIZE) if pull else 1)
                image = rng.choice(images)
                other = images[1 - images.index(image)]
                box: dict = {}
                workers = [threading.Thread(target=_deploy, args=(box, "main", image, targets, operator, pull, hist),
                                            daemon=True)]
                rival = None
                if rng.random() < SECOND_OPERATOR_P:
                    rival = rng.choice(sorted(devices))
                    workers.append(threading.Thread(target=_deploy, args=(box, "second", other, [rival], second,
                                                                          False, hist), daemon=True))
                    campaign.notes["second operator"] += 1
                chaos = Chaos(rng, broker, op_proxy, dev_proxy, [(devices[t].site, t) for t in targets],
                              campaign).start()
                for w in workers:
                    w.start()
                deadline = time.monotonic() + RUN_DEADLINE_S
                for w in workers:
                    w.join(max(0.0, deadline - time.monotonic()))
                chaos.finish(HEAL_S)
                campaign.runs += 1
                log.info("run %d: %s %s -> %s, faults %s%s", run, "pull" if pull else "push",
                         sha256(image).hex()[:8], targets, chaos.injected, f", second operator on {rival}" if rival
                         else "")
                if any(w.is_alive() for w in workers):
                    campaign.outcomes["hung"] += len(targets)
                    break  # the fleet's state is unknown now: stop here, the table says why
                allowed = {factory_sha, sha256(model_image), sha256(model_image_v3)}
                succeeded = {(key, r.device) for key in ("main", "second") for r in box.get(key, []) if r.ok}
                for key, image_sha in (("main", sha256(image)), ("second", sha256(other))):
                    rival_key, rival_sha = ("second", sha256(other)) if key == "main" else ("main", sha256(image))
                    if key + "-error" in box:
                        exc = box[key + "-error"]
                        log.info("run %d: %s operator raised %s: %s", run, key, type(exc).__name__, exc)
                        names = targets if key == "main" else [rival]
                        clear = isinstance(exc, TinyMLOpsError) and str(exc)
                        campaign.outcomes["clear error" if clear else "unexpected model"] += len(names)
                        continue
                    for result in box.get(key, []):
                        outcome = _classify(result, devices[result.device], before[result.device], allowed,
                                            image_sha, rival_sha if (rival_key, result.device) in succeeded else None,
                                            campaign)
                        campaign.outcomes[outcome] += 1
                        if outcome != "ok":
                            log.info("run %d: %s %s: %s", run, result.device, outcome, result.error_message)
        finally:
            operator.close()
            second.close()
    tracebacks = [r for r in caplog.records if r.exc_info and r.name.startswith("app.")]
    campaign.notes["tracebacks in the app's log"] = len(tracebacks)
    table = campaign.table() + f"\n  seed {seed}, {time.monotonic() - started:.0f} s"
    log.warning("%s", table)
    record_property("mqtt_fault_campaign", table)
    with capsys.disabled():
        print("\n" + table)
    assert campaign.outcomes["hung"] == 0, table
    assert campaign.outcomes["no valid model"] == 0, table
    assert campaign.outcomes["unexpected model"] == 0, table
    assert not tracebacks, [r.getMessage() for r in tracebacks]
    assert campaign.runs == runs
