"""`tinymlops smoke-test` from the source tree: the same check packaging/smoke_test.py runs against the
frozen bundle, so a failure here is an application bug, not a packaging one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from app.domain.errors import LinkError
from app.services import smoke
from app.services.fleet_monitor import FleetMonitor
from app.transport.broker import EmbeddedBroker
from app.transport.mqtt_link import MqttConnection

ROOT = Path(__file__).resolve().parents[2]
# Cold TensorFlow import + a few epochs + int8 conversion + TFLM arena search on a loaded 2-core box.
SMOKE_PROCESS_TIMEOUT_S = 240


@pytest.mark.slow
def test_smoke_test_command_reports_devices_and_a_converted_model(tmp_path):
    env = dict(os.environ, TINYMLOPS_DATA_DIR=str(tmp_path), QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, "-m", "app", "smoke-test", "--devices", "2"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=SMOKE_PROCESS_TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"] is True and result["error"] == ""
    assert result["devices"] == ["sim-001", "sim-002"]
    assert result["frozen"] is False
    assert result["tensorflow"]
    model = result["model"]
    assert model["ops"] and model["arena"] > 0 and model["tflite_size"] > 0
    assert model["image_size"] > model["tflite_size"]  # the TMLM image wraps the flatbuffer
    assert {"broker", "devices", "convert", "total"} <= set(result["seconds"])


def test_waiting_for_devices_that_never_come_is_a_clear_link_error():
    # a broker of its own: the session's shared brokers hold other tests' retained device statuses
    with EmbeddedBroker() as broker:
        connection = MqttConnection(broker.url, client_id="smoke-test-empty")
        connection.connect()
        monitor = FleetMonitor(connection)
        try:
            with pytest.raises(LinkError, match=r"only 0 of 2 virtual devices appeared"):
                smoke.wait_for_devices(monitor, 2, timeout=0.5)
        finally:
            monitor.close()
            connection.close()


def test_a_failed_step_is_reported_in_the_result_not_raised(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path))
    # The device step is stopped by a cancel given before it starts: it fails however fast the machine
    # (a zero timeout did not: a fast box sees the HELLO first). The check must report it and shut down.
    cancel = threading.Event()
    cancel.set()
    result = smoke.run(1, convert=False, cancel=cancel)
    assert result.ok is False
    assert result.error.startswith("Cancelled")
    assert result.devices == [] and "devices" not in result.seconds
    assert "total" in result.seconds


def test_smoke_test_rejects_a_nonsense_device_count(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "app", "smoke-test", "--devices", "0"], cwd=ROOT,
                          env=dict(os.environ, TINYMLOPS_DATA_DIR=str(tmp_path)),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "--devices must be at least 1" in proc.stderr
