"""Deployment history: its own table in the registry's SQLite file, CSV and JSON export."""

from __future__ import annotations

import csv
import io
import json
import sqlite3

from app.deploy.history import DeploymentHistory, DeploymentRecord, to_csv, to_json


def _record(device: str, started: float, **kw) -> DeploymentRecord:
    base = dict(started=started, device=device, model_name="pump-ae", model_version=3, model_sha="ab" * 32,
                transport="serial", baud=921600, image_size=5000, wire_bytes=5100, host_deploy_s=0.06,
                device_deploy_us=55000, load_us=800, bench_n=100, inference_min_us=40, inference_median_us=45,
                inference_p95_us=60, inference_max_us=90, outcome="ok")
    base.update(kw)
    return DeploymentRecord(**base)


def test_records_round_trip_newest_first_and_leave_other_tables_alone(tmp_path):
    db = tmp_path / "tinymlops.sqlite3"
    with sqlite3.connect(db) as conn:  # the registry's table, already there
        conn.execute("CREATE TABLE models (name TEXT)")
        conn.execute("INSERT INTO models VALUES ('pump-ae')")
    hist = DeploymentHistory(db)
    hist.add(_record("sim-001", 100.0))
    hist.add(_record("sim-002", 200.0, outcome="failed", error_code=16, error_message="SELFTEST_FAILED",
                     host_deploy_s=None, load_us=None, trial=True, emulated=True))
    rows = DeploymentHistory(db).list()
    assert [r.device for r in rows] == ["sim-002", "sim-001"]
    assert rows[0].error_code == 16 and rows[0].trial is True and rows[0].emulated is True
    assert rows[0].load_us is None and rows[1].inference_p95_us == 60 and rows[1].baud == 921600
    assert [r.device for r in hist.list(device="sim-001")] == ["sim-001"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT name FROM models").fetchall() == [("pump-ae",)]


def test_export_csv_and_json(tmp_path):
    hist = DeploymentHistory(tmp_path / "db.sqlite3")
    hist.add(_record("sim-001", 100.0))
    hist.add(_record("sim-001", 101.0, outcome="failed", error_code=9, error_message="TOO_LARGE, image 2 MB"))
    records = hist.list()
    parsed = list(csv.DictReader(io.StringIO(to_csv(records))))
    assert len(parsed) == 2 and parsed[0]["error_message"] == "TOO_LARGE, image 2 MB"
    assert parsed[1]["inference_median_us"] == "45" and parsed[0]["host_deploy_s"] == "0.06"
    data = json.loads(to_json(records))
    assert data[0]["error_code"] == 9 and data[1]["outcome"] == "ok" and data[1]["model_sha"] == "ab" * 32


def test_a_deployment_result_becomes_a_row_with_every_figure(tmp_path):
    """The API's result and the history's row share one declaration of the figures: each one
    reaches the row (a figure added to DeploymentFigures cannot be forgotten in the copy)."""
    from dataclasses import fields

    from app.deploy import api
    from app.deploy.history import DeploymentFigures

    values = {}
    for i, f in enumerate(fields(DeploymentFigures), start=1):
        kind = str(f.type).split(" | ")[0]
        values[f.name] = {"str": f"{f.name}-{i}", "int": i, "float": i + 0.5, "bool": True}[kind]
    result = api.DeploymentResult(**values, resumed_chunks=2, retransmits=5, notes=["resynced"])
    hist = DeploymentHistory(tmp_path / "history.sqlite")
    api._record(hist, [result], started=1700.0, via="serial", broker=None, port="/dev/ttyUSB0", baud=115200)
    (row,) = hist.list()
    assert row.figures() == result.figures() == values
    assert (row.id, row.started, row.port, row.baud, row.broker) == (result.record_id, 1700.0, "/dev/ttyUSB0",
                                                                      115200, None)
