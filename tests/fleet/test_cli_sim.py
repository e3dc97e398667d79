"""`tinymlops sim` and `tinymlops sim fault` as a user runs them."""

import os
import signal
import subprocess
import sys
import time

from app.cli.main import main
from app.protocol.codes import FaultMask

STARTUP_S = 60.0
# Ctrl+C stops the fleet, the embedded broker and the ptys; a loaded CI machine gets this long.
STOP_S = 60.0


def test_sim_fault_command_switches_a_running_device(embedded_broker_url, virtual_fleet, capsys):
    fleet = virtual_fleet(embedded_broker_url, 2, seed=5)
    rc = main(["sim", "fault", "--device", "sim-002", "--mask", "imbalance|looseness", "--severity", "0.6",
               "--broker", embedded_broker_url])
    assert rc == 0
    machine = fleet.device("sim-002").machine
    assert machine.fault_mask == FaultMask.IMBALANCE | FaultMask.LOOSENESS
    assert abs(machine.severity - 0.6) < 1e-6
    assert main(["sim", "fault", "--device", "sim-404", "--mask", "1", "--broker", embedded_broker_url]) == 2
    assert "sim-404" in capsys.readouterr().err


def test_sim_starts_embedded_broker_prints_url_and_ptys():
    proc = subprocess.Popen([sys.executable, "-m", "app", "sim", "--devices", "2", "--serial",
                             "--fault", "sim-001=bearing_outer:0.9"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline and not any("sim-001" in x and "ALARM" in x for x in lines):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        text = "".join(lines)
        assert "broker: mqtt://127.0.0.1:" in text
        assert "serial: sim-001 /dev/pts/" in text and "serial: sim-002 /dev/pts/" in text
        assert any(x.startswith("sim-002") and "plant-b/line-1" in x and " ok" in x for x in lines)
    finally:
        proc.send_signal(signal.SIGINT)
        try:  # communicate, not wait: a sim blocked on a full stdout/stderr pipe never ends
            _out, err = proc.communicate(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            _out, err = proc.communicate()
    assert proc.returncode == 0, err


def test_sim_rejects_unknown_fault_device(capsys):
    assert main(["sim", "--devices", "1", "--broker", "mqtt://127.0.0.1:1", "--fault", "sim-009=1"]) == 2
    assert "sim-009" in capsys.readouterr().err
