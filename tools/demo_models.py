"""Build the demo model bundles from generated scenes; nothing is downloaded.

* ``demo-hazard-classifier``: normal / smoke / fire, a pooled-colour MLP trained with numpy.
* ``demo-hazard-detector``: one class "hazard" (cones, spills) in the Ultralytics YOLO output
  layout, a logistic objectness per grid anchor trained with numpy.
* ``mobilenetv2-bench``: MobileNetV2 with random weights, for realistic benchmark speed.
* ``demo-pump-anomaly``: PCA on generated pump sensor data (``tools/demo_sensor_model.py``).

Training tensors are made by the runtime's own :class:`Preprocessor` from 640x480 renders, so
the models see in training exactly what they see in service. Every random choice is seeded and
training is full-batch in float64, so a build gives the same bytes every time on a machine.

    python -m tools.demo_models [--out models] [--only NAME] [--overwrite]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from runtime.manifest import InputSpec
from runtime.processing.nms import box_iou
from runtime.processing.postprocess.yolo import YoloPostprocessor
from runtime.processing.preprocess import Preprocessor
from tools.bundle import MODEL_FILE, write_bundle
from tools.demo_sensor_model import PUMP_NAME, build_demo_pump_model
from tools.demo_tflite_models import TFLITE_CLASSIFIER_NAME, build_demo_tflite_classifier
from tools.onnx_builders import (
    colour_pool,
    grid_anchor_boxes,
    grid_detector_onnx,
    mlp_classifier_onnx,
    mobilenet_v2_onnx,
    parameter_count,
    pooled_features,
    serialize,
)
from tools.scenes import SCENE_KINDS, SceneKind, render_detection_scene, render_scene

logger = logging.getLogger(__name__)

GENERATOR = "tools.demo_models"
CLASSIFIER_NAME = "demo-hazard-classifier"
DETECTOR_NAME = "demo-hazard-detector"
BENCHMARK_NAME = "mobilenetv2-bench"
VERSION = "1.0.0"
FRAME_SIZE = (640, 480)
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# seed streams: each data set draws from its own, so resizing one leaves the others unchanged
CALIBRATION_STREAM, TRAIN_STREAM, HELDOUT_STREAM, DET_TRAIN_STREAM, DET_HELDOUT_STREAM = range(5)

_T = TypeVar("_T")
_R = TypeVar("_R")

ColourBank = tuple[tuple[tuple[float, float, float], tuple[float, ...]], ...]
"""(direction over r,g,b in [0,1], thresholds): one feature ReLU(direction . rgb - t) each."""

# raw colour, plus the orange / yellow / bright white of flames: these survive average pooling
# far better than raw pixels when a flame covers only a few input pixels
CLASSIFIER_BANK: ColourBank = (
    ((1.0, 0.0, 0.0), (0.0,)),
    ((0.0, 1.0, 0.0), (0.0,)),
    ((0.0, 0.0, 1.0), (0.0,)),
    ((1.0, -1.0, 0.0), (0.2, 0.4)),
    ((1.0, 0.0, -1.0), (0.4, 0.6)),
    ((0.0, 1.0, -1.0), (0.2, 0.35)),
    ((1 / 3, 1 / 3, 1 / 3), (0.6, 0.75, 0.85)),
)
CLASSIFIER_POOL = 8

# orange and red score high on r-g and r-b; cardboard (r > g > b but close) and the yellow
# safety stripes (r ~ g) do not; the constant channel lets the head see the zero-padded border
DETECTOR_BANK: ColourBank = (
    ((1.0, -1.0, 0.0), (0.1, 0.2, 0.3, 0.45)),
    ((1.0, 0.0, -1.0), (0.3, 0.5, 0.7)),
    ((0.0, 1.0, -1.0), (0.1, 0.25)),
    ((1.0, 0.0, 0.0), (0.6, 0.8)),
    ((1 / 3, 1 / 3, 1 / 3), (0.2, 0.4, 0.6)),
    ((0.0, 0.0, 1.0), (0.3,)),
    ((0.0, 0.0, 0.0), (-1.0,)),
)
DET_INPUT = 128
DET_STRIDE = 8
DET_KERNEL = 5
DET_ANCHORS = 4
DET_CONF = 0.5
DET_IOU = 0.45

DetectorSample = tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]
"""(input tensor [3,S,S], hazard boxes in input pixels [K,4], the same in frame pixels [K,4])."""


# --------------------------------------------------------------------------- data


def _parallel_map(fn: Callable[[_T], _R], tasks: Sequence[_T], workers: int) -> list[_R]:
    """``map`` over threads (OpenCV and numpy release the GIL while they draw and compute).
    Each task carries its own seed, so results don't depend on which thread ran it."""
    if workers <= 1 or len(tasks) < 8:
        return [fn(t) for t in tasks]
    with ThreadPoolExecutor(workers, thread_name_prefix="render") as pool:
        return list(pool.map(fn, tasks))


