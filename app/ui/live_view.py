"""Live view: 3-axis waveform, amplitude spectrum with 1x/2x/3x shaft markers, anomaly-score trend
with threshold and alarm band, for one device and optionally a second one, overlaid (dashed) or
side by side (a second column of plots with linked axes, each with its own markers and threshold).

Data arrival is separated from drawing: the stream callback (network thread) only writes into a
bounded numpy ring buffer, and a display timer (~30 Hz) redraws curves that were created once
(setData, clip to view, peak downsampling). The device's stream is requested from the
FleetMonitor only while this view is visible and streaming is switched on.
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMenu,
    QMessageBox,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.ui.live_feed import DEFAULT_SAMPLE_RATE, DeviceFeed, amplitude_spectrum
from app.ui.plot_column import WAVE_SHOWN_S, PlotColumn
from app.ui.plot_range import StickyYRange
from app.ui.severity_view import ConditionPanel

log = logging.getLogger(__name__)

# Display rate: smooth to the eye, and a fraction of one core even with four streams.
DRAW_INTERVAL_MS = 33
# Spectrum: one feature window (PROTOCOL.md 8), so the picture matches what the model sees.
SPECTRUM_N = 1024
COMPARE_COLORS = ("#ff8a80", "#a5d6a7", "#90caf9")
NO_COMPARE = "Compare with…"
# "Shaft orders" spectrum view: up to this many times the shaft speed (or ORDERS_FALLBACK_HZ
# while the device has not reported a shaft speed yet).
ORDERS_SHOWN = 10.5
ORDERS_FALLBACK_HZ = 400.0
# Spectrum ranges offered: the full band shows the bearing resonance (1.1-1.4 kHz at 3.2 kHz).
SPECTRUM_BANDS = ("full", "orders")
COMPARE_MODES = ("overlay", "side")


class LiveView(QWidget):
    """Give it the FleetMonitor with `set_monitor`, devices with `show_devices(primary, compare)`."""

    status_message = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.monitor = None
        self.primary: str | None = None
        self.compare: str | None = None
        self.feeds: dict[str, DeviceFeed] = {}
        self.streaming_wanted = True
        self.paused = False
        self.compare_mode = "overlay"
        self.spectrum_band = "full"
        self.frames = 0  # redraws done: the benchmark's frames-per-second figure
        self._subscribed: set[str] = set()
        self._drawn: dict[str, tuple[int, int]] = {}
        self._listening: dict = {}
        self._tools: list[QToolButton] = []
        self._orders_shaft: float | None = None
        self._build()
        self.timer = QTimer(self)
        self.timer.setInterval(DRAW_INTERVAL_MS)
        self.timer.timeout.connect(self.draw)

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        bar = QHBoxLayout()
        self.title = QLabel("Select a device in the fleet to see it live.")
        self.title.setTextFormat(Qt.TextFormat.RichText)
        # the title may be cut rather than make the page (and the window's central area) wider
        self.title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        bar.addWidget(self.title, 1)
        self.compare_box = QComboBox()
        self.compare_box.setToolTip("Compare with a second device: dashed on the same plots, or side by side")
        self.compare_box.setMinimumWidth(100)
        self.compare_box.addItem(NO_COMPARE, None)
        self.compare_box.activated.connect(self._compare_chosen)
        bar.addWidget(self.compare_box)
        self.side_button = self._tool("Side by side", "Show the compared device in its own column of plots "
                                      "(same scales) instead of dashed on top (Ctrl+B)", checkable=True,
                                      shortcut="Ctrl+B")
        self.side_button.toggled.connect(lambda on: self.set_compare_mode("side" if on else "overlay"))
        self.band_box = QComboBox()
        self.band_box.addItem("Full band", "full")
        self.band_box.addItem("Shaft orders", "orders")
        self.band_box.setToolTip("Spectrum range: the whole band up to half the sample rate (bearing "
                                 "resonances), or the first ten shaft orders (unbalance, misalignment)")
        self.band_box.activated.connect(lambda _i: self.set_spectrum_band(self.band_box.currentData()))
        self.stream_button = self._tool("Stream", "Request the raw vibration stream from the device while "
                                        "this view shows it (Ctrl+R)", checkable=True, shortcut="Ctrl+R")
        self.stream_button.setChecked(True)
        self.stream_button.toggled.connect(self.set_streaming)
        self.pause_button = self._tool("Pause", "Freeze the plots; data keeps arriving (Space)",
                                       checkable=True, shortcut="Space")
        self.pause_button.toggled.connect(self.set_paused)
        export = self._tool("Export", "Save the plots as a PNG picture or the buffered data as CSV")
        export.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(export)
        menu.addAction("Plots as PNG…", self.export_png_dialog)
        menu.addAction("Data as CSV…", self.export_csv_dialog)
        export.setMenu(menu)
        self._bar = bar
        bar.addWidget(self.side_button)
        bar.addWidget(self.band_box)
        for w in self._tools:
            if w is not self.side_button:
                bar.addWidget(w)

        pg.setConfigOptions(antialias=False, background="w", foreground="#333")
        self.plots = pg.GraphicsLayoutWidget()
        self.main_col = PlotColumn(self.plots, 0)
        self.side_col = PlotColumn(self.plots, 1)
        self.side_col.link_to(self.main_col)
        self.main_col.show(True)
        # y ranges fitted now and then, not by pyqtgraph's auto-range on every frame (app.ui.plot_range);
        # the side column's plots follow through their y link
        self.wave_range = StickyYRange(self.main_col.wave_plot)
        self.spec_range = StickyYRange(self.main_col.spec_plot, zero_based=True)
        for plot in (self.side_col.wave_plot, self.side_col.spec_plot):
            plot.enableAutoRange(y=False)
        # the names tests, the benchmark and export use
        self.wave_plot, self.spec_plot, self.score_plot = self.main_col.plots
        self.wave_curves, self.spec_curves = self.main_col.wave_curves, self.main_col.spec_curves
        self.score_curve, self.markers = self.main_col.score_curve, self.main_col.markers
        self.threshold_line, self.alarm_band = self.main_col.threshold_line, self.main_col.alarm_band
        # overlay compare curves: dashed, lighter, in the main column's plots
        dash = Qt.PenStyle.DashLine
        self.wave_cmp = [self.wave_plot.plot(pen=pg.mkPen(c, width=1, style=dash), connect="finite")
                         for c in COMPARE_COLORS]
        self.spec_cmp = [self.spec_plot.plot(pen=pg.mkPen(c, width=1, style=dash)) for c in COMPARE_COLORS]
        self.score_cmp = self.score_plot.plot(pen=pg.mkPen("#78909c", width=2, style=dash))

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(bar)
        layout.addWidget(self.plots, 1)
        self.condition = ConditionPanel()  # severity gauge, envelope spectrum, diagnosis
        layout.addWidget(self.condition)
        self.info = QLabel("")
        self.info.setStyleSheet("color: #555")
        # a long line (two devices) is cut rather than widen the page and squeeze the fleet
        self.info.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        layout.addWidget(self.info)

    def _tool(self, text: str, tip: str, checkable: bool = False, shortcut: str | None = None, slot=None):
        button = QToolButton()
        button.setText(text)
        button.setToolTip(tip)
        button.setCheckable(checkable)
        if shortcut:
            button.setShortcut(QKeySequence(shortcut))
        if slot:
            button.clicked.connect(slot)
        self._tools.append(button)
        return button

    # ------------------------------------------------------------------ wiring

    def set_monitor(self, monitor) -> None:
        """Attach the FleetMonitor (after the session started); telemetry feeds the score trend."""
        if self.monitor is not None:
            self.monitor.remove_listener(self._on_fleet_event)
        self._unsubscribe_all()
        self.monitor = monitor
        if monitor is not None:
            monitor.add_listener(self._on_fleet_event)
            self._sync_streams()

    def set_device_choices(self, device_ids: list[str]) -> None:
        current = self.compare_box.currentData()
        if [self.compare_box.itemData(i) for i in range(1, self.compare_box.count())] == device_ids:
            return
        self.compare_box.blockSignals(True)
        self.compare_box.clear()
        self.compare_box.addItem(NO_COMPARE, None)
        for device_id in device_ids:
            self.compare_box.addItem(device_id, device_id)
        i = self.compare_box.findData(current)
        self.compare_box.setCurrentIndex(max(0, i))
        self.compare_box.blockSignals(False)

    def _compare_chosen(self, _index: int) -> None:
        self.show_devices(self.primary, self.compare_box.currentData())

    def show_devices(self, primary: str | None, compare: str | None = None) -> None:
        """Show `primary` (and `compare` overlaid); streams follow what is shown."""
        if compare == primary:
            compare = None
        self.primary, self.compare = primary, compare
        wanted = {d for d in (primary, compare) if d}
        for device_id in list(self.feeds):
            if device_id not in wanted:
                self.feeds.pop(device_id)
        for device_id in wanted:
            if device_id not in self.feeds:
                feed = DeviceFeed(device_id)
                record = self.monitor.get(device_id) if self.monitor else None
                if record is not None:
                    feed.on_record(record)
                self.feeds[device_id] = feed
        i = self.compare_box.findData(compare)
        self.compare_box.setCurrentIndex(max(0, i))
        self._drawn.clear()
        self.wave_range.reset()
        self.spec_range.reset()
        self._orders_shaft = None  # "shaft orders" follows the newly shown machine's speed
        self.condition.set_feed(self.feeds.get(primary) if primary else None)
        self._arrange()
        self._update_title()
        self._sync_streams()
        self.draw(force=True)

    def _update_title(self) -> None:
        if not self.primary:
            self.title.setText("Select a device in the fleet to see it live.")
            return
        text = f"<b>{self.primary}</b>"
        if self.compare:  # which one is dashed or on the right: the legend and plot titles say
            text += f" &nbsp;vs&nbsp; <b>{self.compare}</b>"
        self.title.setText(text)

    def set_compare_mode(self, mode: str) -> None:
        """'overlay': the compared device dashed on the same plots; 'side': its own column."""
        if mode not in COMPARE_MODES:
            raise ValueError(f"compare mode must be one of {COMPARE_MODES}")
        self.compare_mode = mode
        if self.side_button.isChecked() != (mode == "side"):
            self.side_button.setChecked(mode == "side")
        self._arrange()
        self._update_title()
        self._drawn.clear()
        self.wave_range.reset()
        self.spec_range.reset()
        self.draw(force=True)

    def _arrange(self) -> None:
        side = self.compare_mode == "side" and bool(self.compare)
        self.side_col.show(side)
        self.main_col.set_device(self.primary if side else None)
        self.side_col.set_device(self.compare if side else None)
        if not side:
            self.side_col.clear()
        if side or not self.compare:
            for c in (*self.wave_cmp, *self.spec_cmp, self.score_cmp):
                c.setData([], [])
        legend = self.score_plot.legend
        legend.removeItem(self.score_cmp)
        if self.compare and not side:  # the dashed trace is named in the legend only while it is drawn
            legend.addItem(self.score_cmp, f"{self.compare} (dashed)")

    def set_spectrum_band(self, band: str) -> None:
        """'full': 0 to half the sample rate; 'orders': the first ten shaft orders."""
        if band not in SPECTRUM_BANDS:
            raise ValueError(f"spectrum band must be one of {SPECTRUM_BANDS}")
        self.spectrum_band = band
        i = self.band_box.findData(band)
        if self.band_box.currentIndex() != i:
            self.band_box.setCurrentIndex(i)
        self._orders_shaft = None
        self._apply_band()

    def _apply_band(self) -> None:
        feed = self.feeds.get(self.primary) if self.primary else None
        if self.spectrum_band == "full":
            fs = feed.sample_rate if feed else DEFAULT_SAMPLE_RATE
            self.spec_plot.setXRange(0, fs / 2, padding=0)
        else:
            shaft = feed.shaft_hz if feed else None
            self._orders_shaft = shaft
            self.spec_plot.setXRange(0, shaft * ORDERS_SHOWN if shaft else ORDERS_FALLBACK_HZ, padding=0)

    def set_streaming(self, on: bool) -> None:
        self.streaming_wanted = on
        self._sync_streams()

    def set_paused(self, on: bool) -> None:
        self.paused = on
        if not on:
            self.draw(force=True)

    def _on_fleet_event(self, event: str, record) -> None:  # network thread: a dict lookup, a write
        feed = self.feeds.get(record.device_id)
        if feed is not None and event in ("telemetry", "changed", "added"):
            if event == "telemetry":
                feed.on_record(record)
            else:
                feed.threshold = record.threshold if record.threshold is not None else feed.threshold

    def _sync_streams(self) -> None:
        """Request exactly the streams the view shows, only while visible and streaming is on."""
        want: set[str] = set()
        if self.monitor is not None and self.streaming_wanted and self.isVisible():
            want = set(self.feeds)
        for device_id in self._subscribed - want:
            self._unsubscribe(device_id)
        for device_id in want - self._subscribed:
            callback = self.feeds[device_id].on_stream  # one bound method: removal matches by identity
            self.monitor.add_stream_listener(device_id, callback)
            self._subscribed.add(device_id)
            self._listening[device_id] = callback
        if want:
            self.timer.start()
        elif not self.feeds or not self.isVisible():
            self.timer.stop()

    def _unsubscribe(self, device_id: str) -> None:
        callback = self._listening.pop(device_id, None)
        self._subscribed.discard(device_id)
        if callback is not None and self.monitor is not None:
            self.monitor.remove_stream_listener(device_id, callback)

    def _unsubscribe_all(self) -> None:
        for device_id in list(self._subscribed):
            self._unsubscribe(device_id)

    @property
    def streaming_devices(self) -> set[str]:
        return set(self._subscribed)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self._sync_streams()
        if self.feeds:
            self.timer.start()

    def hideEvent(self, event) -> None:
        super().hideEvent(event)
        self._sync_streams()
        self.timer.stop()

    def shutdown(self) -> None:
        self.timer.stop()
        self._unsubscribe_all()
        if self.monitor is not None:
            self.monitor.remove_listener(self._on_fleet_event)

    # ------------------------------------------------------------------ drawing (GUI thread)

    def draw(self, force: bool = False) -> None:
        if self.paused and not force:
            return
        drew = False
        side = self.compare_mode == "side"
        targets = [(self.primary, self.wave_curves, self.spec_curves, self.score_curve, self.main_col)]
        if side:
            col = self.side_col
            targets.append((self.compare, col.wave_curves, col.spec_curves, col.score_curve, col))
        else:
            targets.append((self.compare, self.wave_cmp, self.spec_cmp, self.score_cmp, None))
        for device_id, wave_curves, spec_curves, score_curve, column in targets:
            feed = self.feeds.get(device_id) if device_id else None
            if feed is None:
                for c in (*wave_curves, *spec_curves, score_curve):
                    c.setData([], [])
                continue
            key = (feed.wave.total, feed.scores.total)
            before = None if force else self._drawn.get(device_id)
            if before == key:
                continue
            self._drawn[device_id] = key
            drew = True
            # only what changed: raw samples arrive ~12 times a second, scores once a second
            self._draw_feed(feed, wave_curves, spec_curves, score_curve, column,
                            wave=before is None or before[0] != key[0], scores=before is None or before[1] != key[1])
        if self.spectrum_band == "orders" and self._orders_shaft is None and self.primary in self.feeds \
                and self.feeds[self.primary].shaft_hz:
            self._apply_band()  # the shaft speed arrived after the band was chosen
        if drew:
            self.wave_range.apply()
            self.spec_range.apply()
            self.frames += 1
            self._update_info()

    def _draw_feed(self, feed: DeviceFeed, wave_curves, spec_curves, score_curve, column: PlotColumn | None,
                   wave: bool = True, scores: bool = True) -> None:
        """Set the curves of what changed: the waveform and spectrum (`wave`), the score trend and
        the decorations that follow it (`scores`)."""
        if wave:
            self._draw_wave(feed, wave_curves, spec_curves)
        if not scores:
            return
        trend = feed.scores.latest()
        if len(trend):
            score_curve.setData(trend[:, 0] - time.time(), trend[:, 1])
        else:
            score_curve.setData([], [])
        if column is not None:
            column.decorate(feed, trend)

    def _draw_wave(self, feed: DeviceFeed, wave_curves, spec_curves) -> None:
        fs = feed.sample_rate
        wave = feed.wave.latest(int(WAVE_SHOWN_S * fs * 1.2))
        if len(wave):
            t = (np.arange(len(wave)) - len(wave)) / fs
            for i, curve in enumerate(wave_curves):
                curve.setData(t, wave[:, i])
            self.wave_range.include(feed.device_id, wave)
            tail = feed.wave.latest(SPECTRUM_N)
            tail = tail[np.all(np.isfinite(tail), axis=1)]
            if len(tail) >= SPECTRUM_N // 2:
                freqs, spec = amplitude_spectrum(tail, fs)
                for i, curve in enumerate(spec_curves):
                    curve.setData(freqs, spec[:, i], skipFiniteCheck=True)
                self.spec_range.include(feed.device_id, spec)
        else:
            for curve in (*wave_curves, *spec_curves):
                curve.setData([], [])

    def _update_info(self) -> None:
        parts = []
        for device_id in (self.primary, self.compare):
            feed = self.feeds.get(device_id) if device_id else None
            if feed is None:
                continue
            streaming = "streaming" if device_id in self._subscribed else "not streaming"
            shaft = f", shaft {feed.shaft_hz:.1f} Hz" if feed.shaft_hz else ""
            parts.append(f"{device_id}: {streaming}, {feed.windows} windows, {feed.gaps} gaps{shaft}")
        self.info.setText("   |   ".join(parts))

    # ------------------------------------------------------------------ export

    def export_png(self, path: str | Path) -> Path:
        from pyqtgraph.exporters import ImageExporter

        path = Path(path)
        exporter = ImageExporter(self.plots.scene())
        exporter.export(str(path))
        return path

    def export_csv(self, path: str | Path) -> Path:
        """Waveforms (device, t_s, x_g, y_g, z_g) of the shown devices, and score history next to it."""
        path = Path(path)
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["device", "t_s", "x_g", "y_g", "z_g"])
            for device_id in (self.primary, self.compare):
                feed = self.feeds.get(device_id) if device_id else None
                if feed is None:
                    continue
                wave = feed.wave.latest()
                t = (np.arange(len(wave)) - len(wave)) / feed.sample_rate
                for ti, row in zip(t, wave, strict=True):
                    writer.writerow([device_id, f"{ti:.6f}", *(f"{v:.6f}" for v in row)])
        scores_path = path.with_name(path.stem + "-scores.csv")
        with open(scores_path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["device", "unix_time", "score", "threshold"])
            for device_id in (self.primary, self.compare):
                feed = self.feeds.get(device_id) if device_id else None
                if feed is None:
                    continue
                for ts, score in feed.scores.latest():
                    writer.writerow([device_id, f"{ts:.3f}", f"{score:.6f}", feed.threshold or ""])
        return path

    def _export_dialog(self, what: str, suffix: str, fn) -> None:
        if not self.primary:
            QMessageBox.information(self, "Export", "Select a device first.")
            return
        name = f"{self.primary}-{time.strftime('%Y%m%d-%H%M%S')}.{suffix}"
        path, _ = QFileDialog.getSaveFileName(self, f"Export {what}", name, f"{what} (*.{suffix})")
        if not path:
            return
        try:
            fn(path)
        except OSError as exc:
            QMessageBox.warning(self, "Export failed", f"Could not write {path}: {exc.strerror or exc}")
            return
        self.status_message.emit(f"exported {path}")

    def export_png_dialog(self) -> None:
        self._export_dialog("PNG image", "png", self.export_png)

    def export_csv_dialog(self) -> None:
        self._export_dialog("CSV data", "csv", self.export_csv)
