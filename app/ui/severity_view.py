"""Condition panel of the live view: a severity gauge (overall velocity RMS against the ISO zones
of the machine's class, in the zone colours), the envelope spectrum with BPFO/BPFI/BSF/FTF markers,
and the diagnosis with its evidence.

The analysis (app.analysis) runs once per ANALYSIS_INTERVAL_MS over the feed's last 4 s of raw
samples, in a worker thread (app.ui.workers): it costs a few milliseconds per second of data
(benchmarks/diagnosis.py; `last_analysis_ms` shows it), which on the GUI thread delayed the live
plots' frames (benchmarks/gui_responsiveness.py). The GUI thread copies the samples and draws the
result; at most one analysis runs at a time, and a result for a device no longer shown is dropped."""

from __future__ import annotations

import logging
import sqlite3
import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QToolButton, QVBoxLayout, QWidget

from app.analysis import iso
from app.analysis import spectra as sp
from app.analysis.diagnosis import Analysis, analyze
from app.analysis.machines import Machine, MachineStore
from app.domain.errors import DataError
from app.ui.workers import Worker, run_in_thread

log = logging.getLogger(__name__)

# Analysis rate: the zone and the envelope change over seconds, not display frames.
ANALYSIS_INTERVAL_MS = 1000
# Fewer finite samples than this (s) and the panel waits: below ~1 s the envelope lines are too coarse.
MIN_SECONDS = 1.0
# The gauge's scale ends this far beyond the C/D boundary, so zone D has room for the needle.
GAUGE_HEADROOM = 1.6
# The envelope plot shows up to this multiple of the highest marked defect frequency.
ENVELOPE_SHOWN = 1.15
MARKER_COLOURS = {"BPFO": "#c0392b", "BPFI": "#8e44ad", "BSF": "#16a085", "FTF": "#7f8c8d"}
PANEL_HEIGHT = 190


def analyse_samples(_progress, _cancel, samples: np.ndarray, fs: float, shaft: float | None, bearing,
                    klass: str) -> tuple[Analysis | None, iso.Zone, str, float]:
    """The worker's job: (analysis or None, velocity zone, problem, milliseconds it took)."""
    start = time.perf_counter()
    try:
        analysis = analyze(samples, fs, shaft, bearing, klass)
        zone, problem = analysis.zone, ""
    except DataError as exc:  # still show the velocity zone, which needs no description
        analysis = None
        velocity = sp.velocity_rms(sp.welch(samples, fs, sp.segment_length(len(samples), fs)))
        zone, problem = iso.classify(float(velocity.max()), klass), str(exc)
    return analysis, zone, problem, (time.perf_counter() - start) * 1e3


