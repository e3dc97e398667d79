"""Minimal inline-SVG line plots with vertical markers, for the HTML report: no plotting library
needed to read a report in any browser (and nothing to install on a plant-floor laptop)."""

from __future__ import annotations

import itertools
from html import escape

import numpy as np

# Plot size in CSS pixels and its margins (left for the y labels, bottom for the x labels).
WIDTH, HEIGHT = 720, 220
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 56, 12, 12, 34
# A trace is thinned to at most this many points (min/max per pixel column keeps every peak).
MAX_POINTS = 2 * (WIDTH - MARGIN_L - MARGIN_R)
TICKS = 6
# Marker labels are staggered over this many rows, this many pixels apart.
LABEL_ROWS, LABEL_STEP = 3, 11


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= MAX_POINTS:
        return x, y
    cols = MAX_POINTS // 2
    edges = np.linspace(0, len(x), cols + 1).astype(int)
    xs, ys = [], []
    for a, b in itertools.pairwise(edges):
        seg = y[a:b]
        lo, hi = int(np.argmin(seg)), int(np.argmax(seg))
        for i in sorted({lo, hi}):
            xs.append(x[a + i])
            ys.append(seg[i])
    return np.asarray(xs), np.asarray(ys)


def line_plot(x: np.ndarray, y: np.ndarray, x_max: float, markers: list[tuple[float, str, str]],
              x_label: str, y_label: str) -> str:
    """An SVG element: y over x in [0, x_max], with vertical markers (x, label, colour)."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    keep = x <= x_max
    x, y = _thin(x[keep], y[keep])
    y_max = float(y.max()) * 1.1 if len(y) and y.max() > 0 else 1.0
    pw, ph = WIDTH - MARGIN_L - MARGIN_R, HEIGHT - MARGIN_T - MARGIN_B

    def px(v: float) -> float:
        return MARGIN_L + pw * v / x_max

    def py(v: float) -> float:
        return MARGIN_T + ph * (1.0 - v / y_max)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="10">',
             f'<rect x="{MARGIN_L}" y="{MARGIN_T}" width="{pw}" height="{ph}" fill="white" stroke="#999"/>']
    for i in range(TICKS + 1):
        xv, yv = x_max * i / TICKS, y_max * i / TICKS
        parts.append(f'<text x="{px(xv):.1f}" y="{HEIGHT - MARGIN_B + 12}" text-anchor="middle">{xv:.0f}</text>')
        parts.append(f'<text x="{MARGIN_L - 4}" y="{py(yv) + 3:.1f}" text-anchor="end">{yv:.3g}</text>')
    parts.append(f'<text x="{MARGIN_L + pw / 2}" y="{HEIGHT - 4}" text-anchor="middle">{escape(x_label)}</text>')
    parts.append(f'<text x="10" y="{MARGIN_T + ph / 2}" transform="rotate(-90 10 {MARGIN_T + ph / 2})" '
                 f'text-anchor="middle">{escape(y_label)}</text>')
    for i, (xv, label, colour) in enumerate(markers):
        if 0 <= xv <= x_max:
            parts.append(f'<line x1="{px(xv):.1f}" x2="{px(xv):.1f}" y1="{MARGIN_T}" y2="{MARGIN_T + ph}" '
                         f'stroke="{colour}" stroke-dasharray="3,3"/>')
            label_y = MARGIN_T + 10 + LABEL_STEP * (i % LABEL_ROWS)  # staggered: neighbours do not overprint
            parts.append(f'<text x="{px(xv) + 2:.1f}" y="{label_y}" fill="{colour}">{escape(label)}</text>')
    points = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(x, y, strict=True))
    parts.append(f'<polyline fill="none" stroke="#1f5fa8" stroke-width="1" points="{points}"/>')
    parts.append("</svg>")
    return "".join(parts)
