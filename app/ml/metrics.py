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
