"""`tinymlops rollback --device A --device B` stopped at the first device it could
not reach and printed only that error, so the operator never saw that A had been rolled back."""

from __future__ import annotations

import json

from app.cli.main import main


def test_rollback_of_several_devices_reports_each_one(mosquitto_url, virtual_fleet, model_image_v3, tmp_path,
                                                      monkeypatch, capsys):
    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path / "data"))
    virtual_fleet(mosquitto_url, 1)
    image = tmp_path / "v3.tmlm"
    image.write_bytes(model_image_v3)
    assert main(["deploy", str(image), "--device", "sim-001", "--broker", mosquitto_url]) == 0
    capsys.readouterr()
    code = main(["rollback", "--device", "sim-404", "--device", "sim-001", "--broker", mosquitto_url, "--json"])
    report = {r["device"]: r for r in json.loads(capsys.readouterr().out)}
    assert code == 1
    assert not report["sim-404"]["ok"] and "sim-404" in report["sim-404"]["error_message"]
    assert report["sim-001"]["ok"] and report["sim-001"]["model_name"] == "factory"


def test_ctrl_c_during_a_deploy_cancels_it_on_the_device_and_records_it(virtual_fleet, model_image_v3, tmp_path):
    """Ctrl-C must abort the transfer on the device and leave a "cancelled" row. On Python < 3.13 a
    Thread.join interrupted by Ctrl-C returns at once afterwards (CPython gh-90882), so the command
    exited while its worker was still sending: no XFER_ABORT, no history row."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from app.deploy.history import DeploymentHistory
    from app.protocol.codes import DeviceState

    baud = 38400  # slow enough that the transfer is still running when Ctrl-C comes
    fleet = virtual_fleet(None, 1, serial=True, baud=baud)
    dev = fleet.device("sim-001")
    image = tmp_path / "v3.tmlm"
    image.write_bytes(model_image_v3)
    env = {**os.environ, "TINYMLOPS_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.Popen([sys.executable, "-m", "app", "deploy", str(image), "--via", "serial", "--port",
                             fleet.serial_ports["sim-001"], "--baud", str(baud)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + WAIT_S
    while dev.hello().state != DeviceState.UPDATING and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert dev.hello().state == DeviceState.UPDATING, proc.communicate()
    proc.send_signal(signal.SIGINT)  # the operator presses Ctrl-C mid-transfer
    _, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 130, err
    (row,) = DeploymentHistory(tmp_path / "data" / "tinymlops.sqlite3").list()
    assert row.outcome == "cancelled"
    while dev.hello().state == DeviceState.UPDATING and time.monotonic() < deadline:
        time.sleep(0.01)  # the XFER_ABORT queued behind the chunks reaches the device at line rate
    assert dev.hello().state != DeviceState.UPDATING  # aborted: a new deployment is not told BUSY
    assert dev.active_model.image.name == "factory"


# Upper bound for a subprocess to start, transfer and stop (never reached when things work).
WAIT_S = 60.0
