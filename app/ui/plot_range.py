"""A plot's y range that follows its data without re-fitting on every frame.

pyqtgraph's auto-range computes every curve's bounds and, as the range moves with each new window
of samples, regenerates the axis ticks on every redraw: about a third of the live view's drawing
time (benchmarks/gui_responsiveness.py --profile). Here the range grows at once when data leave it
and shrinks at most every SHRINK_INTERVAL_S when the data use little of it, so most frames keep the
axis as it was. A zoom or pan by the user stops the fitting until the view shows other devices.
"""

from __future__ import annotations

import math
import time

import numpy as np

# The range shrinks to the data at most this often (it grows at once).
SHRINK_INTERVAL_S = 1.0
# ... and only when the data span less than this share of it.
SHRINK_BELOW = 0.5
# Room around the data, as a share of their span.
PADDING = 0.1
# A flat signal still gets a range this tall.
MIN_SPAN = 1e-3


class StickyYRange:
    """Fits `plot`'s y range to the data given per key (device) with `include`, on `apply`."""

    def __init__(self, plot, zero_based: bool = False) -> None:
        self.plot = plot
        self.zero_based = zero_based  # amplitude spectra: the range starts at 0
        self.manual = False
        self._bounds: dict[str, tuple[float, float]] = {}
        self._range: tuple[float, float] | None = None
        self._shrunk_at = 0.0
        plot.enableAutoRange(y=False)
        plot.getViewBox().sigRangeChangedManually.connect(self._user_moved)

    def _user_moved(self, *_args) -> None:
        self.manual = True

    def reset(self) -> None:
        """Other devices are shown: fit afresh (and again after a user's zoom)."""
        self.manual = False
        self._bounds.clear()
        self._range = None

    def include(self, key: str, values: np.ndarray) -> None:
        """The newest data drawn for `key` (NaNs, the gaps of lost windows, are ignored)."""
        finite = values[np.isfinite(values)] if values.size else values
        if finite.size:
            self._bounds[key] = (float(finite.min()), float(finite.max()))

    def forget(self, key: str) -> None:
        self._bounds.pop(key, None)

    def apply(self, now: float | None = None) -> bool:
        """Set the range if the data left it, or (now and then) use little of it; True when set."""
        if self.manual or not self._bounds:
            return False
        lo = min(b[0] for b in self._bounds.values())
        hi = max(b[1] for b in self._bounds.values())
        if self.zero_based:
            lo = 0.0
        span = max(hi - lo, MIN_SPAN)
        now = time.monotonic() if now is None else now
        current = self._range
        if current is not None:
            inside = current[0] <= lo and hi <= current[1]
            roomy = span < SHRINK_BELOW * (current[1] - current[0])
            if inside and not (roomy and now - self._shrunk_at >= SHRINK_INTERVAL_S):
                return False
        pad = span * PADDING
        new = (lo if self.zero_based else lo - pad, hi + pad)
        if not all(math.isfinite(v) for v in new):
            return False
        self._range, self._shrunk_at = new, now
        self.plot.setYRange(*new, padding=0)
        return True
