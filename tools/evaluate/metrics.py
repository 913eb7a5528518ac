"""Accuracy metrics with numpy only: top-1, confusion matrix, VOC-style mAP@0.5, F1."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class Box:
    """One box in pixels; ``score`` is 1.0 for ground truth."""

    x1: float
    y1: float
    x2: float
    y2: float
    class_id: int
    score: float = 1.0


def top1_accuracy(predicted: NDArray[np.integer], labels: NDArray[np.integer]) -> float:
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    if predicted.shape != labels.shape or predicted.size == 0:
        raise ValueError(
            f"top-1: expected equal non-empty shapes, got {predicted.shape} and {labels.shape}"
        )
    return float(np.mean(predicted == labels))


def confusion_matrix(
    predicted: NDArray[np.integer], labels: NDArray[np.integer], n_classes: int
) -> NDArray[np.int64]:
    """``m[true, predicted]`` counts."""
    m = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(m, (np.asarray(labels, np.intp), np.asarray(predicted, np.intp)), 1)
    return m


def iou(a: Box, b: Box) -> float:
    w = min(a.x2, b.x2) - max(a.x1, b.x1)
    h = min(a.y2, b.y2) - max(a.y1, b.y1)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0


def average_precision(recall: NDArray[np.float64], precision: NDArray[np.float64]) -> float:
    """VOC 2010+ AP: area under the precision envelope, all points."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def class_ap(
    predictions: Sequence[Sequence[Box]],
    truths: Sequence[Sequence[Box]],
    class_id: int,
    iou_threshold: float = 0.5,
) -> float | None:
    """AP of one class over images; None when the class has no ground truth box."""
    n_truth = sum(1 for boxes in truths for b in boxes if b.class_id == class_id)
    if n_truth == 0:
        return None
    found = [
        (p.score, image, p)
        for image, boxes in enumerate(predictions)
        for p in boxes
        if p.class_id == class_id
    ]
    found.sort(key=lambda item: -item[0])
    used: set[tuple[int, int]] = set()
    tp = np.zeros(len(found))
    for k, (_, image, p) in enumerate(found):
        best, best_j = iou_threshold, -1
        for j, t in enumerate(truths[image]):
            if t.class_id != class_id or (image, j) in used:
                continue
            overlap = iou(p, t)
            if overlap >= best:
                best, best_j = overlap, j
        if best_j >= 0:
            used.add((image, best_j))
            tp[k] = 1.0
    cum_tp = np.cumsum(tp)
    recall = cum_tp / n_truth
    precision = cum_tp / np.arange(1, len(found) + 1)
    return average_precision(recall, precision)


def mean_average_precision(
    predictions: Sequence[Sequence[Box]],
    truths: Sequence[Sequence[Box]],
    n_classes: int,
    iou_threshold: float = 0.5,
) -> float:
    """Mean of the per-class APs over classes that have ground truth (mAP@``iou_threshold``)."""
    if len(predictions) != len(truths):
        raise ValueError(f"mAP: {len(predictions)} predicted images for {len(truths)} labelled")
    aps = [class_ap(predictions, truths, c, iou_threshold) for c in range(n_classes)]
    present = [ap for ap in aps if ap is not None]
    if not present:
        raise ValueError("mAP: the labelled set has no ground-truth boxes")
    return float(np.mean(present))


def f1_score(predicted: NDArray[np.bool_], labels: NDArray[np.bool_]) -> float:
    """F1 of the positive class; 1.0 when there are no positives and none are predicted."""
    p, t = np.asarray(predicted, bool), np.asarray(labels, bool)
    if p.shape != t.shape:
        raise ValueError(f"F1: shapes differ: {p.shape} and {t.shape}")
    tp = int(np.sum(p & t))
    denominator = int(np.sum(p)) + int(np.sum(t))
    return 1.0 if denominator == 0 else 2.0 * tp / denominator
