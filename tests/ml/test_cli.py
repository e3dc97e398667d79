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
    code, out, _ = run(capsys, "model", "export", "pump-a@latest", "--out", str(tmp_path), "--header")
    assert [p.rsplit("/", 1)[1] for p in out] == ["pump-a-v1.tflite", "pump-a-v1.tmlm", "pump-a-v1.json",
                                                 "pump-a-v1.h"]


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