class SeverityGauge(QWidget):
    """A horizontal bar in the ISO zone colours with a needle at the overall velocity."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.zone: iso.Zone | None = None
        self.setMinimumSize(240, 70)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)

    def set_zone(self, zone: iso.Zone | None) -> None:
        self.zone = zone
        bounds = " / ".join(f"{b:g}" for b in zone.boundaries) if zone else ""
        self.setToolTip("" if zone is None else f"{zone.velocity_mm_s:.2f} mm/s: zone {zone.zone}, {zone.meaning} "
                        f"({zone.machine_class}; A/B, B/C, C/D at {bounds} mm/s)")
        self.update()

    def paintEvent(self, _event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        w = self.width()
        bar = QRectF(8, 26, w - 16, 18)
        bounds = self.zone.boundaries if self.zone else iso.ZONE_BOUNDARIES[iso.CLASS_I]
        top = bounds[2] * GAUGE_HEADROOM
        edges = [0.0, *bounds, top]
        for i, name in enumerate(iso.ZONES):
            x0 = bar.left() + bar.width() * edges[i] / top
            x1 = bar.left() + bar.width() * edges[i + 1] / top
            colour = QColor(iso.ZONE_COLOURS[name])
            if self.zone is None:
                colour = colour.lighter(160)
            p.fillRect(QRectF(x0, bar.top(), x1 - x0, bar.height()), colour)
            p.setPen(QColor("#222"))
            p.drawText(QRectF(x0, bar.top(), x1 - x0, bar.height()), Qt.AlignmentFlag.AlignCenter, name)
            if i < 3:
                p.drawText(QRectF(x1 - 20, bar.bottom() + 2, 40, 14), Qt.AlignmentFlag.AlignCenter, f"{edges[i + 1]:g}")
        if self.zone is None:
            p.drawText(QRectF(8, 2, w - 16, 20), Qt.AlignmentFlag.AlignLeft, "velocity: waiting for raw samples")
            p.end()
            return
        v = min(self.zone.velocity_mm_s, top)
        x = bar.left() + bar.width() * v / top
        p.setPen(QPen(QColor("#111"), 3))
        p.drawLine(int(x), int(bar.top() - 4), int(x), int(bar.bottom() + 4))
        font = p.font()
        font.setBold(True)
        p.setFont(font)
        p.drawText(QRectF(8, 2, w - 16, 20), Qt.AlignmentFlag.AlignLeft,
                   f"{self.zone.velocity_mm_s:.2f} mm/s  zone {self.zone.zone}: {self.zone.meaning}")
        p.end()


class ConditionPanel(QWidget):
    """Feed it a DeviceFeed with `set_feed`; it analyses the feed's buffer every second while shown."""

    machine_changed = Signal(str)  # a device's machine description was saved from the panel

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.feed = None
        self.machine: Machine | None = None
        self.analysis: Analysis | None = None
        self.problem = ""
        self.last_analysis_ms = 0.0
        self.analyses = 0
        self._worker: Worker | None = None  # the analysis in flight, if any
        self._generation = 0  # bumped when the feed or machine changes: older results are dropped
        self._rerun = False  # asked while one ran: start again when it ends (a new device's first look)
        self.gauge = SeverityGauge()
        self.diagnosis = QLabel("")
        self.diagnosis.setWordWrap(True)
        self.diagnosis.setTextFormat(Qt.TextFormat.RichText)
        self.diagnosis.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.machine_button = QToolButton()
        self.machine_button.setText("Machine…")
        self.machine_button.setToolTip("Describe the machine this device is on: shaft speed, bearing, ISO class")
        self.machine_button.clicked.connect(self.edit_machine)
        left = QVBoxLayout()
        left.addWidget(self.gauge)
        left.addWidget(self.diagnosis, 1)
        left.addWidget(self.machine_button, 0, Qt.AlignmentFlag.AlignLeft)
        self.plot = pg.PlotWidget(title="Envelope spectrum (g)")
        self.plot.setLabel("bottom", "frequency", "Hz")
        self.plot.getAxis("bottom").enableAutoSIPrefix(False)
        self.curve = self.plot.plot(pen=pg.mkPen("#1f5fa8", width=1))
        self.markers: dict[str, pg.InfiniteLine] = {}
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addLayout(left, 2)
        row.addWidget(self.plot, 3)
        self.setFixedHeight(PANEL_HEIGHT)
        self.timer = QTimer(self)
        self.timer.setInterval(ANALYSIS_INTERVAL_MS)
        self.timer.timeout.connect(self.refresh)

    def set_feed(self, feed) -> None:
        """Follow `feed` (a DeviceFeed, or None); its machine description is read once, here."""
        self.feed = feed
        self.analysis = None
        self._generation += 1
        self.reload_machine()

    def reload_machine(self) -> None:
        self.machine = None
        self._generation += 1
        if self.feed is not None:
            try:
                with MachineStore() as store:
                    self.machine = store.find(self.feed.device_id)
            except (OSError, sqlite3.Error, DataError) as exc:
                log.warning("machine description of %s unavailable: %s", self.feed.device_id, exc)
        self.refresh()

    def edit_machine(self) -> None:
        """The machine dialog for the shown device; a saved description applies at once."""
        from app.ui.machine_dialog import MachineDialog

        if self.feed is None:
            return
        dialog = MachineDialog(self.feed.device_id, self.feed.shaft_hz, self)
        if dialog.exec() and dialog.saved is not None:
            self.reload_machine()
            self.machine_changed.emit(self.feed.device_id)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.timer.start()

    def hideEvent(self, event) -> None:
        super().hideEvent(event)
        self.timer.stop()

    def refresh(self) -> None:
        """Start an analysis of the feed's buffered samples in a worker (unless one still runs: the
        next tick catches up); bad or missing input shows as a message at once."""
        feed = self.feed
        if feed is None:
            self._show(None, None, "Select a device to see its condition.")
            return
        samples = feed.wave.latest()
        samples = samples[np.all(np.isfinite(samples), axis=1)]
        fs = feed.sample_rate
        if len(samples) < MIN_SECONDS * fs:
            self._show(None, None, f"{feed.device_id}: waiting for {MIN_SECONDS:g} s of raw samples (Stream on)")
            return
        if self._worker is not None:
            self._rerun = True
            return
        self._rerun = False
        klass = self.machine.machine_class if self.machine else iso.CLASS_I
        shaft = (self.machine.shaft_hz if self.machine else None) or feed.shaft_hz
        bearing = self.machine.bearing if self.machine else None
        generation = self._generation
        self._worker = run_in_thread(analyse_samples, samples, fs, shaft, bearing, klass, name="condition analysis",
                                     on_result=lambda result: self._analysed(generation, result),
                                     on_finished=self._analysis_finished)

    @property
    def analysing(self) -> bool:
        """An analysis runs in the worker now."""
        return self._worker is not None

    def _analysed(self, generation: int, result) -> None:
        analysis, zone, problem, elapsed_ms = result
        if generation != self._generation:  # another device (or description) since it started
            return
        self.last_analysis_ms = elapsed_ms
        self.analyses += 1
        self._show(analysis, zone, problem)

    def _analysis_finished(self) -> None:
        self._worker = None
        if self._rerun:
            self.refresh()

    def _show(self, analysis: Analysis | None, zone: iso.Zone | None, problem: str) -> None:
        self.analysis, self.problem = analysis, problem
        self.gauge.set_zone(zone)
        if analysis is None:
            self.curve.setData([], [])
            for line in self.markers.values():
                line.setVisible(False)
            self.diagnosis.setText(f"<span style='color:#666'>{problem}</span>")
            return
        a = analysis
        top = max(m.expected_hz for m in a.defect_markers) * ENVELOPE_SHOWN
        keep = a.envelope_freqs <= top
        self.curve.setData(a.envelope_freqs[keep], a.envelope_amplitude[keep])
        self.plot.setXRange(0, top, padding=0)
        for m in a.defect_markers:
            kind = m.name.split("x")[-1]
            if kind not in MARKER_COLOURS:
                continue
            line = self.markers.get(m.name)
            if line is None:
                dotted = Qt.PenStyle.DashLine if m.name == kind else Qt.PenStyle.DotLine
                line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen(MARKER_COLOURS[kind], style=dotted),
                                       label=m.name if m.name == kind else None,
                                       labelOpts={"position": 0.9, "color": MARKER_COLOURS[kind]})
                self.plot.addItem(line)
                self.markers[m.name] = line
            line.setValue(m.expected_hz)
            line.setVisible(True)
        colour = "#c62828" if a.fault != "healthy" else "#2e7d32"
        evidence = "<br>".join(f"• {e}" for e in a.evidence[:3])
        self.diagnosis.setText(f"<b style='color:{colour}'>{a.fault.replace('_', ' ')}</b> "
                               f"<span style='color:#555'>shaft {a.shaft_hz:.2f} Hz</span><br>"
                               f"<span style='font-size:small'>{evidence}</span>")