def _default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def classifier_input_spec(mean: Sequence[float], std: Sequence[float]) -> InputSpec:
    return InputSpec(
        name="image",
        shape=[1, 3, 64, 64],
        layout="NCHW",
        dtype="float32",
        color="RGB",
        resize="stretch",
        scale=1.0 / 255.0,
        mean=list(mean),
        std=list(std),
    )


def detector_input_spec() -> InputSpec:
    return InputSpec(
        name="image",
        shape=[1, 3, DET_INPUT, DET_INPUT],
        layout="NCHW",
        dtype="float32",
        color="RGB",
        resize="stretch",
        scale=1.0 / 255.0,
    )


def _classifier_sample(task: tuple[InputSpec, SceneKind, tuple[int, ...]]) -> NDArray[np.float32]:
    spec, kind, seed = task
    rng = np.random.default_rng(list(seed))
    image = render_scene(kind, rng, *FRAME_SIZE, t=float(rng.uniform(0.0, 60.0)))
    tensor, _ = Preprocessor(spec)(image)
    return np.asarray(tensor[0], dtype=np.float32)


def render_classifier_set(
    spec: InputSpec, n_per_class: int, seed: int, stream: int, workers: int = 1
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """[N,3,H,W] tensors from the runtime Preprocessor, and labels (indices into SCENE_KINDS)."""
    tasks = [
        (spec, kind, (seed, stream, c, i))
        for i in range(n_per_class)
        for c, kind in enumerate(SCENE_KINDS)
    ]
    x = np.stack(_parallel_map(_classifier_sample, tasks, workers))
    y = np.tile(np.arange(len(SCENE_KINDS), dtype=np.int64), n_per_class)
    return x, y


def _detector_sample(task: tuple[InputSpec, int, tuple[int, ...]]) -> DetectorSample:
    spec, n_objects, seed = task
    rng = np.random.default_rng(list(seed))
    image, boxes = render_detection_scene(rng, n_objects, *FRAME_SIZE)
    tensor, geometry = Preprocessor(spec)(image)
    frame_boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    input_boxes = frame_boxes.copy()
    input_boxes[:, [0, 2]] *= geometry.scale_x
    input_boxes[:, [1, 3]] *= geometry.scale_y
    return np.asarray(tensor[0], np.float32), input_boxes, frame_boxes


def render_detector_set(
    n_images: int, seed: int, stream: int, workers: int = 1
) -> list[DetectorSample]:
    """Scenes with 0, 1, 2 and 3 hazards, a quarter each."""
    spec = detector_input_spec()
    tasks = [(spec, i % 4, (seed, stream, i)) for i in range(n_images)]
    return _parallel_map(_detector_sample, tasks, workers)


def bank_weights(
    bank: ColourBank,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """1x1 conv weights [F,3] and biases [F] computing the bank on the *normalised* input
    x = (rgb - mean) / std, i.e. with rgb = x * std + mean folded in."""
    d = np.asarray([direction for direction, ts in bank for _ in ts], np.float64)
    t = np.asarray([thr for _, ts in bank for thr in ts], np.float64)
    w = d * np.asarray(std, np.float64)[None, :]
    b = d @ np.asarray(mean, np.float64) - t
    return w, b


def _ort_session(model_bytes: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------- training


class _Adam:
    def __init__(self, params: list[NDArray[np.float64]], lr: float) -> None:
        self.params = params
        self.lr = lr
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads: Sequence[NDArray[np.float64]], lr: float) -> None:
        """One in-place update of every parameter."""
        self.t += 1
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        for i, g in enumerate(grads):
            self.m[i] = beta1 * self.m[i] + (1 - beta1) * g
            self.v[i] = beta2 * self.v[i] + (1 - beta2) * g * g
            m_hat = self.m[i] / (1 - beta1**self.t)
            v_hat = self.v[i] / (1 - beta2**self.t)
            self.params[i] -= lr * m_hat / (np.sqrt(v_hat) + eps)


def _cosine(lr: float, step: int, steps: int) -> float:
    return max(lr * 0.5 * (1 + math.cos(math.pi * step / steps)), lr * 0.02)


@dataclass(frozen=True, slots=True)
class MlpWeights:
    w1: NDArray[np.float64]
    b1: NDArray[np.float64]
    w2: NDArray[np.float64]
    b2: NDArray[np.float64]

    def logits(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        h = np.maximum(x @ self.w1 + self.b1, 0.0)
        out: NDArray[np.float64] = h @ self.w2 + self.b2
        return out

    def accuracy(self, x: NDArray[np.float64], y: NDArray[np.int64]) -> float:
        return float(np.mean(self.logits(x).argmax(axis=1) == y))


def train_mlp(
    x: NDArray[np.float64],
    y: NDArray[np.int64],
    n_classes: int,
    *,
    hidden: int = 32,
    steps: int = 600,
    lr: float = 0.01,
    l2: float = 1e-3,
    seed: int = 0,
) -> MlpWeights:
    """One hidden ReLU layer, softmax cross-entropy + L2 on the weights, full-batch Adam with a
    cosine-decayed step size."""
    rng = np.random.default_rng([seed, 101])
    n, d = x.shape
    w1 = rng.normal(0.0, np.sqrt(2.0 / d), (d, hidden))
    b1 = np.zeros(hidden)
    w2 = rng.normal(0.0, np.sqrt(1.0 / hidden), (hidden, n_classes))
    b2 = np.zeros(n_classes)
    onehot = np.eye(n_classes)[y]
    opt = _Adam([w1, b1, w2, b2], lr)
    for step in range(steps):
        pre = x @ w1 + b1
        h = np.maximum(pre, 0.0)
        logits = h @ w2 + b2
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        d_logits = (p - onehot) / n
        d_h = (d_logits @ w2.T) * (pre > 0)
        grads = [x.T @ d_h + l2 * w1, d_h.sum(axis=0), h.T @ d_logits + l2 * w2, d_logits.sum(0)]
        opt.step(grads, _cosine(lr, step, steps))
    return MlpWeights(w1, b1, w2, b2)


def train_logistic(
    x: NDArray[np.float64],
    targets: NDArray[np.int8],
    *,
    row_weight: NDArray[np.float64] | None = None,
    steps: int = 300,
    lr: float = 0.05,
    l2: float = 1e-4,
    pos_weight: float = 5.0,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """One logistic regression per target column (1 positive, 0 negative, -1 ignored), full-batch
    Adam on standardised features. Returns weights [D, A] and biases [A] for the raw features."""
    mu = x.mean(axis=0)
    sd = x.std(axis=0) + 1e-6
    z = ((x - mu) / sd).astype(np.float32)  # the matmuls are memory-bound: half the bytes
    n_out = targets.shape[1]
    w = np.zeros((z.shape[1], n_out))
    b = np.full(n_out, -4.0)
    y = (targets == 1).astype(np.float64)
    weight = np.where(targets == 1, pos_weight, np.where(targets == 0, 1.0, 0.0))
    if row_weight is not None:
        weight *= row_weight[:, None]
    weight /= weight.sum(axis=0)
    opt = _Adam([w, b], lr)
    for step in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w.astype(np.float32) + b, -30, 30)))
        d = (p - y) * weight
        grad_w = (z.T @ d.astype(np.float32)).astype(np.float64) + l2 * w
        opt.step([grad_w, d.sum(axis=0)], _cosine(lr, step, steps))
    w_raw = w / sd[:, None]
    return w_raw, b - mu @ w_raw


# --------------------------------------------------------------------------- classifier


def classifier_accuracy(
    model_bytes: bytes, tensors: NDArray[np.float32], labels: NDArray[np.int64]
) -> float:
    """Accuracy of the ONNX model run by onnxruntime, one image per call as in service."""
    session = _ort_session(model_bytes)
    probs = np.concatenate([session.run(["probs"], {"image": x[None]})[0] for x in tensors])
    return float(np.mean(probs.argmax(axis=1) == labels))


def build_demo_classifier(
    out_root: Path,
    seed: int = 0,
    overwrite: bool = False,
    *,
    n_per_class: int = 600,
    n_heldout_per_class: int = 200,
    n_calibration_per_class: int = 20,
    workers: int | None = None,
) -> Path:
    """Train normal/smoke/fire on rendered scenes; write ``demo-hazard-classifier/1.0.0``.

    Graph: fixed colour bank (1x1 Conv, Relu) → AveragePool 8 → Flatten → Gemm → Relu → Gemm →
    Softmax; the two Gemms are trained.
    """
    if n_per_class < 2 or n_heldout_per_class < 1 or n_calibration_per_class < 1:
        raise ValueError(
            "need n_per_class >= 2, n_heldout_per_class >= 1 and n_calibration_per_class >= 1, "
            f"got {n_per_class}, {n_heldout_per_class} and {n_calibration_per_class}"
        )
    started = time.perf_counter()
    workers = _default_workers() if workers is None else workers
    # mean/std measured on a separate calibration set, rounded so the manifest reads well
    identity = classifier_input_spec([0.0] * 3, [1.0] * 3)
    calib, _ = render_classifier_set(
        identity, n_calibration_per_class, seed, CALIBRATION_STREAM, workers
    )
    mean = [round(float(v), 3) for v in calib.mean(axis=(0, 2, 3))]
    std = [round(float(v), 3) for v in calib.std(axis=(0, 2, 3))]
    spec = classifier_input_spec(mean, std)
    x_train, y_train = render_classifier_set(spec, n_per_class, seed, TRAIN_STREAM, workers)
    x_held, y_held = render_classifier_set(spec, n_heldout_per_class, seed, HELDOUT_STREAM, workers)
    rendered = time.perf_counter()
    colour_w, colour_b = bank_weights(CLASSIFIER_BANK, mean, std)
    # the scenes have no preferred side: mirrored images double the data for free
    features = np.concatenate(
        [
            pooled_features(x_train, CLASSIFIER_POOL, colour_w, colour_b),
            pooled_features(x_train[..., ::-1], CLASSIFIER_POOL, colour_w, colour_b),
        ]
    )
    mu = features.mean(axis=0)
    sd = features.std(axis=0) + 1e-6
    z = (features - mu) / sd
    weights = train_mlp(z, np.concatenate([y_train, y_train]), len(SCENE_KINDS), seed=seed)
    train_acc = weights.accuracy(z[: len(y_train)], y_train)
    w1 = weights.w1 / sd[:, None]  # the standardisation folded into the first Gemm
    b1 = weights.b1 - mu @ w1
    model = mlp_classifier_onnx(
        w1,
        b1,
        weights.w2,
        weights.b2,
        input_hw=spec.spatial_size(),
        pool=CLASSIFIER_POOL,
        colour_w=colour_w,
        colour_b=colour_b,
    )
    model_bytes = serialize(model)
    held_acc = classifier_accuracy(model_bytes, x_held, y_held)
    logger.info(
        "classifier: rendered %d scenes in %.1f s, trained and checked in %.1f s; "
        "accuracy train %.3f heldout %.3f",
        len(x_train) + len(x_held) + len(calib),
        rendered - started,
        time.perf_counter() - rendered,
        train_acc,
        held_acc,
    )
    hidden = w1.shape[1]
    fields: dict[str, Any] = {
        "description": "Demo smoke/fire classifier for conveyor-belt cameras, trained on "
        "synthetic scenes (tools.scenes). Not for real-world safety use.",
        "inputs": [spec.model_dump(mode="json", exclude_none=True)],
        "outputs": [{"name": "probs", "shape": [1, len(SCENE_KINDS)], "dtype": "float32"}],
        "labels": list(SCENE_KINDS),
        "postprocess": {"type": "classify", "softmax": False, "top_k": len(SCENE_KINDS)},
        "provenance": {
            "generator": GENERATOR,
            "seed": seed,
            "n_train": len(x_train),
            "augmentation": "horizontal flip",
            "n_heldout": len(x_held),
            "train_accuracy": round(train_acc, 4),
            "heldout_accuracy": round(held_acc, 4),
            "architecture": f"Conv1x1(3->{len(colour_b)}, fixed colour bank) -> Relu -> "
            f"AveragePool{CLASSIFIER_POOL} -> Gemm({w1.shape[0]}->{hidden}) -> Relu -> "
            f"Gemm({hidden}->{len(SCENE_KINDS)}) -> Softmax",
            "frame_size": list(FRAME_SIZE),
        },
    }
    return write_bundle(
        out_root, CLASSIFIER_NAME, VERSION, model_bytes, fields, overwrite=overwrite
    )


# --------------------------------------------------------------------------- detector


def kmeans_anchors(wh: NDArray[np.float64], k: int, iters: int = 30) -> list[tuple[float, float]]:
    """Anchor (w, h) by k-means with 1 - IoU distance (as YOLO's autoanchor); deterministic:
    starts at area quantiles, returns anchors sorted by area."""
    if len(wh) < k:
        raise ValueError(f"need at least {k} boxes to fit {k} anchors, got {len(wh)}")
    order = np.argsort(wh[:, 0] * wh[:, 1], kind="stable")
    centres = wh[order[((np.arange(k) + 0.5) / k * len(wh)).astype(int)]].copy()
    for _ in range(iters):
        inter = np.minimum(wh[:, None, 0], centres[None, :, 0]) * np.minimum(
            wh[:, None, 1], centres[None, :, 1]
        )
        union = (wh[:, 0] * wh[:, 1])[:, None] + (centres[:, 0] * centres[:, 1])[None] - inter
        assign = np.argmax(inter / union, axis=1)
        for j in range(k):
            members = wh[assign == j]
            if len(members):
                centres[j] = np.median(members, axis=0)
    centres = centres[np.argsort(centres[:, 0] * centres[:, 1], kind="stable")]
    return [(round(float(w), 2), round(float(h), 2)) for w, h in centres]


def unfold(cells: NDArray[np.float64], k: int) -> NDArray[np.float64]:
    """[N,F,G,G] → [N*G*G, F*k*k]: each cell's zero-padded kxk neighbourhood, in the order of
    Conv weights [F,k,k] flattened; rows by image, then row-major cell."""
    n, f, g, _ = cells.shape
    p = k // 2
    padded = np.pad(cells, ((0, 0), (0, 0), (p, p), (p, p)))
    cols = np.empty((n, g, g, f, k, k), np.float64)
    for dy in range(k):
        for dx in range(k):
            cols[..., dy, dx] = padded[:, :, dy : dy + g, dx : dx + g].transpose(0, 2, 3, 1)
    return cols.reshape(n * g * g, f * k * k)


def anchor_targets(
    boxes: Sequence[NDArray[np.float32]], anchors: Sequence[tuple[float, float]]
) -> NDArray[np.int8]:
    """[N*G*G, A]: per image, cell and anchor, 1 positive, 0 negative, -1 ignored.

    Positive when the anchor box at the cell centre overlaps a hazard with IoU >= 0.5, or is the
    best-overlapping (cell, anchor) for that hazard; ignored between IoU 0.25 and 0.5.
    """
    grid = DET_INPUT // DET_STRIDE
    cells = grid * grid
    cx, cy, w, h = grid_anchor_boxes(DET_INPUT, DET_STRIDE, anchors).astype(np.float64)
    priors = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    out = np.zeros((len(boxes), cells, len(anchors)), np.int8)
    for i, gt in enumerate(boxes):
        if len(gt) == 0:
            continue
        iou = box_iou(priors, gt)  # [A*cells, K], anchor-major
        best = iou.max(axis=1)
        label = np.where(best >= 0.5, 1, np.where(best >= 0.25, -1, 0)).astype(np.int8)
        label[iou.argmax(axis=0)] = 1
        out[i] = label.reshape(len(anchors), cells).T
    return out.reshape(-1, len(anchors))


@dataclass(frozen=True, slots=True)
class DetectorEval:
    recall: float  # hazards matched by a detection with IoU >= 0.3
    empty_clean: float  # share of hazard-free scenes with no detection at all
    precision: float  # detections that match a hazard with IoU >= 0.3


def evaluate_detector(
    model_bytes: bytes,
    samples: Sequence[DetectorSample],
    conf_threshold: float = DET_CONF,
    iou_threshold: float = DET_IOU,
) -> DetectorEval:
    """Run the ONNX model with onnxruntime and decode with the runtime's YOLO postprocessor
    (threshold, NMS, mapping to frame pixels), as in service."""
    spec = detector_input_spec()
    session = _ort_session(model_bytes)
    decoder = YoloPostprocessor(
        ["hazard"], conf_threshold=conf_threshold, iou_threshold=iou_threshold
    )
    _, geometry = Preprocessor(spec)(np.zeros((FRAME_SIZE[1], FRAME_SIZE[0], 3), np.uint8))
    found = total = empty = empty_clean = n_det = n_det_ok = 0
    for tensor, _, frame_boxes in samples:
        _, dets = decoder.decode(session.run(None, {spec.name: tensor[None]}), geometry)
        pred = np.asarray([d.bbox for d in dets], np.float64).reshape(-1, 4)
        n_det += len(pred)
        if len(frame_boxes) == 0:
            empty += 1
            empty_clean += int(len(pred) == 0)
            continue
        total += len(frame_boxes)
        if len(pred):
            iou = box_iou(pred, frame_boxes)
            found += int((iou.max(axis=0) >= 0.3).sum())
            n_det_ok += int((iou.max(axis=1) >= 0.3).sum())
    return DetectorEval(
        recall=found / max(1, total),
        empty_clean=empty_clean / max(1, empty),
        precision=n_det_ok / max(1, n_det),
    )


def train_detector(
    train: Sequence[DetectorSample], seed: int = 0, negative_share: float = 0.2
) -> bytes:
    """Fit anchors and the per-anchor logistic heads; return the serialised ONNX model.

    Cells that are negative for every anchor are most of the grid; a seeded ``negative_share``
    of them is kept, weighted up to stand for the rest.
    """
    gt = [boxes for _, boxes, _ in train]
    sizes = [b[:, 2:] - b[:, :2] for b in gt if len(b)]
    if not sizes:
        raise ValueError("detector training set has no hazards")
    anchors = kmeans_anchors(np.concatenate(sizes).astype(np.float64), DET_ANCHORS)
    feat_w, feat_b = bank_weights(DETECTOR_BANK)  # the detector's input is not normalised
    cells = colour_pool(np.stack([t for t, _, _ in train]), feat_w, feat_b, DET_STRIDE)
    x = unfold(cells, DET_KERNEL)
    targets = anchor_targets(gt, anchors)
    background = (targets == 0).all(axis=1)
    keep = ~background | (np.random.default_rng([seed, 202]).random(len(x)) < negative_share)
    row_weight = np.where(background[keep], 1.0 / negative_share, 1.0)
    w_raw, b_raw = train_logistic(x[keep], targets[keep], row_weight=row_weight)
    head_w = w_raw.T.reshape(DET_ANCHORS, len(feat_b), DET_KERNEL, DET_KERNEL)
    model = grid_detector_onnx(
        feat_w, feat_b, head_w, b_raw, anchors=anchors, input_hw=DET_INPUT, stride=DET_STRIDE
    )
    return serialize(model)


def build_demo_detector(
    out_root: Path,
    seed: int = 0,
    overwrite: bool = False,
    *,
    n_train: int = 600,
    n_heldout: int = 200,
    workers: int | None = None,
) -> Path:
    """Train the grid hazard detector; write ``demo-hazard-detector/1.0.0``."""
    if n_train < 8 or n_heldout < 1:
        raise ValueError(f"need n_train >= 8 and n_heldout >= 1, got {n_train} and {n_heldout}")
    started = time.perf_counter()
    workers = _default_workers() if workers is None else workers
    train = render_detector_set(n_train, seed, DET_TRAIN_STREAM, workers)
    heldout = render_detector_set(n_heldout, seed, DET_HELDOUT_STREAM, workers)
    rendered = time.perf_counter()
    model_bytes = train_detector(train, seed)
    train_eval = evaluate_detector(model_bytes, train)
    held_eval = evaluate_detector(model_bytes, heldout)
    logger.info(
        "detector: rendered %d scenes in %.1f s, trained and checked in %.1f s; train recall "
        "%.3f; heldout recall %.3f, empty scenes clean %.3f, precision %.3f",
        len(train) + len(heldout),
        rendered - started,
        time.perf_counter() - rendered,
        train_eval.recall,
        held_eval.recall,
        held_eval.empty_clean,
        held_eval.precision,
    )
    grid = DET_INPUT // DET_STRIDE
    n_boxes = DET_ANCHORS * grid * grid
    fields: dict[str, Any] = {
        "description": "Demo hazard detector (traffic cones, orange/red spills) for conveyor-belt "
        "cameras, trained on synthetic scenes (tools.scenes); Ultralytics YOLO output layout. "
        "Not for real-world safety use.",
        "inputs": [detector_input_spec().model_dump(mode="json", exclude_none=True)],
        "outputs": [{"name": "output0", "shape": [1, 5, n_boxes], "dtype": "float32"}],
        "labels": ["hazard"],
        "postprocess": {"type": "yolo", "conf_threshold": DET_CONF, "iou_threshold": DET_IOU},
        "provenance": {
            "generator": GENERATOR,
            "seed": seed,
            "n_train": len(train),
            "n_heldout": len(heldout),
            "architecture": f"Conv1x1(3->{sum(len(t) for _, t in DETECTOR_BANK)}, fixed colour "
            f"bank) -> Relu -> AveragePool{DET_STRIDE} -> Conv{DET_KERNEL}x{DET_KERNEL}"
            f"(->{DET_ANCHORS} anchors) -> Sigmoid on a {grid}x{grid} grid",
            "train_recall_iou30": round(train_eval.recall, 4),
            "heldout_recall_iou30": round(held_eval.recall, 4),
            "heldout_empty_clean": round(held_eval.empty_clean, 4),
            "heldout_precision_iou30": round(held_eval.precision, 4),
            "frame_size": list(FRAME_SIZE),
        },
    }
    return write_bundle(out_root, DETECTOR_NAME, VERSION, model_bytes, fields, overwrite=overwrite)


# --------------------------------------------------------------------------- benchmark model


def build_benchmark_model(out_root: Path, overwrite: bool = False, seed: int = 0) -> Path:
    """MobileNetV2 (224x224, 1000 classes) with random weights: ``mobilenetv2-bench/1.0.0``."""
    model = mobilenet_v2_onnx(num_classes=1000, input_hw=224, seed=seed, batch=1)
    spec = InputSpec(
        name="image",
        shape=[1, 3, 224, 224],
        layout="NCHW",
        dtype="float32",
        color="RGB",
        resize="stretch",
        scale=1.0 / 255.0,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    fields: dict[str, Any] = {
        "description": "MobileNetV2 topology with random (seeded) weights: realistic compute for "
        "benchmarks; its predictions mean nothing.",
        "inputs": [spec.model_dump(mode="json", exclude_none=True)],
        "outputs": [{"name": "logits", "shape": [1, 1000], "dtype": "float32"}],
        "labels": [],
        "postprocess": {"type": "classify", "softmax": True, "top_k": 5},
        "provenance": {
            "generator": GENERATOR,
            "seed": seed,
            "parameters": parameter_count(model),
            "weights": "random (He init, batch norm folded into the conv biases)",
        },
    }
    return write_bundle(
        out_root, BENCHMARK_NAME, VERSION, serialize(model), fields, overwrite=overwrite
    )


# --------------------------------------------------------------------------- CLI

BUILDERS: dict[str, Callable[[Path, bool], Path]] = {
    CLASSIFIER_NAME: lambda out, overwrite: build_demo_classifier(out, overwrite=overwrite),
    DETECTOR_NAME: lambda out, overwrite: build_demo_detector(out, overwrite=overwrite),
    BENCHMARK_NAME: lambda out, overwrite: build_benchmark_model(out, overwrite=overwrite),
    PUMP_NAME: lambda out, overwrite: build_demo_pump_model(out, overwrite=overwrite),
    TFLITE_CLASSIFIER_NAME: lambda out, ow: build_demo_tflite_classifier(out, overwrite=ow),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.demo_models",
        description="Build the demo model bundles from generated scenes.",
    )
    parser.add_argument("--out", type=Path, default=Path("models"), help="bundle root")
    parser.add_argument(
        "--only", choices=sorted(BUILDERS), action="append", help="build only this (repeatable)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing bundles")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name in args.only or list(BUILDERS):
        started = time.perf_counter()
        try:
            path = BUILDERS[name](args.out, args.overwrite)
        except FileExistsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        size = (path / MODEL_FILE).stat().st_size
        elapsed = time.perf_counter() - started
        print(f"{name}: {path} ({size / 1e6:.2f} MB) built in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
