"""The "done when" of the model pipeline from the command line: record normal data from the
virtual fleet over a real Mosquitto, train, check, list, export; plus the CLI's error paths."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.cli.main import main
from app.protocol.codes import FaultMask

from .conftest import recording


def run(capsys, *argv: str) -> tuple[int, list[str], str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err


def test_record_train_check_list_from_the_virtual_fleet(data_dir, mosquitto_url, virtual_fleet, capsys, tmp_path):
    fleet = virtual_fleet(mosquitto_url, 2)
    device = fleet.devices[0].device_id
    code, out, err = run(capsys, "data", "record", "--device", device, "--seconds", "15", "--label", "normal",
                         "--broker", mosquitto_url)
    assert code == 0, err
    normal_id = out[-1]
    assert normal_id.startswith("ds-")
    # a fault recording from the same machine, for the card's metrics
    fleet.device(device).machine.set_fault(FaultMask.BEARING_OUTER, 0.5)
    code, out, err = run(capsys, "data", "record", "--device", device, "--seconds", "3", "--label", "fault",
                         "--broker", mosquitto_url)
    assert code == 0, err
    fault_id = out[-1]
    code, out, _ = run(capsys, "data", "list", "--json")
    listed = {d["id"]: d for d in json.loads("\n".join(out))}
    assert listed[normal_id]["windows"] == 47 and listed[normal_id]["source"] == f"device:{device}"
    assert listed[normal_id]["meta"]["device"] == device and listed[fault_id]["label"] == "fault"

    code, out, err = run(capsys, "model", "train", "--data", normal_id, "--fault-data", fault_id,
                         "--name", "pump-a", "--epochs", "40")
    assert code == 0, err
    assert out[-1] == "pump-a@1"
    code, out, _ = run(capsys, "model", "list", "--json")
    (version,) = json.loads("\n".join(out))
    assert version["name"] == "pump-a" and version["fit"]["stm32f446"]["fits"]
    assert version["metrics"]["auc"] > 0.9 and version["dataset"] == normal_id
    code, out, _ = run(capsys, "model", "check", "pump-a@latest")
    assert code == 0 and any(line.startswith("stm32f446") and " yes " in line for line in out)
    code, out, _ = run(capsys, "model", "check", "pump-a@latest", "--json", "--recompute")
    assert json.loads("\n".join(out))["arena"] == version["arena"]
    code, out, _ = run(capsys, "model", "show", "pump-a@1")
    kept = next(line for line in out if line.strip().startswith("also kept"))
    assert "float32" in kept and "dynamic" in kept, out
    code, out, _ = run(capsys, "model", "export", "pump-a@latest", "--out", str(tmp_path), "--header")
    assert [p.rsplit("/", 1)[1] for p in out] == ["pump-a-v1.tflite", "pump-a-v1.tmlm", "pump-a-v1.float32.tflite",
                                                 "pump-a-v1.dynamic.tflite", "pump-a-v1.json", "pump-a-v1.h"]
    manifest = json.loads((tmp_path / "pump-a-v1.json").read_text())
    assert set(manifest["files"]) == {"tflite", "image", "float32", "dynamic"}
    assert manifest["files"]["float32"]["size"] == (tmp_path / "pump-a-v1.float32.tflite").stat().st_size


def test_record_unknown_device_is_clear(data_dir, mosquitto_url, capsys):
    code, _, err = run(capsys, "data", "record", "--device", "nobody", "--seconds", "5", "--label", "normal",
                       "--broker", mosquitto_url)
    assert code == 2 and "device 'nobody' is not on" in err


def test_record_too_short_is_refused_before_connecting(data_dir, capsys):
    code, _, err = run(capsys, "data", "record", "--device", "x", "--seconds", "1", "--label", "normal",
                       "--broker", "mqtt://127.0.0.1:9")
    assert code == 2 and "a dataset needs at least" in err


def test_import_wrong_rate_and_bad_ref(data_dir, capsys, tmp_path):
    path = tmp_path / "r.npy"
    np.save(path, recording(1, 4.0))
    code, _, err = run(capsys, "data", "import", str(path), "--rate", "1000", "--label", "normal")
    assert code == 2 and "sampled at 1000 Hz" in err
    code, out, _ = run(capsys, "data", "list")
    assert "no datasets yet" in out[0]
    code, _, err = run(capsys, "model", "show", "nothing@latest")
    assert code == 2 and "no model 'nothing@latest'" in err


@pytest.mark.parametrize("ref", ["pump@1", "pump@latest"])
def test_check_require_refuses_a_model_that_does_not_fit(data_dir, capsys, trained, ref):
    import dataclasses

    from app.ml.registry import Registry

    card = dict(trained.card)
    card["fit"] = {k: dataclasses.asdict(v) if not isinstance(v, dict) else v for k, v in card["fit"].items()}
    with Registry() as reg:
        reg.add(name="pump", tflite=trained.tflite, card={**card, "arena": 40 * 1024}, image=trained.image)
    code, _, err = run(capsys, "model", "check", ref, "--require", "stm32f446")
    assert code == 2 and "does not fit stm32f446: tensor arena 40.0 KB exceeds the 32.0 KB RAM budget" in err
    code, _, err = run(capsys, "model", "check", ref, "--require", "stm32l4r5")
    assert code == 0


def test_record_over_serial_from_a_pty_device(data_dir, virtual_fleet, capsys):
    """`data record --via serial`: a virtual device on a real pty, reached through the serial
    channel the deploy command uses; the dataset holds what its machine produced."""
    fleet = virtual_fleet(None, 1, serial=True)
    device = fleet.devices[0].device_id
    port = fleet.serial_ports[device]
    code, out, err = run(capsys, "data", "record", "--via", "serial", "--port", port, "--seconds", "3",
                         "--label", "normal", "--device", device)
    assert code == 0, err
    ds_id = out[-1]
    assert ds_id.startswith("ds-") and f"from {device}" in err
    code, out, _ = run(capsys, "data", "list", "--json")
    (listed,) = json.loads("\n".join(out))
    assert listed["id"] == ds_id and listed["source"] == f"device:{device}" and listed["windows"] == 10
    meta = listed["meta"]
    assert (meta["transport"], meta["port"], meta["device"]) == ("serial", port, device)
    assert meta["shaft_hz"] == pytest.approx(fleet.device(device).machine.shaft_hz, rel=0.2)


def test_record_over_serial_checks_the_device_and_needs_a_port(data_dir, virtual_fleet, capsys):
    fleet = virtual_fleet(None, 1, serial=True)
    port = fleet.serial_ports[fleet.devices[0].device_id]
    code, _, err = run(capsys, "data", "record", "--via", "serial", "--port", port, "--seconds", "3",
                       "--label", "normal", "--device", "sim-999")
    assert code == 2 and f"{port} is device 'sim-001', not 'sim-999'" in err
    code, _, err = run(capsys, "data", "record", "--via", "serial", "--seconds", "3", "--label", "normal")
    assert code == 2 and "--via serial needs --port" in err
    code, _, err = run(capsys, "data", "record", "--via", "serial", "--port", "/dev/does-not-exist",
                       "--seconds", "3", "--label", "normal")
    assert code == 2 and "cannot open serial port /dev/does-not-exist" in err
    code, out, _ = run(capsys, "data", "list")
    assert "no datasets yet" in out[0]


def test_stream_line_rate_explains_slow_serial_recordings():
    """The raw 3.2 kHz stream does not fit the 115200-baud default of a real UART; 921600 carries it
    (the hint a failed serial recording at a low baud gives)."""
    from app.cli import data

    assert data.DEFAULT_BAUD < data.stream_baud() < 921600
