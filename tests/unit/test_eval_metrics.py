"""tools.evaluate.metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from tools.evaluate.metrics import (
    Box,
    class_ap,
    confusion_matrix,
    f1_score,
    iou,
    mean_average_precision,
    top1_accuracy,
)

GT_A = Box(0, 0, 10, 10, 0)
GT_B = Box(20, 20, 30, 30, 0)


def test_top1_and_confusion() -> None:
    predicted, labels = np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])
    assert top1_accuracy(predicted, labels) == 0.75
    assert confusion_matrix(predicted, labels, 3).tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="equal non-empty"):
        top1_accuracy(np.array([0]), np.array([0, 1]))


@pytest.mark.parametrize(
    ("predicted", "labels", "expected"),
    [
        ([1, 1, 0, 0], [1, 0, 1, 0], 0.5),  # tp 1, fp 1, fn 1 → 2/(2+2)
        ([1, 1, 1, 0], [1, 1, 1, 0], 1.0),
        ([0, 0, 0], [1, 1, 0], 0.0),
        ([0, 0], [0, 0], 1.0),  # nothing to find, nothing flagged
    ],
)
def test_f1(predicted: list[int], labels: list[int], expected: float) -> None:
    assert f1_score(np.array(predicted, bool), np.array(labels, bool)) == pytest.approx(expected)


def test_iou() -> None:
    assert iou(Box(0, 0, 10, 10, 0), Box(5, 0, 15, 10, 0)) == pytest.approx(50 / 150)
    assert iou(GT_A, GT_B) == 0.0


def test_voc_ap_by_hand() -> None:
    # ranked: TP (r .5, p 1), FP (r .5, p .5), TP (r 1, p 2/3) → AP = .5*1 + .5*2/3
    predictions = [
        [Box(0, 0, 10, 10, 0, 0.9), Box(50, 50, 60, 60, 0, 0.8), Box(21, 21, 30, 30, 0, 0.7)]
    ]
    assert class_ap(predictions, [[GT_A, GT_B]], 0) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_duplicate_detection_is_a_false_positive() -> None:
    predictions = [[Box(0, 0, 10, 10, 0, 0.9), Box(0, 0, 10, 10, 0, 0.8)]]
    # TP (r 1, p 1) then FP (r 1, p .5): AP 1; the duplicate does not count twice
    assert class_ap(predictions, [[GT_A]], 0) == pytest.approx(1.0)
    assert class_ap([[Box(0, 0, 10, 10, 0, 0.9)]], [[Box(0, 0, 10, 10, 0)], [GT_A]], 0) == 0.5


def test_map_averages_classes_with_ground_truth() -> None:
    predictions = [[Box(0, 0, 10, 10, 0, 0.9)], [Box(0, 0, 5, 5, 2, 0.9)]]
    truths = [[GT_A], [Box(20, 20, 30, 30, 1)]]
    # class 0: AP 1; class 1: missed, AP 0; class 2: no ground truth, left out
    assert mean_average_precision(predictions, truths, 3) == pytest.approx(0.5)
    assert class_ap(predictions, truths, 2) is None
    with pytest.raises(ValueError, match="no ground-truth"):
        mean_average_precision([[]], [[]], 2)
