"""Live view: streams are requested only while the view shows them, data arrives through ring
buffers and is drawn by the display timer, two devices compare, PNG and CSV export."""

from __future__ import annotations

import csv
import math

from tests.ui.conftest import FAULTY_DEVICE, wait_for


def test_live_view_streams_draws_compares_and_exports(window, qtbot, tmp_path):
    from app.ui.main_window import TAB_LIVE, TAB_MODELS

    live = window.live
    monitor = window.session.monitor
    # the alarm follow-up's own short capture of the faulty device is not this view's stream: off here,
    # and any capture it began is over, so the stream listeners below are the live view's alone
    window.alarm_followup.stop()
    wait_for(qtbot, lambda: not window.alarm_followup.running, 60, "the alarm follow-up's capture to end")
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

    # side by side: the compared device gets its own column of plots with its own markers and
    # threshold, on the same scales; the streams do not change
    live.set_compare_mode("side")
    assert live.side_col.shown and "sim-001" in live.side_col.wave_plot.titleLabel.text
    wait_for(qtbot, lambda: live.side_col.wave_curves[0].xData is not None
             and len(live.side_col.wave_curves[0].xData) > 100, 5, "the side column's curves")
    wait_for(qtbot, lambda: live.side_col.threshold_line.isVisible(), 5, "the side column's threshold")
    assert live.wave_cmp[0].xData is None or len(live.wave_cmp[0].xData) == 0  # no dashed overlay now
    assert live.streaming_devices == {FAULTY_DEVICE, "sim-001"}
    live.side_col.spec_plot.setXRange(0, 200, padding=0)  # zooming one zooms both
    assert live.spec_plot.viewRange()[0] == [0, 200]
    live.set_compare_mode("overlay")
    assert not live.side_col.shown
    wait_for(qtbot, lambda: live.wave_cmp[0].xData is not None and len(live.wave_cmp[0].xData) > 100, 5,
             "the dashed overlay again")

    # spectrum range: the full band (bearing resonances up to Nyquist) or the first shaft orders
    live.set_spectrum_band("full")
    assert live.spec_plot.viewRange()[0] == [0, 1600]
    live.set_spectrum_band("orders")
    # the speed the view took: telemetry (paho's thread) may move the feed's estimate a little meanwhile
    shaft = live._orders_shaft
    assert shaft and abs(shaft - live.feeds[FAULTY_DEVICE].shaft_hz) < 0.05 * shaft
    assert abs(live.spec_plot.viewRange()[0][1] - 10.5 * shaft) < 1e-6
    assert live.markers[2].value() < live.spec_plot.viewRange()[0][1]  # 3x still in view
    live.set_spectrum_band("full")

    # the score axis is logarithmic: threshold line and bands are placed in log10 units
    threshold = live.feeds[FAULTY_DEVICE].threshold
    assert live.score_plot.getAxis("left").logMode
    assert abs(live.threshold_line.value() - math.log10(threshold)) < 1e-9
    low, high = live.alarm_band.getRegion()
    assert abs(low - math.log10(threshold)) < 1e-9 and high > low

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
