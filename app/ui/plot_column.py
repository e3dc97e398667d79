"""One column of the live view's plots (waveform, spectrum, anomaly-score trend) with the
decorations that belong to one device: shaft-order markers, threshold line, alarm and normal bands.
The live view has two (the second for a device compared side by side)."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt

from app.ui.live_feed import DEFAULT_SAMPLE_RATE, DeviceFeed

# How much of it the waveform plot shows.
WAVE_SHOWN_S = 0.5
# ...of which the trend shows the last two minutes (zoom out to see the rest).
SCORE_SHOWN_S = 120
AXES = ("x", "y", "z")
AXIS_COLORS = ("#e53935", "#43a047", "#1e88e5")
HARMONICS = (1, 2, 3)
# Marker labels at staggered heights (share of the plot height): on the full band the 1x/2x/3x
# lines are a few pixels apart and labels at one height would overprint each other.
MARKER_LABEL_POS = (0.95, 0.83, 0.71)
# The alarm band reaches this far above the threshold (or 3x the highest score shown), so it
# covers every alarming point on the log axis.
ALARM_BAND_DECADES = 1.0
ALARM_BAND_HEADROOM = 3.0
# The normal zone reaches a decade below the threshold (or under the lowest score shown); a log
# axis cannot show 0, so scores are floored at MIN_SCORE_SHOWN for the band.
NORMAL_BAND_DECADES = 1.0
MIN_SCORE_SHOWN = 1e-4


class PlotColumn:
    """One column of plots (waveform, spectrum, score) with the decorations that belong to one
    device: shaft markers, threshold line and alarm band. Curves are created once."""

    def __init__(self, layout: pg.GraphicsLayoutWidget, col: int, dashed: bool = False) -> None:
        self.col = col
        self.wave_plot = pg.PlotItem(title="Vibration (g)")
        self.wave_plot.setLabel("bottom", "time", "s")
        self.spec_plot = pg.PlotItem(title="Amplitude spectrum (g)")
        self.spec_plot.setLabel("bottom", "frequency", "Hz")
        self.spec_plot.getAxis("bottom").enableAutoSIPrefix(False)  # Hz throughout, as on a vibration chart
        self.score_plot = pg.PlotItem(title="Anomaly score (log scale)")
        self.score_plot.setLabel("bottom", "time", "s")
        self.plots = (self.wave_plot, self.spec_plot, self.score_plot)
        for plot in self.plots:
            # no grid: pyqtgraph draws grid lines as part of the axes, replayed on every redraw of
            # the plot area, which cost more than the curves themselves (benchmarks/gui_responsiveness.py)
            plot.setClipToView(True)
            plot.setDownsampling(auto=True, mode="peak")
        # one x/y/z legend (the spectrum's, where the top right is usually empty): on the waveform
        # it would cover the newest samples
        self.spec_plot.addLegend(offset=(-5, 5), labelTextSize="8pt")
        # upper left: new points arrive on the right, the oldest two minutes ago
        self.score_plot.addLegend(offset=(60, 5), labelTextSize="8pt")
        # Reconstruction errors span orders of magnitude (a faulty machine scores 1000x its
        # threshold): a log axis keeps the threshold and the healthy scores readable.
        self.score_plot.setLogMode(y=True)
        self.wave_plot.setXRange(-WAVE_SHOWN_S, 0, padding=0)
        self.spec_plot.setXRange(0, DEFAULT_SAMPLE_RATE / 2, padding=0)
        self.score_plot.setXRange(-SCORE_SHOWN_S, 0, padding=0)
        style = Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine
        self.wave_curves = [self.wave_plot.plot(pen=pg.mkPen(c, width=1), connect="finite") for c in AXIS_COLORS]
        self.spec_curves = [self.spec_plot.plot(pen=pg.mkPen(c, width=1), name=a)
                            for a, c in zip(AXES, AXIS_COLORS, strict=True)]
        self.markers = []
        for h, pos in zip(HARMONICS, MARKER_LABEL_POS, strict=True):
            line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#8e24aa", width=1, style=Qt.PenStyle.DotLine),
                                   label=f"{h}x", labelOpts={"position": pos, "color": "#8e24aa"})
            line.setVisible(False)
            self.spec_plot.addItem(line)
            self.markers.append(line)
        self.score_curve = self.score_plot.plot(pen=pg.mkPen("#263238", width=2, style=style), symbol="o",
                                                symbolSize=4, symbolBrush="#263238", name="score")
        self.threshold_line = pg.InfiniteLine(angle=0, movable=False, pen=pg.mkPen("#c62828", width=2),
                                              label="threshold", labelOpts={"position": 0.12,
                                                                                     "color": "#c62828",
                                                                                     "anchors": [(0, 1), (0, 1)]})
        self.threshold_line.setVisible(False)
        self.alarm_band = pg.LinearRegionItem(orientation="horizontal", movable=False,
                                              brush=pg.mkBrush(198, 40, 40, 30), pen=pg.mkPen(None))
        self.alarm_band.setVisible(False)
        # the normal zone below the threshold: also keeps a decade under the threshold in view, so a
        # healthy trace never sits on the plot's edge
        self.normal_band = pg.LinearRegionItem(orientation="horizontal", movable=False,
                                               brush=pg.mkBrush(46, 125, 50, 18), pen=pg.mkPen(None))
        self.normal_band.setVisible(False)
        self.score_plot.addItem(self.normal_band)
        self.score_plot.addItem(self.alarm_band)
        self.score_plot.addItem(self.threshold_line)
        self._threshold: float | None = None
        self._layout = layout
        self.shown = False

    def show(self, on: bool) -> None:
        """Put the column's plots into the layout (or take them out)."""
        if on == self.shown:
            return
        for row, plot in enumerate(self.plots):
            if on:
                self._layout.addItem(plot, row=row, col=self.col)
            else:
                self._layout.removeItem(plot)
        self.shown = on

    def set_device(self, device_id: str | None) -> None:
        suffix = f" — {device_id}" if device_id else ""
        self.wave_plot.setTitle("Vibration (g)" + suffix)
        self.spec_plot.setTitle("Amplitude spectrum (g)" + suffix)
        self.score_plot.setTitle("Anomaly score (log scale)" + suffix)

    def clear(self) -> None:
        for c in (*self.wave_curves, *self.spec_curves, self.score_curve):
            c.setData([], [])
        for item in (*self.markers, self.threshold_line, self.alarm_band, self.normal_band):
            item.setVisible(False)

    def decorate(self, feed: DeviceFeed, scores: np.ndarray) -> None:
        """Shaft markers from the device's own speed; threshold and alarm band on the log axis."""
        shaft = feed.shaft_hz
        for h, line in zip(HARMONICS, self.markers, strict=True):
            line.setVisible(bool(shaft))
            if shaft:
                line.setValue(h * shaft)
        thr = feed.threshold
        for item in (self.threshold_line, self.alarm_band, self.normal_band):
            item.setVisible(bool(thr))
        if thr:  # in log mode, items are placed in log10 view coordinates
            if thr != self._threshold:
                self._threshold = thr
                self.threshold_line.label.setFormat(f"threshold {thr:.3g}")
            self.threshold_line.setValue(math.log10(thr))
            top = max(thr * 10.0 ** ALARM_BAND_DECADES,
                      float(np.nanmax(scores[:, 1])) * ALARM_BAND_HEADROOM if len(scores) else 0.0)
            self.alarm_band.setRegion((math.log10(thr), math.log10(top)))
            low = min(thr / 10.0 ** NORMAL_BAND_DECADES,
                      float(np.nanmin(scores[:, 1])) / ALARM_BAND_HEADROOM if len(scores) else thr)
            self.normal_band.setRegion((math.log10(max(low, MIN_SCORE_SHOWN)), math.log10(thr)))

    def link_to(self, other: PlotColumn) -> None:
        """Same zoom and scale as `other`, so two machines compare at a glance."""
        for mine, theirs in zip(self.plots, other.plots, strict=True):
            mine.setXLink(theirs)
            mine.setYLink(theirs)
