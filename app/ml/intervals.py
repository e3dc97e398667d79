"""Honest rates: a count out of a total, with its Wilson score 95 % interval.

A false-alarm rate of 0 measured on 14 windows says little: its 95 % interval runs up to 21.5 %.
Every rate on a model card or in a fit check goes through `Rate`, so it always carries its count,
its total and the interval; `windows_to_show_below` says how many windows it takes before an
observed zero bounds the rate under a limit (the "record this much more" advice of a card).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Two-sided 95 %: the 97.5th percentile of the standard normal distribution.
Z_95 = 1.959963984540054


def wilson_interval(count: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of the proportion `count / total`; (0.0, 1.0) when total is 0.

    Unlike the normal (Wald) interval it never leaves [0, 1] and does not collapse to a point when
    count is 0 or total: the case of a false-alarm rate."""
    count, total = int(count), int(total)
    if total < 0 or not 0 <= count <= max(total, 0):
        raise ValueError(f"need 0 <= count <= total, got {count} of {total}")
    if total == 0:
        return 0.0, 1.0
    p = count / total
    z2 = z * z
    centre = p + z2 / (2 * total)
    spread = z * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total))
    denom = 1 + z2 / total
    low = 0.0 if count == 0 else max(0.0, (centre - spread) / denom)
    high = 1.0 if count == total else min(1.0, (centre + spread) / denom)
    return low, high


def windows_to_show_below(limit: float, z: float = Z_95) -> int:
    """Smallest number of windows whose observed zero count puts the upper 95 % bound below `limit`
    (e.g. 381 windows for 1 %)."""
    if not 0 < limit < 1:
        raise ValueError("limit must be in (0, 1)")
    # upper bound at count 0 is z^2 / (n + z^2): below limit when n > z^2 (1 - limit) / limit
    n = math.floor(z * z * (1 - limit) / limit) + 1
    while wilson_interval(0, n, z)[1] >= limit:  # guard against float rounding at the boundary
        n += 1
    return n


def more_recording_s(needed: int, n_subset: int, n_total_windows: int, window_s: float) -> float | None:
    """Seconds more of normal recording for a held-out subset (`n_subset` of `n_total_windows`,
    keeping its share of them) to reach `needed` windows; None without a share to scale by."""
    if n_subset <= 0 or n_total_windows <= 0:
        return None
    needed_total = -(-needed * n_total_windows // n_subset)  # integer ceiling
    return max(0, needed_total - n_total_windows) * window_s


@dataclass(frozen=True)
class Rate:
    """`count` of `total`, e.g. 3 false alarms in 62 windows, with its 95 % Wilson interval."""

    count: int
    total: int

    @property
    def value(self) -> float:
        return self.count / self.total if self.total else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.count, self.total)

    def to_dict(self) -> dict:
        low, high = self.interval
        return {"rate": self.value, "count": self.count, "n": self.total, "ci95": [low, high]}

    def describe(self) -> str:
        """'3/62 = 4.8 % (95 % CI 1.7-13.3 %)'."""
        low, high = self.interval
        return (f"{self.count}/{self.total} = {_pct(self.value)} "
                f"(95 % CI {_pct(low, unit=False)}-{_pct(high)})")


def _pct(x: float, unit: bool = True) -> str:
    text = f"{100 * x:.1f}" if x >= 0.001 or x == 0 else f"{100 * x:.2f}"
    return text + (" %" if unit else "")
