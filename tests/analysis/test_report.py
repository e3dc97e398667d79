"""The maintenance-round report from real stored datasets and machine descriptions."""

import time

import pytest

from app.analysis import report
from app.analysis.bearings import CATALOGUE
from app.analysis.machines import MachineStore
from app.analysis.simulated import record
from app.cli.main import main
from app.domain.errors import DataError
from app.ml.datasets import DatasetStore
from app.protocol.codes import FaultMask

DAY = 86400.0


@pytest.fixture
def plant(tmp_path, monkeypatch):
    """plant-a: a healthy pump, one with an outer-race defect, one imbalanced, one without bearing
    data; plant-b: one pump. Each device's machine described except the one without bearing."""
    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path))
    machines = [("sim-001", "plant-a/line-1/pump-1", 0, 0.0), ("sim-002", "plant-a/line-1/pump-2",
                FaultMask.BEARING_OUTER, 0.5), ("sim-003", "plant-a/line-2/fan-1", FaultMask.IMBALANCE, 0.8),
                ("sim-004", "plant-a/line-2/fan-2", 0, 0.0), ("sim-005", "plant-b/line-1/pump-1", 0, 0.0)]
    with DatasetStore() as datasets, MachineStore() as store:
        for i, (device, location, mask, severity) in enumerate(machines):
            rec = record(30 + i, mask, severity, 5.0, shaft_hz=24.0 + i)
            datasets.add(rec.samples, rec.sample_rate, "normal", source=f"device:{device}",
                         meta={"device": device, "location": location, "shaft_hz": 24.0 + i})
            if device != "sim-004":
                store.update(device, shaft_hz=24.0 + i, bearing=CATALOGUE["6205"], iso_group=2,
                             foundation="flexible")
    return tmp_path


def test_collect_analyses_every_machine_of_the_site(plant):
    entries = {e.device_id: e for e in report.collect("plant-a", 7 * DAY)}
    assert sorted(entries) == ["sim-001", "sim-002", "sim-003", "sim-004"]
    assert entries["sim-001"].analysis.fault == "healthy" and not entries["sim-001"].alarm
    assert entries["sim-002"].analysis.fault == "outer_race" and entries["sim-002"].alarm
    assert entries["sim-003"].analysis.fault == "imbalance" and entries["sim-003"].analysis.zone.zone in "CD"
    assert entries["sim-004"].analysis is None and "no bearing geometry" in entries["sim-004"].problem
    assert len(entries["sim-001"].trend) == 1


def test_period_leaves_out_old_recordings(plant):
    assert report.collect("plant-a", 7 * DAY, now=time.time() + 30 * DAY) == []


def test_html_report_holds_zones_alarms_and_plots(plant):
    entries = report.collect("plant-a", 7 * DAY)
    html = report.render_html(entries, "plant-a", "7d")
    assert "Maintenance round: plant-a" in html
    assert html.count("<h3>") == 2  # the two alarms
    assert "outer_race" in html and "imbalance" in html and "BPFO" in html
    assert html.count("<svg") == 4  # order and envelope spectrum per alarm
    assert "Not analysed" in html and "sim-004" in html


def test_cli_report_writes_html_and_pdf(plant, capsys):
    out = plant / "round.html"
    assert main(["report", "--site", "plant-a", "--since", "7d", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ALARM sim-002" in text and "sim-005" not in text
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    pytest.importorskip("matplotlib")
    pdf = plant / "round.pdf"
    assert main(["report", "--site", "plant-a", "--out", str(pdf)]) == 0
    assert pdf.read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize("text", ["7", "7x", "-1d", "d"])
def test_since_must_have_a_unit(text):
    with pytest.raises(DataError, match="number and a unit"):
        report.parse_since(text)


def test_report_refuses_unknown_format(plant, capsys):
    assert main(["report", "--out", str(plant / "round.docx")]) == 2
    assert ".html or .pdf" in capsys.readouterr().err


def test_live_round_streams_every_online_device_of_the_site(embedded_broker_url, virtual_fleet, data_dir_only,
                                                            capsys):
    from app.fleet.fleet import device_plan

    fleet = virtual_fleet(embedded_broker_url, 4, seed=3)  # sim-004 boots with an outer-race defect
    site = device_plan(3)["location"].split("/")[0]
    on_site = [device_plan(i) for i in range(4) if device_plan(i)["location"].startswith(site + "/")]
    with MachineStore() as store:
        for plan in on_site:
            store.update(plan["device_id"], shaft_hz=plan["shaft_hz"], bearing=CATALOGUE["6205"], iso_group=2,
                         foundation="rigid")
    out = data_dir_only / "live.html"
    assert main(["report", "--site", site, "--live", "3", "--broker", embedded_broker_url, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for plan in on_site:
        assert plan["device_id"] in text
    (line,) = [x for x in text.splitlines() if " sim-004 " in x]
    assert line.startswith("ALARM") and line.endswith("outer_race"), line
    html = out.read_text(encoding="utf-8")
    assert "live stream" in html
    assert fleet.device("sim-004").machine.fault_mask  # the fault the round found was the simulated one


def test_live_round_refuses_too_short_a_stream(data_dir_only, capsys):
    assert main(["report", "--live", "0.5", "--broker", "mqtt://127.0.0.1:1"]) == 2
    assert "too short" in capsys.readouterr().err


@pytest.fixture
def data_dir_only(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path))
    return tmp_path
