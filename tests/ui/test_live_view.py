"""Live view: streams are requested only while the view shows them, data arrives through ring
buffers and is drawn by the display timer, two devices compare, PNG and CSV export."""

from __future__ import annotations

import csv

from tests.ui.conftest import FAULTY_DEVICE, wait_for


def test_live_view_streams_draws_compares_and_exports(window, qtbot, tmp_path):
    from app.ui.main_window import TAB_LIVE, TAB_MODELS

    live = window.live
    monitor = window.session.monitor
    window.tabs.setCurrentIndex(TAB_LIVE)
    window.fleet_view.select_device(FAULTY_DEVICE)
    assert live.streaming_devices == {FAULTY_DEVICE}
    wait_for(qtbot, lambda: live.feeds[FAULTY_DEVICE].windows >= 10, 20, "stream windows")
    frames = live.frames
    wait_for(qtbot, lambda: live.frames > frames + 3, 10, "redraws")
    x, y = live.wave_curves[0].getData()
    assert len(x) > 1000 and abs(float(y[-1])) < 50  # samples in g
    fx = live.spec_curves[0].xData  # all the data (getData() is clipped to the view)
    assert fx is not None and fx[-1] == 1600.0  # up to Nyquist
    # shaft markers at 1x/2x/3x the device's shaft speed, threshold line from telemetry
    wait_for(qtbot, lambda: monitor.get(FAULTY_DEVICE).shaft_hz, 10, "a shaft speed estimate")
    wait_for(qtbot, lambda: live.markers[0].isVisible(), 5, "the shaft markers")
    assert abs(live.markers[1].value() - 2 * live.markers[0].value()) < 1e-6
    wait_for(qtbot, lambda: len(live.feeds[FAULTY_DEVICE].scores) >= 2, 10, "score points")
    assert live.threshold_line.isVisible() and live.alarm_band.isVisible()

    # compare: the second device's stream is requested too and drawn dashed
    live.show_devices(FAULTY_DEVICE, "sim-001")
    assert live.streaming_devices == {FAULTY_DEVICE, "sim-001"}
    wait_for(qtbot, lambda: live.feeds["sim-001"].windows >= 5, 20, "the compared device's stream")
    wait_for(qtbot, lambda: live.wave_cmp[0].getData()[0] is not None and len(live.wave_cmp[0].getData()[0]) > 100,
             5, "compare curves")

    # export
    png = live.export_png(tmp_path / "live.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path = live.export_csv(tmp_path / "live.csv")
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["device", "t_s", "x_g", "y_g", "z_g"]
    assert {r[0] for r in rows[1:]} == {FAULTY_DEVICE, "sim-001"}
    scores = list(csv.reader((tmp_path / "live-scores.csv").open()))
    assert len(scores) > 2

    # hidden view: no stream requested; shown again: requested again
    window.tabs.setCurrentIndex(TAB_MODELS)
    assert live.streaming_devices == set()
    assert not monitor._stream_listeners.get(FAULTY_DEVICE)
    window.tabs.setCurrentIndex(TAB_LIVE)
    assert live.streaming_devices == {FAULTY_DEVICE, "sim-001"}
    # stop streaming button releases them too
    live.stream_button.setChecked(False)
    assert live.streaming_devices == set()


def test_ring_buffer_is_bounded_and_ordered():
    import numpy as np

    from app.ui.ringbuffer import RingBuffer

    buf = RingBuffer(5, 1)
    buf.write(np.arange(3))
    assert buf.latest().ravel().tolist() == [0, 1, 2]
    buf.write(np.arange(3, 9))
    assert buf.latest().ravel().tolist() == [4, 5, 6, 7, 8]
    assert buf.latest(2).ravel().tolist() == [7, 8]
    buf.write(np.arange(100))
    assert len(buf) == 5 and buf.latest().ravel().tolist() == [95, 96, 97, 98, 99]
    assert buf.total == 109
