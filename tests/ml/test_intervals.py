"""Wilson intervals against published values, and the evidence a model card's rates carry."""

from __future__ import annotations

import pytest

from app.ml import metrics
from app.ml.intervals import Rate, wilson_interval, windows_to_show_below


# Newcombe (1998), "Two-sided confidence intervals for the single proportion", Statistics in
# Medicine 17:857-872, table I, method 3 (Wilson score, no continuity correction), 4 decimals.
@pytest.mark.parametrize(("count", "total", "low", "high"), [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_interval_matches_newcombe_table(count, total, low, high):
    got_low, got_high = wilson_interval(count, total)
    assert got_low == pytest.approx(low, abs=6e-5)
    assert got_high == pytest.approx(high, abs=6e-5)


def test_wilson_interval_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)  # no evidence at all
    low, high = wilson_interval(14, 14)
    assert high == 1.0 and 0.78 < low < 0.79
    # symmetric: k of n and n-k of n mirror each other
    a, b = wilson_interval(3, 62)
    c, d = wilson_interval(59, 62)
    assert a == pytest.approx(1 - d) and b == pytest.approx(1 - c)


@pytest.mark.parametrize(("count", "total"), [(-1, 10), (11, 10), (1, -1)])
def test_wilson_interval_refuses_impossible_counts(count, total):
    with pytest.raises(ValueError, match="count <= total"):
        wilson_interval(count, total)


def test_zero_of_fourteen_is_not_a_zero_rate():
    """The issue's card: 0 false alarms in 14 windows; the upper bound is 21.5 %, not 0."""
    rate = Rate(0, 14)
    assert rate.value == 0.0
    assert rate.interval[1] == pytest.approx(0.2153, abs=1e-4)
    assert rate.describe() == "0/14 = 0.0 % (95 % CI 0.0-21.5 %)"
    assert rate.to_dict() == {"rate": 0.0, "count": 0, "n": 14, "ci95": [0.0, rate.interval[1]]}


def test_windows_needed_to_show_a_rate_below_a_limit():
    n = windows_to_show_below(0.01)
    assert n == 381
    assert wilson_interval(0, n)[1] < 0.01 <= wilson_interval(0, n - 1)[1]
    assert windows_to_show_below(0.05) == 73


def test_evidence_warning_says_how_much_more_to_record():
    # 14 evaluation windows of 94 in all (15 %), 0.32 s each
    text = metrics.evidence_warning(14, 0, 94, 0.32)
    assert text is not None
    assert "0/14 = 0.0 % (95 % CI 0.0-21.5 %)" in text and "381" in text
    more = (-(-381 * 94 // 14) - 94) * 0.32  # ceil(381 / share) windows in all, minus those we have
    assert f"record about {more:.0f} s more normal data" in text
    assert metrics.evidence_warning(400, 0, 2700, 0.32) is None  # enough evidence: no warning
    assert metrics.evidence_warning(400, 30, 2700, 0.32) is not None  # observed 7.5 %: cannot be under 1 %


def test_rate_fields_store_count_total_and_interval():
    fields = metrics.rate_fields("false_alarm_rate", 3, 62)
    assert fields["false_alarm_rate"] == pytest.approx(3 / 62)
    assert fields["false_alarm_rate_count"] == 3 and fields["false_alarm_rate_n"] == 62
    assert fields["false_alarm_rate_ci95"] == pytest.approx(list(wilson_interval(3, 62)))
    assert metrics.describe_rate(fields, "false_alarm_rate") == "3/62 = 4.8 % (95 % CI 1.7-13.3 %)"
    assert metrics.describe_rate({"false_alarm_rate": 0.0}, "false_alarm_rate") is None  # an old card


def test_card_rates_carry_counts_intervals_and_the_evidence_warning(trained):
    """The session's small model (200 normal windows, ~30 for evaluation) cannot show < 1 %."""
    m = trained.card["metrics"]
    for rate in ("false_alarm_rate", "false_alarm_rate_calibration", "precision", "recall"):
        count, total = m[f"{rate}_count"], m[f"{rate}_n"]
        assert m[rate] == pytest.approx(count / total if total else 0.0)
        assert m[f"{rate}_ci95"] == pytest.approx(list(wilson_interval(count, total)))
    assert m["false_alarm_rate_n"] == m["n_normal"] == trained.card["training"]["n_evaluation"]
    assert m["recall_n"] == m["n_fault"]
    warnings = trained.card["warnings"]
    assert len(warnings) == 1 and "too few to show it is under 1 %" in warnings[0]
    assert "s more normal data" in warnings[0]
