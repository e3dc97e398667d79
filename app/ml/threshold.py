"""The alarm threshold from a model's scores on held-out normal windows.

A device scores one window a second, 86,400 a machine-day; the product promises at most one false
alarm a machine-day, a per-window rate near 1e-5. A few dozen calibration windows cannot show such
a rate by counting: their 99.5th percentile is about their maximum, and the old rule (that
percentile x 1.5) measured 70 false alarms in 180,000 fresh normal windows of three virtual machines
(34 a machine-day). So the threshold is also bounded from the shape of the scores: the log of an
autoencoder's reconstruction error is close to normal, and a one-sided normal *tolerance bound*
(the quantile that covers `1 - rate` of the distribution with 95 % confidence, given only n
windows: Natrella's k factor) widens with fewer windows instead of trusting a small sample's spread.
The empirical rule stays as a floor for score distributions that are not log-normal at all.

Measured tail (60,000 fresh normal windows each of sim-001/003/005, models trained on 120 s): the
log-normal fit holds to the 99.99th percentile, beyond it the real tail is heavier (the largest of
60,000 was 3.7 against a log-normal 2.7). Hence the design rate is 1e-6 a window, ten times under
the promise: a bound designed for 1e-5 let 1 of those 180,000 windows alarm, this one none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from app.ml.intervals import more_recording_s

# Per-window false-alarm probability the tail bound is designed for: one in ~11.6 machine-days at one
# window a second, a factor 10 under the promised one a day for the tail beyond the log-normal (above).
DESIGN_FALSE_ALARM_RATE = 1e-6
# Confidence that the bound covers 1 - rate of the true distribution, given the calibration sample.
TOLERANCE_CONFIDENCE = 0.95
# Fewer positive scores than this give no usable spread: the empirical rule alone sets the threshold.
MIN_TAIL_WINDOWS = 8
# Scores at or below this are exact reconstructions (int8 can give 0); they carry no log-scale spread.
MIN_POSITIVE_SCORE = 1e-12
# Calibration windows from which the tail bound comes out steady between trainings of one machine:
# benchmarks/threshold_spread.py measured the thresholds of 15 trainings each spreading 3.6x from 19
# calibration windows (30 s recorded), 2.3x from 38 (60 s) and 1.6x from 75 (120 s). Fewer than this
# and the card warns: a threshold several times too high hides faint faults and misfits alike.
STEADY_TAIL_WINDOWS = 38
TAIL_RULE = "tail bound"
EMPIRICAL_RULE = "percentile x margin"


@dataclass(frozen=True)
class Threshold:
    """The threshold and both rules that could set it (the card shows all three)."""

    value: float
    percentile_score: float  # the calibration scores' `percentile`
    empirical: float  # percentile_score x margin
    tail: float | None  # the log-normal tolerance bound, None with too few positive scores
    rule: str  # TAIL_RULE or EMPIRICAL_RULE: which one set `value`

    def to_dict(self) -> dict:
        return {"value": self.value, "percentile_score": self.percentile_score, "empirical": self.empirical,
                "tail_bound": self.tail, "rule": self.rule}


def tolerance_factor(n: int, coverage: float, confidence: float = TOLERANCE_CONFIDENCE) -> float:
    """One-sided normal tolerance factor k: mean + k * sd of n samples exceeds the `coverage` quantile
    with probability `confidence` (Natrella's approximation, NIST/SEMATECH handbook 7.2.6.3)."""
    if n < 2:
        raise ValueError(f"a tolerance bound needs at least 2 samples, got {n}")
    z_p = NormalDist().inv_cdf(coverage)
    z_g = NormalDist().inv_cdf(confidence)
    a = 1 - z_g * z_g / (2 * (n - 1))
    b = z_p * z_p - z_g * z_g / n
    if a <= 0:  # too few samples for the approximation: no finite bound
        return math.inf
    return (z_p + math.sqrt(max(z_p * z_p - a * b, 0.0))) / a


def lognormal_tail_bound(scores: np.ndarray, rate: float = DESIGN_FALSE_ALARM_RATE,
                         confidence: float = TOLERANCE_CONFIDENCE) -> float | None:
    """Score exceeded by at most `rate` of normal windows (with `confidence`) if log-scores are normal."""
    positive = np.asarray(scores, np.float64)
    positive = positive[positive > MIN_POSITIVE_SCORE]
    if len(positive) < MIN_TAIL_WINDOWS:
        return None
    logs = np.log(positive)
    k = tolerance_factor(len(logs), 1.0 - rate, confidence)
    return float(math.exp(logs.mean() + k * logs.std(ddof=1))) if math.isfinite(k) else None


def calibrate(scores: np.ndarray, *, percentile: float, margin: float,
              rate: float = DESIGN_FALSE_ALARM_RATE) -> Threshold:
    """The larger of the empirical rule (percentile x margin) and the log-normal tail bound."""
    scores = np.asarray(scores, np.float64)
    p_value = float(np.percentile(scores, percentile))
    empirical = p_value * margin
    tail = lognormal_tail_bound(scores, rate) if rate > 0 else None
    if tail is not None and tail > empirical:
        return Threshold(tail, p_value, empirical, tail, TAIL_RULE)
    return Threshold(empirical, p_value, empirical, tail, EMPIRICAL_RULE)


def spread_warning(threshold: Threshold, n_calibration: int, n_total_windows: int, window_s: float) -> str | None:
    """A sentence for the card when the tail bound set the threshold from fewer than
    STEADY_TAIL_WINDOWS calibration windows, with how many seconds more of normal recording would
    give it enough (the calibration set keeping its share of all windows); None otherwise."""
    if threshold.rule != TAIL_RULE or n_calibration >= STEADY_TAIL_WINDOWS:
        return None
    text = (f"threshold {threshold.value:.3g} rests on the spread of only {n_calibration} calibration windows: from "
            f"fewer than {STEADY_TAIL_WINDOWS} it can come out several times higher or lower in another training "
            "on the same machine, and too high hides faint faults")
    more_s = more_recording_s(STEADY_TAIL_WINDOWS, n_calibration, n_total_windows, window_s)
    if more_s is not None:
        text += f" (record about {more_s:.0f} s more normal data)"
    return text


def lognormal_exceedance(scores: np.ndarray, threshold: float) -> float | None:
    """Fraction of normal windows predicted above `threshold` from a log-normal fit of `scores` (a
    point estimate: where the sample holds no alarm, the fitted tail still says how close it runs);
    None with too few positive scores."""
    positive = np.asarray(scores, np.float64)
    positive = positive[positive > MIN_POSITIVE_SCORE]
    if len(positive) < MIN_TAIL_WINDOWS or threshold <= 0:
        return None
    logs = np.log(positive)
    spread = float(logs.std(ddof=1))
    if spread <= 0:
        return 0.0 if float(positive[0]) <= threshold else 1.0
    return 1.0 - NormalDist(float(logs.mean()), spread).cdf(math.log(threshold))
