"""Models page, deploy wizard, rollback and latency dashboard, driven through the real windows
against the shared broker and virtual fleet; plus the GUI's responsiveness while streaming,
training/converting and deploying at once (measured and recorded, not asserted)."""

from __future__ import annotations

import statistics
import time

import numpy as np
from PySide6.QtCore import QTimer

from app.ui.deploy_wizard import PAGE_RUN
from tests.ui.conftest import FAULTY_DEVICE, FLEET_SIZE, JOB_TIMEOUT_S, wait_for, wait_for_deploy_run

# The probe timer's period: the event loop's delay is how late each tick fires.
PROBE_INTERVAL_MS = 10


def _import(window, qtbot, tmp_path, image: bytes, name: str = "pump-ae") -> str:
    path = tmp_path / f"{name}.tmlm"
    path.write_bytes(image)
    worker = window.models.import_file(str(path), name=name)
    assert worker is not None
    wait_for(qtbot, lambda: worker.done and window.models.current_version() is not None, JOB_TIMEOUT_S, "the import")
    assert worker.failed is None, worker.failed
    mv = window.models.current_version()
    assert mv.name == name and mv.deployable
    assert "Fit per hardware profile" in window.models.card.toHtml()
    return mv.ref


def _run_wizard(window, qtbot, targets: list[str], ref: str | None = None, file=None, serial_port: str | None = None,
                trial: bool = False):
    wizard = window.open_deploy_wizard(targets)
    qtbot.addWidget(wizard)
    if file is not None:
        wizard.version_page.set_file(file)
    else:
        assert wizard.version_page.select_ref(ref)
    wizard.next()
    assert wizard.targets_page.checked() == targets
    wizard.next()
    if serial_port:
        wizard.transport_page.serial.setChecked(True)
        wizard.transport_page.port.setEditText(serial_port)
    wizard.next()
    wizard.options_page.trial.setChecked(trial)
    wizard.next()
    assert wizard.currentId() == PAGE_RUN
    wait_for_deploy_run(qtbot, wizard)
    return wizard


def test_deploy_from_wizard_shows_latencies_then_rollback(window, qtbot, tmp_path, model_image):
    ref = _import(window, qtbot, tmp_path, model_image)
    target = "sim-002"
    before = window.fleet_model.record(target)
    wizard = _run_wizard(window, qtbot, [target], ref=ref)
    assert wizard.error is None, wizard.error
    [result] = wizard.results
    assert result.ok, result.error_message
    assert result.host_deploy_s > 0 and result.load_us > 0 and result.inference_median_us > 0
    table = wizard.run_page.table
    assert table.item(0, 0).text() == target and table.item(0, 1).text() == "ok"
    assert table.item(0, 5).text().endswith((" ms", " µs"))  # load latency
    wizard.accept()

    # the latencies are in the dashboard
    dash = window.dashboard
    wait_for(qtbot, lambda: any(r.device == target and r.outcome == "ok" for r in dash.model.records), 10,
             "the dashboard row")
    row = next(r for r in dash.model.records if r.device == target)
    assert row.load_us == result.load_us and row.inference_median_us == result.inference_median_us
    assert dash.device_plot.listDataItems() or dash.device_plot.items
    csv_path = dash.export_csv(tmp_path / "history.csv")
    assert target in csv_path.read_text()

    # the fleet shows the new model; the context menu rolls it back to the previous one
    version = int(ref.split("@")[1])
    wait_for(qtbot, lambda: window.fleet_model.record(target).model_version == version
             and window.fleet_model.record(target).prev_version == before.model_version, 20, "the new model's HELLO")
    menu = window.fleet_view.context_menu_for(target)
    rollback = next(a for a in menu.actions() if a.objectName() == "rollback")
    assert rollback.isEnabled()
    rollback.trigger()
    wait_for(qtbot, lambda: window.fleet_model.record(target).model_name == before.model_name
             and window.fleet_model.record(target).model_version == before.model_version, 30, "the rollback")
    wait_for(qtbot, lambda: any(r.device == target and r.outcome == "rolled-back" for r in dash.model.records),
             10, "the rollback in the history")
    assert any("rolled back" in row[3] for row in window.events.model.rows())


