"""Machine descriptions in the SQLite store, and the `machine` and `data analyze` commands."""

import json

import numpy as np
import pytest

from app.analysis.bearings import CATALOGUE
from app.analysis.machines import Machine, MachineStore
from app.analysis.simulated import record
from app.cli.main import main
from app.domain.errors import DataError
from app.protocol.codes import FaultMask


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path))
    return tmp_path


def test_store_round_trip_and_partial_update(tmp_path):
    db = tmp_path / "t.sqlite3"
    with MachineStore(db) as store:
        store.update("sim-004", shaft_hz=24.7, bearing=CATALOGUE["6205"], iso_group=2, foundation="rigid")
        store.update("sim-004", name="pump P-101")  # only the name changes
    with MachineStore(db) as store:  # a fresh connection: it was committed
        m = store.get("sim-004")
    assert (m.name, m.shaft_hz, m.bearing, m.machine_class) == ("pump P-101", 24.7, CATALOGUE["6205"],
                                                                 "20816-3/2/rigid")
    assert m.updated > 0


def test_store_rejects_bad_descriptions_and_keeps_the_old_one(tmp_path):
    with MachineStore(tmp_path / "t.sqlite3") as store:
        store.update("sim-001", shaft_hz=25.0)
        with pytest.raises(DataError, match="is it in rpm"):
            store.update("sim-001", shaft_hz=1500.0)
        with pytest.raises(DataError, match="needs a foundation"):
            store.update("sim-001", iso_group=2)
        with pytest.raises(DataError, match="no machine described"):
            store.get("sim-404")
        assert store.get("sim-001").shaft_hz == 25.0
        assert [m.device_id for m in store.list()] == ["sim-001"]
        assert store.remove("sim-001") and not store.remove("sim-001")


def test_machine_requires_a_device_id():
    with pytest.raises(DataError, match="id of the device"):
        Machine(" ")


