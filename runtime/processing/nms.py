"""Greedy non-maximum suppression in numpy, class-agnostic or per class.

Boxes are ``x1, y1, x2, y2`` in any consistent pixel space. A box is suppressed when its IoU with
an already kept, higher-scored box is strictly greater than ``iou_threshold`` (as torchvision
does). Ties in score keep the lower index first, so results are deterministic.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def box_iou(a: NDArray[np.floating], b: NDArray[np.floating]) -> NDArray[np.float64]:
    """Pairwise IoU (N x M) of Nx4 and Mx4 boxes. Boxes with no area have IoU 0 with everything."""
    a64 = _as_boxes(a, "a")
    b64 = _as_boxes(b, "b")
    lt = np.maximum(a64[:, None, :2], b64[None, :, :2])
    rb = np.minimum(a64[:, None, 2:], b64[None, :, 2:])
    wh = np.clip(rb - lt, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = _areas(a64)[:, None] + _areas(b64)[None, :] - inter
    out: NDArray[np.float64] = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return out


def nms(
    boxes: NDArray[np.floating],
    scores: NDArray[np.floating],
    iou_threshold: float,
    max_out: int,
) -> NDArray[np.intp]:
    """Indices of the boxes kept, highest score first, at most ``max_out`` of them.

    Vectorised per kept box: each iteration compares the best remaining box with all the others
    at once, so the Python loop runs at most ``max_out`` times.
    """
    b = _as_boxes(boxes, "boxes")
    s = _as_scores(scores, len(b))
    if max_out < 0:
        raise ValueError(f"max_out must be >= 0, got {max_out}")
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = _areas(b)
    order = np.argsort(-s, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_out:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0.0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0.0, None)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.intp)


def batched_nms(
    boxes: NDArray[np.floating],
    scores: NDArray[np.floating],
    class_ids: NDArray[np.integer],
    iou_threshold: float,
    max_out: int,
) -> NDArray[np.intp]:
    """Per-class NMS: boxes of different classes never suppress each other.

    Uses the coordinate-offset trick: each class is shifted by a whole multiple of the (integer)
    extent of all boxes, so boxes of different classes can't overlap, and one NMS pass does all
    classes. Class ids are first made dense (0..K-1) to keep the offsets small.
    """
    b = _as_boxes(boxes, "boxes")
    ids = np.asarray(class_ids)
    if ids.shape != (len(b),) or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            f"class_ids: expected {len(b)} integers, got shape {ids.shape} dtype {ids.dtype}"
        )
    if len(b) == 0:
        return nms(b, scores, iou_threshold, max_out)
    _, dense = np.unique(ids, return_inverse=True)
    span = np.ceil(b.max() - b.min()) + 1.0
    shifted = b + (dense.reshape(-1).astype(np.float64) * span)[:, None]
    return nms(shifted, scores, iou_threshold, max_out)


def _as_boxes(boxes: NDArray[np.floating], name: str) -> NDArray[np.float64]:
    b = np.asarray(boxes)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{name}: expected an Nx4 array of x1,y1,x2,y2 boxes, got shape {b.shape}")
    b64 = b.astype(np.float64, copy=False)
    if not np.isfinite(b64).all():
        raise ValueError(f"{name}: box coordinates must be finite")
    return b64


def _as_scores(scores: NDArray[np.floating], n: int) -> NDArray[np.float64]:
    s = np.asarray(scores)
    if s.shape != (n,):
        raise ValueError(f"scores: expected shape ({n},) to match the boxes, got {s.shape}")
    s64 = s.astype(np.float64, copy=False)
    if not np.isfinite(s64).all():
        raise ValueError("scores must be finite")
    return s64


def _areas(b: NDArray[np.float64]) -> NDArray[np.float64]:
    out: NDArray[np.float64] = np.clip(b[:, 2] - b[:, 0], 0.0, None) * np.clip(
        b[:, 3] - b[:, 1], 0.0, None
    )
    return out