def test_trial_deployment_confirmed_from_context_menu(window, qtbot, tmp_path, model_image):
    ref = _import(window, qtbot, tmp_path, model_image)
    target = "sim-001"
    wizard = _run_wizard(window, qtbot, [target], ref=ref, trial=True)
    assert wizard.results and wizard.results[0].ok, wizard.error or wizard.results[0].error_message
    assert wizard.results[0].trial
    wizard.accept()
    wait_for(qtbot, lambda: window.fleet_model.record(target).trial, 20, "the trial state in the fleet")
    assert "(trial)" in window.fleet_model.index_of_device(target, 1).data()
    confirm = next(a for a in window.fleet_view.context_menu_for(target).actions() if a.objectName() == "confirm")
    assert confirm.isEnabled()
    confirm.trigger()
    wait_for(qtbot, lambda: not window.fleet_model.record(target).trial, 30, "the confirmation")
    assert any("confirmed" in row[3] for row in window.events.model.rows())


def test_corrupted_model_in_wizard_is_refused_with_a_message(window, qtbot, tmp_path, model_image):
    target = "sim-003"
    before = window.fleet_model.record(target)
    bad = tmp_path / "broken.tmlm"
    bad.write_bytes(model_image[: len(model_image) // 2])
    wizard = _run_wizard(window, qtbot, [target], file=bad)
    assert wizard.results == []
    text = wizard.run_page.status.text()
    assert "Nothing was deployed" in text and "not a deployable model image" in text
    assert "Traceback" not in text
    after = window.fleet_model.record(target)
    assert (after.model_name, after.model_version) == (before.model_name, before.model_version)
    assert window.fleet_model.status(target) != "deploying"
    wizard.accept()


def test_serial_device_attached_and_deployed_from_wizard(window, qtbot, tmp_path, model_image, virtual_fleet):
    # ids follow the index: the 7th serial device (sim-007) is not one of the shared MQTT fleet's
    fleet = virtual_fleet(None, FLEET_SIZE + 1, serial=True, seed=9)
    device_id = f"sim-{FLEET_SIZE + 1:03d}"
    port = fleet.serial_ports[device_id]
    # a device on a serial port (not on the broker) shows in the fleet once its port is attached
    window.attach_serial(port, 115200)
    wait_for(qtbot, lambda: window.fleet_model.record(device_id) is not None, 15, "the serial device in the fleet")
    assert window.fleet_model.record(device_id).transport == "serial"
    wait_for(qtbot, lambda: "1 device" in window.serial_label.text(), 5, "the serial state in the status bar")
    wizard = _run_wizard(window, qtbot, [device_id], file=_write(tmp_path, model_image), serial_port=port)
    assert wizard.error is None, wizard.error
    [result] = wizard.results
    assert result.ok and result.transport == "serial", result.error_message
    assert result.load_us > 0
    assert fleet.device(device_id).hello(time.monotonic()).model_version == result.model_version
    # the port was handed back to the fleet view: the device reports its new model there
    wait_for(qtbot, lambda: window.fleet_model.record(device_id).model_version == result.model_version, 15,
             "the serial device's new model in the fleet")
    wizard.accept()


def test_serial_device_confirmed_and_rolled_back_from_context_menu(window, qtbot, tmp_path, model_image,
                                                                   virtual_fleet):
    # a device only on a serial port (sim-008 is not on the broker): the context menu must reach it there
    fleet = virtual_fleet(None, FLEET_SIZE + 2, serial=True, seed=11)
    device_id = f"sim-{FLEET_SIZE + 2:03d}"
    port = fleet.serial_ports[device_id]
    window.attach_serial(port, 115200)
    wait_for(qtbot, lambda: window.fleet_model.record(device_id) is not None, 15, "the serial device in the fleet")
    before = window.fleet_model.record(device_id)
    assert before.transport == "serial"
    wizard = _run_wizard(window, qtbot, [device_id], file=_write(tmp_path, model_image), serial_port=port, trial=True)
    assert wizard.error is None, wizard.error
    [result] = wizard.results
    assert result.ok and result.trial, result.error_message
    wizard.accept()
    wait_for(qtbot, lambda: window.fleet_model.record(device_id).model_version == result.model_version
             and window.fleet_model.record(device_id).trial, 15, "the trial model in the fleet")

    confirm = next(a for a in window.fleet_view.context_menu_for(device_id).actions() if a.objectName() == "confirm")
    assert confirm.isEnabled()
    confirm.trigger()
    wait_for(qtbot, lambda: not fleet.device(device_id).trial, 30, "the confirmation on the device")
    wait_for(qtbot, lambda: window.fleet_model.record(device_id) is not None
             and not window.fleet_model.record(device_id).trial, 15, "the confirmation in the fleet")

    rollback = next(a for a in window.fleet_view.context_menu_for(device_id).actions() if a.objectName() == "rollback")
    assert rollback.isEnabled()
    rollback.trigger()
    wait_for(qtbot, lambda: fleet.device(device_id).hello(time.monotonic()).model_version == before.model_version,
             30, "the rollback on the device")
    # the port was handed back to the fleet view, which shows the previous model again
    wait_for(qtbot, lambda: (window.fleet_model.record(device_id).model_name,
                             window.fleet_model.record(device_id).model_version)
             == (before.model_name, before.model_version), 15, "the rolled-back model in the fleet")
    assert port in window.session.serial
    from app.deploy.api import history

    outcomes = {r.outcome: r.transport for r in history(device=device_id)}
    assert outcomes.get("confirmed") == "serial" and outcomes.get("rolled-back") == "serial", outcomes
    assert any(row[2] == device_id and "rolled back" in row[3] for row in window.events.model.rows())


def _write(tmp_path, image: bytes):
    path = tmp_path / "model.tmlm"
    path.write_bytes(image)
    return path


def test_train_convert_deploy_while_streaming_stays_responsive(window, qtbot, tmp_path, model_image,
                                                               record_property):
    from app.fleet.vibration import MachineSimulator
    from app.ml.datasets import DatasetStore
    from app.ui.main_window import TAB_LIVE

    models = window.models
    # record data from the selected device (Models page, "Record from device")
    window.fleet_view.select_device("sim-005")
    worker = models.record_selected(seconds=3.0, label="normal")
    wait_for(qtbot, lambda: worker.done, 60, "the recording")
    assert worker.failed is None, worker.failed  # set before `done`
    recorded = worker.value
    # the queued result slot checks the new dataset on the Models page
    wait_for(qtbot, lambda: recorded.id in models.checked_datasets("normal"), 30, "the recording on the Models page")
    assert recorded.windows >= 8 and recorded.source == "device:sim-005"
    # plus simulated normal data from other machines, as an import would bring
    sims = [MachineSimulator(seed, shaft_hz=hz).generate(5 * 3200) for seed, hz in ((1, 24.0), (2, 27.0), (3, 30.0))]
    with DatasetStore() as store:
        simulated = store.add(np.concatenate(sims), 3200, "normal", source="simulated").id
    models.refresh()
    models.set_dataset_checked(simulated)
    ref = _import(window, qtbot, tmp_path, model_image, name="fleet-ae")

    # stream two devices in the live view and probe the event loop
    window.tabs.setCurrentIndex(TAB_LIVE)
    window.live.show_devices(FAULTY_DEVICE, "sim-001")
    delays: list[float] = []
    last = [time.perf_counter()]

    def probe() -> None:
        now = time.perf_counter()
        delays.append(max(0.0, (now - last[0]) * 1000 - PROBE_INTERVAL_MS))
        last[0] = now

    timer = QTimer()
    timer.setInterval(PROBE_INTERVAL_MS)
    timer.timeout.connect(probe)
    timer.start()
    frames0 = window.live.frames
    started = time.perf_counter()
    train = models.train_checked(name="gui-ae", epochs=5)
    assert train is not None
    wizard = _run_wizard(window, qtbot, ["sim-006"], ref=ref)
    wait_for(qtbot, lambda: train.done, JOB_TIMEOUT_S, "training and conversion")
    assert train.failed is None, train.failed  # set before `done`
    # the queued result slot registers the version and says so
    wait_for(qtbot, lambda: "registered gui-ae@1" in models.job_label.text(), 30, "the new version on the Models page")
    elapsed = time.perf_counter() - started
    timer.stop()

    assert wizard.results and wizard.results[0].ok, wizard.error or wizard.results[0].error_message
    assert models.current_version().ref == "gui-ae@1"
    html = models.card.toHtml()
    assert "int8 vs float" in html and "Fit per hardware profile" in html
    assert "registered gui-ae@1" in models.job_label.text()

    # measured, recorded, never asserted (timing belongs to benchmarks/)
    ordered = sorted(delays)
    stats = {"probe_ticks": len(delays), "median_ms": statistics.median(ordered),
             "p99_ms": ordered[int(0.99 * (len(ordered) - 1))], "max_ms": ordered[-1],
             "frames_per_s": (window.live.frames - frames0) / elapsed, "seconds": elapsed}
    for key, value in stats.items():
        record_property(key, round(value, 2))
    print("\nGUI event loop while streaming 2 devices + training/converting + deploying:",
          ", ".join(f"{k} {v:.1f}" for k, v in stats.items()))
    assert len(delays) > 10

    # check the new version with TFLM from the page
    worker = models.check_selected()
    assert not models.cancel_button.isEnabled()  # a check has no step to stop at: no false promise
    wait_for(qtbot, lambda: "measured arena" in models.job_label.text(), JOB_TIMEOUT_S, "the TFLM check")
    assert worker.failed is None
    wizard.accept()
