"""The alarm threshold's calibration (app.ml.threshold): a bound that holds for the rate it is
designed for on log-normal scores, widens with fewer windows, and falls back to the empirical rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.ml import threshold


def test_tolerance_factor_widens_with_fewer_windows_and_tends_to_the_quantile():
    z = 4.753424308822899  # the standard normal's 1 - 1e-6 quantile
    ks = [threshold.tolerance_factor(n, 1 - 1e-6) for n in (3, 20, 38, 75, 1000)]
    assert ks == sorted(ks, reverse=True) and ks[-1] > z
    assert threshold.tolerance_factor(10**7, 1 - 1e-6) == pytest.approx(z, rel=1e-3)
    assert threshold.tolerance_factor(2, 1 - 1e-6) == math.inf  # no finite bound from two windows


def test_bound_covers_its_design_rate_on_log_normal_scores():
    """Over many calibration samples of 38 log-normal scores, the bound for 1e-3 is exceeded by a
    fresh score with probability under 1e-3 in at least ~95 % of samples (the tolerance promise)."""
    rng = np.random.default_rng(7)
    rate, trials, mu, sigma = 1e-3, 400, -0.25, 0.3
    true_quantile = math.exp(mu + sigma * 3.0902323061678132)  # z of 1 - 1e-3
    covered = 0
    for _ in range(trials):
        calib = np.exp(rng.normal(mu, sigma, 38))
        covered += threshold.lognormal_tail_bound(calib, rate) >= true_quantile
    assert covered / trials >= 0.92


def test_calibrate_takes_the_larger_rule_and_says_which():
    rng = np.random.default_rng(1)
    scores = np.exp(rng.normal(0.0, 0.3, 75))
    t = threshold.calibrate(scores, percentile=99.5, margin=1.5)
    assert t.rule == "tail bound" and t.value == t.tail > t.empirical
    assert t.empirical == pytest.approx(np.percentile(scores, 99.5) * 1.5)
    loose = threshold.calibrate(scores, percentile=99.5, margin=20.0)
    assert loose.rule == "percentile x margin" and loose.value == loose.empirical > loose.tail
    off = threshold.calibrate(scores, percentile=99.5, margin=1.5, rate=0.0)
    assert off.tail is None and off.value == off.empirical


def test_too_few_or_zero_scores_fall_back_to_the_empirical_rule():
    zeros = np.zeros(40)
    t = threshold.calibrate(zeros, percentile=99.5, margin=1.5)
    assert t.tail is None and t.rule == "percentile x margin" and t.value == 0.0
    few = threshold.calibrate(np.array([1.0, 1.2, 0.9]), percentile=99.5, margin=1.5)
    assert few.tail is None and few.value == pytest.approx(np.percentile([1.0, 1.2, 0.9], 99.5) * 1.5)


def test_a_tail_bound_from_few_calibration_windows_is_flagged_with_the_seconds_to_record():
    """30 s of one machine (94 windows, 19 of them calibration): the card says the threshold may move
    several times over in another training, and that 30 s more (to 38 calibration windows) steadies it."""
    rng = np.random.default_rng(3)
    window_s = 1024 / 3200
    few = threshold.calibrate(np.exp(rng.normal(0.0, 0.3, 19)), percentile=99.5, margin=1.5)
    assert few.rule == threshold.TAIL_RULE
    text = threshold.spread_warning(few, 19, 94, window_s)
    assert text is not None and "only 19 calibration windows" in text and "faint faults" in text
    assert "record about 30 s more normal data" in text
    assert threshold.spread_warning(few, threshold.STEADY_TAIL_WINDOWS, 188, window_s) is None
    # the percentile rule set it: the tail's spread did not
    loose = threshold.calibrate(np.exp(rng.normal(0.0, 0.3, 19)), percentile=99.5, margin=50.0)
    assert threshold.spread_warning(loose, 19, 94, window_s) is None