def test_machine_cli_set_show_list(data_dir, capsys):
    assert main(["machine", "set", "sim-004", "--shaft-hz", "24.7", "--bearing", "n=9,d=7.94,D=39.04,angle=0",
                 "--iso-group", "2", "--foundation", "rigid"]) == 0
    assert "BPFO 88.54 Hz" in capsys.readouterr().out
    assert main(["machine", "set", "sim-005", "--rpm", "1470", "--bearing", "6206"]) == 0
    capsys.readouterr()
    assert main(["machine", "show", "sim-005", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["shaft_hz"] == pytest.approx(24.5) and shown["bearing"]["name"] == "6206"
    assert shown["machine_class"] == "10816-1/I"
    assert main(["machine", "list"]) == 0
    out = capsys.readouterr().out
    assert "sim-004" in out and "20816-3/2/rigid" in out and "sim-005" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["machine", "set", "sim-1", "--shaft-hz", "1480"], "is it in rpm"),
    (["machine", "set", "sim-1", "--bearing", "n=9,d=8"], "lacks D"),
    (["machine", "set", "sim-1", "--iso-group", "2"], "needs a foundation"),
    (["machine", "show", "sim-9"], "no machine described"),
    (["machine", "set", "sim-1"], "nothing to set"),
    (["machine", "set", "sim-1", "--shaft-hz", "25", "--rpm", "1500"], "give the shaft speed once"),
    (["machine", "remove", "sim-9"], "no machine described"),
])
def test_machine_cli_bad_input_is_a_clear_error(data_dir, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_data_analyze_uses_the_recording_devices_machine(data_dir, capsys):
    rec = record(21, FaultMask.BEARING_OUTER, 0.5, 6.0, shaft_hz=25.3)
    path = data_dir / "rec.npy"
    np.save(path, rec.samples)
    assert main(["data", "import", str(path), "--rate", "3200", "--label", "fault"]) == 0
    dataset = capsys.readouterr().out.strip()
    # without a machine: no bearing geometry, said so
    assert main(["data", "analyze", dataset, "--shaft-hz", "25.3"]) == 2
    assert "no bearing geometry" in capsys.readouterr().err
    assert main(["machine", "set", "pump-7", "--shaft-hz", "25.3", "--bearing", "6205", "--iso-group", "2",
                 "--foundation", "flexible"]) == 0
    capsys.readouterr()
    assert main(["data", "analyze", dataset, "--machine", "pump-7", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["fault"] == "outer_race" and result["machine_class"] == "20816-3/2/flexible"
    assert abs(result["shaft_hz"] - rec.shaft_hz) <= result["resolution_hz"]
    assert main(["data", "analyze", dataset, "--machine", "pump-7"]) == 0
    text = capsys.readouterr().out
    assert "diagnosis         outer_race" in text and "ISO zone" in text


def test_data_analyze_file_needs_a_rate(data_dir, capsys):
    path = data_dir / "rec.npy"
    np.save(path, np.zeros((3200, 3), np.float32))
    assert main(["data", "analyze", str(path), "--shaft-hz", "25", "--bearing", "6205"]) == 2
    assert "--rate" in capsys.readouterr().err



def test_machines_export_and_import_with_the_fleet(data_dir, tmp_path, monkeypatch, capsys):
    """`machine export` on one laptop, `machine import` on another: every description arrives;
    a machine of another device already described there is kept."""
    assert main(["machine", "set", "sim-004", "--shaft-hz", "24.7", "--bearing", "6205", "--iso-group", "2",
                 "--foundation", "rigid", "--name", "pump P-101"]) == 0
    assert main(["machine", "set", "sim-005", "--rpm", "1470", "--bearing", "n=8,d=6.75,D=28.5"]) == 0
    exported = tmp_path / "machines.json"
    assert main(["machine", "export", str(exported)]) == 0
    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path / "other-laptop"))
    assert main(["machine", "set", "sim-009", "--shaft-hz", "50"]) == 0
    capsys.readouterr()
    assert main(["machine", "import", str(exported)]) == 0
    assert "imported 2 machine(s)" in capsys.readouterr().out
    with MachineStore() as store:
        got = {m.device_id: m for m in store.list()}
    assert sorted(got) == ["sim-004", "sim-005", "sim-009"]
    assert (got["sim-004"].name, got["sim-004"].bearing, got["sim-004"].machine_class) == (
        "pump P-101", CATALOGUE["6205"], "20816-3/2/rigid")
    assert got["sim-005"].shaft_hz == pytest.approx(24.5) and got["sim-005"].bearing.n_balls == 8


def _machines_file(path, *entries, **top):
    document = {"format": "tinymlops-machines", "version": 1, "machines": list(entries), **top}
    path.write_text(json.dumps(document), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "is not JSON"),
    ('{"machines": []}', "not a machines file"),
    ('{"format": "tinymlops-machines", "version": 9, "machines": []}', "version 9"),
    ([{"device_id": "sim-1", "shaft_hz": 25.0}, {"device_id": "sim-2", "shaft_hz": 1480.0}],
     "machine #2 (sim-2): shaft speed 1480.0 Hz"),
    ([{"device_id": "sim-1"}, {"device_id": "sim-1"}], "machine #2 (sim-1): described twice"),
    ([{"device_id": "sim-1", "bearing": {"n_balls": 9, "ball_diameter_mm": 50, "pitch_diameter_mm": 39}}],
     "must be positive and smaller than the pitch diameter"),
    ([{"device_id": "sim-1", "bearing": "6205"}], '"bearing" must be an object'),
    ([{"device_id": "sim-1", "speed": 3}], "unknown field(s) speed"),
    ([{"shaft_hz": 25}], 'machine #1: needs a "device_id"'),
    ([{"device_id": "sim-1", "iso_group": 2}], "needs a foundation"),
])
def test_a_bad_machines_file_is_a_clear_error_and_imports_nothing(data_dir, tmp_path, capsys, content, message):
    assert main(["machine", "set", "sim-1", "--shaft-hz", "10"]) == 0
    path = tmp_path / "bad.json"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        _machines_file(path, *content)
    capsys.readouterr()
    assert main(["machine", "import", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    with MachineStore() as store:  # all or nothing: the good first entry was not written either
        assert [(m.device_id, m.shaft_hz) for m in store.list()] == [("sim-1", 10.0)]


def test_import_of_a_missing_file_names_it(data_dir, tmp_path, capsys):
    assert main(["machine", "import", str(tmp_path / "nowhere.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
