"""Detection metrics of an anomaly score, in numpy (no scikit-learn dependency for three formulas)."""

from __future__ import annotations

import numpy as np


def roc_auc(normal_scores: np.ndarray, fault_scores: np.ndarray) -> float:
    """Probability that a fault window scores above a normal one (ties count half): the
    Mann-Whitney form of the area under the ROC curve."""
    normal = np.asarray(normal_scores, np.float64).ravel()
    fault = np.asarray(fault_scores, np.float64).ravel()
    if len(normal) == 0 or len(fault) == 0:
        raise ValueError("ROC AUC needs both normal and fault scores")
    values = np.concatenate([normal, fault])
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    # average ranks over ties
    sorted_vals = values[order]
    start = 0
    while start < len(sorted_vals):
        end = start
        while end + 1 < len(sorted_vals) and sorted_vals[end + 1] == sorted_vals[start]:
            end += 1
        if end > start:
            ranks[order[start : end + 1]] = (start + end + 2) / 2.0
        start = end + 1
    rank_sum = ranks[len(normal):].sum()
    u = rank_sum - len(fault) * (len(fault) + 1) / 2.0
    return float(u / (len(normal) * len(fault)))


def precision_recall(normal_scores: np.ndarray, fault_scores: np.ndarray,
                     threshold: float) -> tuple[float, float]:
    """(precision, recall) of the alarm `score > threshold`, fault being the positive class."""
    normal = np.asarray(normal_scores).ravel()
    fault = np.asarray(fault_scores).ravel()
    true_pos = int(np.sum(fault > threshold))
    false_pos = int(np.sum(normal > threshold))
    precision = true_pos / (true_pos + false_pos) if true_pos + false_pos else 0.0
    recall = true_pos / len(fault) if len(fault) else 0.0
    return float(precision), float(recall)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; 1.0 for two identical constant vectors, 0.0 when only one is constant."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    sa, sb = a.std(), b.std()
    if sa == 0 or sb == 0:
        return 1.0 if sa == sb and np.allclose(a, b) else 0.0
    return float(np.mean((a - a.mean()) * (b - b.mean())) / (sa * sb))


# A card's false-alarm rate is "shown" low when its 95 % upper bound is under this: at one window a
# second, 1 % is still ~36 false alarms an hour, so anything looser is not worth claiming.
FALSE_ALARM_CLAIM_LIMIT = 0.01


def rate_fields(prefix: str, count: int, total: int) -> dict:
    """Card entries of one rate: `{prefix}` (the fraction), `{prefix}_count`, `{prefix}_n` and
    `{prefix}_ci95` ([low, high], Wilson): a rate is never stored without its evidence."""
    from app.ml.intervals import Rate

    rate = Rate(int(count), int(total))
    return {prefix: rate.value, f"{prefix}_count": rate.count, f"{prefix}_n": rate.total,
            f"{prefix}_ci95": list(rate.interval)}


def describe_rate(card_metrics: dict, prefix: str) -> str | None:
    """'0/14 = 0.0 % (95 % CI 0.0-21.5 %)' for a rate stored by `rate_fields`; None for an old card
    (rate without count)."""
    from app.ml.intervals import Rate

    count, total = card_metrics.get(f"{prefix}_count"), card_metrics.get(f"{prefix}_n")
    if count is None or total is None:
        return None
    return Rate(int(count), int(total)).describe()


def evidence_warning(n_evaluation: int, false_alarms: int, n_total_windows: int,
                     window_s: float, limit: float = FALSE_ALARM_CLAIM_LIMIT) -> str | None:
    """A sentence when `n_evaluation` windows cannot show a false-alarm rate under `limit` (its 95 %
    upper bound stays above it), with how many seconds more of normal recording would; None when
    the evidence is enough. Assumes the evaluation set keeps its share of all windows."""
    from app.ml.intervals import Rate, more_recording_s, windows_to_show_below

    rate = Rate(int(false_alarms), int(n_evaluation))
    high = rate.interval[1]
    if high < limit:
        return None
    needed = windows_to_show_below(limit)
    text = (f"false-alarm rate {rate.describe()} on {n_evaluation} held-out windows: too few to show it is "
            f"under {100 * limit:g} % (that takes at least {needed} evaluation windows with no false alarm")
    more_s = more_recording_s(needed, n_evaluation, n_total_windows, window_s)
    if more_s is not None:
        text += f"; record about {more_s:.0f} s more normal data"
    return text + ")"
