"""A 3-node RabbitMQ cluster on loopback (issue 18): the devices on one node, the operator on the
others. RabbitMQ keeps retained messages on the node that received them and sends them to exact
subscriptions only, so neither the devices' retained statuses nor the operator's retained chunks
reach the other side: presence comes from telemetry and GET_INFO, deployments push, and a forced
pull gets its chunks from the live re-publish.

Marked slow: three Erlang VMs boot in ~30-60 s on a loaded 2-core machine (one cluster per session).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.deploy import api
from app.protocol.image import sha256

ROOT = Path(__file__).resolve().parents[2]
# Devices on a loaded machine connect and say HELLO within this.
CONNECT_S = 60.0

pytestmark = pytest.mark.slow


def test_devices_and_operator_on_different_nodes(rabbitmq_cluster_urls, virtual_fleet, model_image,
                                                 model_image_v3, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path / "data"))
    device_node, list_node, deploy_node = rabbitmq_cluster_urls
    fleet = virtual_fleet(device_node, 3)
    for dev in fleet.devices:
        assert fleet.mqtt_adapter(dev.device_id).connected.wait(CONNECT_S)
    # no memory: the devices name themselves by telemetry (1 Hz), listened for 5 s on a loaded machine
    result = subprocess.run([sys.executable, "-m", "app", "fleet", "list", "--json", "--wait", "5",
                             "--broker", list_node],
                            capture_output=True, text=True, cwd=ROOT, timeout=120, env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    listed = {d["device_id"]: d for d in json.loads(result.stdout)["devices"]}
    for dev in fleet.devices:  # every device with its profile and model, from another node
        rec = listed[dev.device_id]
        assert (rec["state"], rec["profile"]) == ("online", dev.profile.key)
        assert rec["model_name"] and rec["model_version"] >= 1
    (alone,) = api.deploy(model_image_v3, "sim-001", via="mqtt", broker=deploy_node)
    assert alone.outcome == "ok", alone.error_message
    rest = api.deploy(model_image_v3, ["sim-002", "sim-003"], via="mqtt", broker=deploy_node)
    for r in rest:
        assert r.outcome == "ok", r.error_message
        assert r.transport == "mqtt-push"  # the probe found no retained delivery to wildcards
    for dev in fleet.devices:
        assert dev.active_model.sha256 == sha256(model_image_v3)
    # a forced pull across nodes: the retained chunks stay on the operator's node, the devices get
    # them from the stall detector's live re-publish
    pulled = api.deploy(model_image, ["sim-002", "sim-003"], via="mqtt", broker=deploy_node, pull=True)
    for r in pulled:
        assert (r.outcome, r.transport) == ("ok", "mqtt-pull"), r.error_message
    assert fleet.device("sim-003").active_model.sha256 == sha256(model_image)
