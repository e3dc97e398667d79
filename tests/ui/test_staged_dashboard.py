"""The latency dashboard's "Staged rollouts" table: each stage's decision with its evidence (alarm
counts, Wilson interval, score quantiles) read from the real staged-rollout store in a worker. The
store is filled as app.deploy.staged fills it (DeviceObservation.evidence, pooled Rate); the
end-to-end rollouts themselves are tests/deploy/test_staged.py's."""

from __future__ import annotations

from PySide6.QtCore import Qt

from app.deploy import observe
from app.deploy.staged_store import CONFIRMED, PENDING, ROLLED_BACK, StagedStore
from app.ml.intervals import Rate
from app.ui.dashboard import DashboardPage
from tests.ui.conftest import JOB_TIMEOUT_S, wait_for

THRESHOLD = 2.0


def _evidence(per_device: dict[str, list[float]]) -> dict:
    seen = {}
    for device, scores in per_device.items():
        obs = observe.DeviceObservation(device, list(scores), sum(s > THRESHOLD for s in scores), THRESHOLD)
        seen[device] = {**obs.evidence(), "verdict": observe.judge(obs, 0.01) or "passes"}
    pooled = Rate(sum(o["alarms"]["count"] for o in seen.values()), sum(o["windows"] for o in seen.values()))
    return {"max_alarm_rate": 0.01, "pooled": pooled.to_dict(), "devices": seen}


def test_each_stage_decision_with_its_evidence(qtbot):
    store = StagedStore()
    rec = store.create("pump-1@3", "pump-1", 3, ["sim-001", "sim-002", "sim-003"],
                       [("1", ["sim-001"]), ("50%", ["sim-002"]), ("100%", ["sim-003"])], 60.0, 0.01, None)
    store.set_stage(rec.id, 0, CONFIRMED, evidence=_evidence({"sim-001": [0.5] * 60}),
                    reason="alarms 0/60: no device above the 1 % allowed")
    alarming = [3.0] * 20 + [0.5] * 40  # a third of the windows alarm
    store.set_stage(rec.id, 1, ROLLED_BACK, evidence=_evidence({"sim-002": alarming}),
                    reason="sim-002: alarms 20/60")
    page = DashboardPage()
    qtbot.addWidget(page)
    page.refresh()
    view = page.staged
    wait_for(qtbot, lambda: view.model.rowCount() == 3, JOB_TIMEOUT_S, "the stages in the table")
    model = view.model

    def cells(row: int) -> list[str]:
        return [model.index(row, c).data() for c in range(model.columnCount())]

    first, second, third = cells(0), cells(1), cells(2)
    assert first[:6] == [f"#{rec.id}", "pump-1@3", "1/3 (1)", "1", CONFIRMED, "0/60"]
    assert first[6].startswith("0.0 %-") and first[7] == "0.50 / 0.50 / 0.50" and first[8] != "-"
    assert second[4] == ROLLED_BACK and second[5] == "20/60" and second[9] == "sim-002: alarms 20/60"
    low, high = Rate(20, 60).interval
    assert second[6] == f"{100 * low:.1f} %-{100 * high:.1f} %"
    assert second[7].split(" / ")[2] == "3.00"  # p99 above the threshold
    tip = model.index(1, 0).data(Qt.ItemDataRole.ToolTipRole)  # each device's evidence
    assert "sim-002: 60 windows, alarms 20/60" in tip and "even the low end is above" in tip
    assert third[4] == PENDING and third[5:8] == ["-", "-", "-"]
    assert "1 recent, 3 stages" in view.title.text()
