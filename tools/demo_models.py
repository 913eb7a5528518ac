"""Build the demo model bundles from generated scenes; nothing is downloaded.

* ``demo-hazard-classifier``: normal / smoke / fire, a pooled-pixel MLP trained with numpy.
* ``demo-hazard-detector``: one class "hazard" (cones, spills), YOLO output layout, a logistic
  objectness per grid anchor trained with numpy.
* ``mobilenetv2-bench``: MobileNetV2 with random weights, for realistic benchmark speed.

Training tensors are made by the runtime's own :class:`Preprocessor` from 640x480 renders, so
the models see in training exactly what they see in service. Every random choice is seeded and
training is full-batch in float64, so a build gives the same bytes every time on a machine.

    python -m tools.demo_models [--out models] [--only NAME] [--overwrite]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from runtime.manifest import InputSpec
from runtime.processing.nms import box_iou
from runtime.processing.postprocess.yolo import YoloPostprocessor
from runtime.processing.preprocess import Preprocessor
from tools.bundle import write_bundle
from tools.onnx_builders import (
    cell_features,
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

# seed streams: every dataset draws from its own, so changing one size leaves the others alone
_CALIBRATION, _TRAIN, _HELDOUT, _DET_TRAIN, _DET_HELDOUT = range(5)

T = TypeVar("T")
R = TypeVar("R")


# --------------------------------------------------------------------------- rendering


def _parallel_map(fn: Callable[[T], R], tasks: Sequence[T], workers: int) -> list[R]:
    """``map`` over threads (OpenCV and numpy release the GIL while they draw and compute).
    Each task carries its own seed, so results don't depend on which thread ran it."""
    if workers <= 1 or len(tasks) < 8:
        return [fn(t) for t in tasks]
    with ThreadPoolExecutor(workers, thread_name_prefix="render") as pool:
        return list(pool.map(fn, tasks))


def _default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def _classifier_sample(task: tuple[InputSpec, SceneKind, tuple[int, ...]]) -> NDArray[np.float32]:
    spec, kind, seed = task
    rng = np.random.default_rng(list(seed))
    image = render_scene(kind, rng, *FRAME_SIZE, t=float(rng.uniform(0.0, 60.0)))
    tensor, _ = Preprocessor(spec)(image)
    return np.asarray(tensor[0], dtype=np.float32)


def _detector_sample(
    task: tuple[InputSpec, int, tuple[int, ...]],
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """(input tensor [3,S,S], boxes in input pixels [K,4], boxes in frame pixels [K,4])."""
    spec, n_objects, seed = task
    rng = np.random.default_rng(list(seed))
    image, boxes = render_detection_scene(rng, n_objects, *FRAME_SIZE)
    tensor, geometry = Preprocessor(spec)(image)
    frame_boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    input_boxes = frame_boxes.copy()
    input_boxes[:, [0, 2]] *= geometry.scale_x
    input_boxes[:, [1, 3]] *= geometry.scale_y
    return np.asarray(tensor[0], np.float32), input_boxes, frame_boxes


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
        shape=[1, 3, 128, 128],
        layout="NCHW",
        dtype="float32",
        color="RGB",
        resize="stretch",
        scale=1.0 / 255.0,
    )


def render_classifier_set(
    spec: InputSpec, n_per_class: int, seed: int, stream: int, workers: int
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """[N,3,H,W] preprocessed tensors and labels (indices into SCENE_KINDS), class-interleaved."""
    tasks = [
        (spec, kind, (seed, stream, c, i))
        for i in range(n_per_class)
        for c, kind in enumerate(SCENE_KINDS)
    ]
    x = np.stack(_parallel_map(_classifier_sample, tasks, workers))
    y = np.tile(np.arange(len(SCENE_KINDS), dtype=np.int64), n_per_class)
    return x, y


# --------------------------------------------------------------------------- classifier


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


class _Adam:
    def __init__(self, params: list[NDArray[np.float64]], lr: float) -> None:
        self.params = params
        self.lr = lr
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads: Iterable[NDArray[np.float64]], lr: float | None = None) -> None:
        self.t += 1
        b1, b2, eps = 0.9, 0.999, 1e-8
        step = self.lr if lr is None else lr
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            m_hat = m / (1 - b1**self.t)
            v_hat = v / (1 - b2**self.t)
            p -= step * m_hat / (np.sqrt(v_hat) + eps)


def train_mlp(
    x: NDArray[np.float64],
    y: NDArray[np.int64],
    n_classes: int,
    *,
    hidden: int = 32,
    steps: int = 600,
    lr: float = 0.01,
    l2: float = 1e-4,
    seed: int = 0,
) -> MlpWeights:
    """Full-batch Adam on softmax cross-entropy + L2 (weights only), cosine-decayed step size."""
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
        g_w2 = h.T @ d_logits + l2 * w2
        g_b2 = d_logits.sum(axis=0)
        d_h = (d_logits @ w2.T) * (pre > 0)
        g_w1 = x.T @ d_h + l2 * w1
        g_b1 = d_h.sum(axis=0)
        cos_lr = lr * 0.5 * (1 + np.cos(np.pi * step / steps))
        opt.step([g_w1, g_b1, g_w2, g_b2], lr=max(cos_lr, lr * 0.02))
    return MlpWeights(w1, b1, w2, b2)


def _ort_session(model_bytes: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def build_demo_classifier(
    out_root: Path,
    seed: int = 0,
    overwrite: bool = False,
    *,
    n_per_class: int = 600,
    n_heldout_per_class: int = 200,
    workers: int | None = None,
) -> Path:
    """Train normal/smoke/fire on rendered scenes; write ``demo-hazard-classifier/1.0.0``."""
    started = time.perf_counter()
    workers = _default_workers() if workers is None else workers
    pool = 4
    # mean/std measured on a separate calibration set, rounded so the manifest reads well
    calib, _ = render_classifier_set(classifier_input_spec([0.0] * 3, [1.0] * 3), 20, seed, _CALIBRATION, workers)
    mean = [round(float(v), 3) for v in calib.mean(axis=(0, 2, 3))]
    std = [round(float(v), 3) for v in calib.std(axis=(0, 2, 3))]
    spec = classifier_input_spec(mean, std)
    x_train, y_train = render_classifier_set(spec, n_per_class, seed, _TRAIN, workers)
    x_held, y_held = render_classifier_set(spec, n_heldout_per_class, seed, _HELDOUT, workers)
    rendered = time.perf_counter()
    f_train = pooled_features(x_train, pool)
    weights = train_mlp(f_train, y_train, len(SCENE_KINDS), seed=seed)
    train_acc = weights.accuracy(f_train, y_train)
    h, w = spec.spatial_size()
    model = mlp_classifier_onnx(
        weights.w1, weights.b1, weights.w2, weights.b2, input_hw=(h, w), pool=pool
    )
    model_bytes = serialize(model)
    session = _ort_session(model_bytes)
    probs = np.concatenate([session.run(["probs"], {"image": x[None]})[0] for x in x_held])
    held_acc = float(np.mean(probs.argmax(axis=1) == y_held))
    logger.info(
        "classifier: rendered %d scenes in %.1f s, trained in %.1f s; accuracy train %.3f heldout %.3f",
        len(x_train) + len(x_held) + len(calib),
        rendered - started,
        time.perf_counter() - rendered,
        train_acc,
        held_acc,
    )
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
            "n_heldout": len(x_held),
            "train_accuracy": round(train_acc, 4),
            "heldout_accuracy": round(held_acc, 4),
            "architecture": f"AveragePool{pool} -> Gemm({w1_in(weights)}x{weights.w1.shape[1]}) "
            f"-> Relu -> Gemm -> Softmax",
            "frame_size": list(FRAME_SIZE),
        },
    }
    return write_bundle(out_root, CLASSIFIER_NAME, VERSION, model_bytes, fields, overwrite=overwrite)


def w1_in(weights: MlpWeights) -> int:
    return int(weights.w1.shape[0])


# --------------------------------------------------------------------------- detector

# Fixed colour feature bank on RGB in [0,1]: ReLU(direction . rgb - threshold). Orange and red
# score high on r-g and r-b; cardboard (r>g>b but close) and yellow stripes (r~g) do not.
_FEATURE_BANK: tuple[tuple[tuple[float, float, float], tuple[float, ...]], ...] = (
    ((1.0, -1.0, 0.0), (0.1, 0.2, 0.3, 0.45)),
    ((1.0, 0.0, -1.0), (0.3, 0.5, 0.7)),
    ((0.0, 1.0, -1.0), (0.1, 0.25)),
    ((1.0, 0.0, 0.0), (0.6, 0.8)),
    ((1 / 3, 1 / 3, 1 / 3), (0.2, 0.4, 0.6)),
    ((0.0, 0.0, 1.0), (0.3,)),
    ((0.0, 0.0, 0.0), (-1.0,)),  # constant 1: lets the head see the zero-padded border
)
DET_INPUT = 128
DET_STRIDE = 8
DET_KERNEL = 5
DET_ANCHORS = 4


def feature_bank() -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    w = [d for d, thresholds in _FEATURE_BANK for _ in thresholds]
    b = [-t for _, thresholds in _FEATURE_BANK for t in thresholds]
    return np.asarray(w, np.float64), np.asarray(b, np.float64)


def kmeans_anchors(wh: NDArray[np.float64], k: int, iters: int = 30) -> list[tuple[float, float]]:
    """Anchor (w, h) by k-means with 1 - IoU distance (as YOLO's autoanchor), deterministic:
    initialised at area quantiles, sorted by area."""
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


def _unfold(cells: NDArray[np.float64], k: int) -> NDArray[np.float64]:
    """[N,F,G,G] → [N*G*G, F*k*k] zero-padded kxk neighbourhoods, ordered like Conv weights
    [F,k,k] flattened, rows in image then row-major cell order."""
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
    """Per image, cell and anchor: 1 positive, 0 negative, -1 ignored. [N*G*G, A].

    Positive when the anchor box at the cell centre overlaps a hazard with IoU >= 0.5, or is the
    best-overlapping (cell, anchor) for that hazard; ignored between IoU 0.25 and 0.5.
    """
    grid = DET_INPUT // DET_STRIDE
    cells = grid * grid
    prior = grid_anchor_boxes(DET_INPUT, DET_STRIDE, anchors)  # [4, A*cells], anchor-major
    cx, cy, w, h = prior.astype(np.float64)
    prior_xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    out = np.zeros((len(boxes), cells, len(anchors)), np.int8)
    for i, gt in enumerate(boxes):
        if len(gt) == 0:
            continue
        iou = box_iou(prior_xyxy, gt)  # [A*cells, K]
        best = iou.max(axis=1)
        label = np.where(best >= 0.5, 1, np.where(best >= 0.25, -1, 0)).astype(np.int8)
        label[iou.argmax(axis=0)] = 1
        out[i] = label.reshape(len(anchors), cells).T
    return out.reshape(-1, len(anchors))


def train_logistic(
    x: NDArray[np.float64],
    targets: NDArray[np.int8],
    *,
    steps: int = 400,
    lr: float = 0.05,
    l2: float = 1e-4,
    pos_weight: float = 2.0,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """One logistic regression per target column (ignored rows = -1), full-batch Adam on
    standardised features; returns weights [D, A] and biases [A] for the raw features."""
    mu = x.mean(axis=0)
    sd = x.std(axis=0) + 1e-6
    z = (x - mu) / sd
    n_out = targets.shape[1]
    w = np.zeros((z.shape[1], n_out))
    b = np.full(n_out, -4.0)
    y = (targets == 1).astype(np.float64)
    weight = np.where(targets == 1, pos_weight, np.where(targets == 0, 1.0, 0.0))
    norm = weight.sum(axis=0)
    opt = _Adam([w, b], lr)
    for step in range(steps):
        logits = z @ w + b
        p = 1.0 / (1.0 + np.exp(-np.clip(logits, -30, 30)))
        d = (p - y) * weight / norm
        cos_lr = lr * 0.5 * (1 + np.cos(np.pi * step / steps))
        opt.step([z.T @ d + l2 * w, d.sum(axis=0)], lr=max(cos_lr, lr * 0.02))
    w_raw = w / sd[:, None]
    b_raw = b - mu @ w_raw
    return w_raw, b_raw


@dataclass(frozen=True, slots=True)
class DetectorEval:
    recall: float  # hazards matched by a detection with IoU >= 0.3
    empty_clean: float  # empty scenes with no detection at all
    precision: float  # detections matching a hazard (IoU >= 0.3)


def evaluate_detector(
    model_bytes: bytes,
    samples: Sequence[tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]],
    spec: InputSpec,
    conf_threshold: float = 0.5,
    iou_threshold: float = 0.45,
) -> DetectorEval:
    """Run the ONNX model and the runtime's YOLO decoder (NMS, frame mapping) on samples."""
    session = _ort_session(model_bytes)
    decoder = YoloPostprocessor(["hazard"], conf_threshold=conf_threshold, iou_threshold=iou_threshold)
    preprocess = Preprocessor(spec)
    geometry = preprocess(np.zeros((FRAME_SIZE[1], FRAME_SIZE[0], 3), np.uint8))[1]
    found = total = empty = empty_clean = n_det = n_det_ok = 0
    for tensor, _, frame_boxes in samples:
        outputs = session.run(None, {spec.name: tensor[None]})
        _, dets = decoder.decode(outputs, geometry)
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


def render_detector_set(
    n_images: int, seed: int, stream: int, workers: int
) -> list[tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]]:
    """Scenes with 0..3 hazards (a quarter each)."""
    spec = detector_input_spec()
    tasks = [(spec, i % 4, (seed, stream, i)) for i in range(n_images)]
    return _parallel_map(_detector_sample, tasks, workers)


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
    started = time.perf_counter()
    workers = _default_workers() if workers is None else workers
    spec = detector_input_spec()
    train = render_detector_set(n_train, seed, _DET_TRAIN, workers)
    heldout = render_detector_set(n_heldout, seed, _DET_HELDOUT, workers)
    rendered = time.perf_counter()
    gt = [boxes for _, boxes, _ in train]
    wh = np.concatenate([b[:, 2:] - b[:, :2] for b in gt if len(b)]).astype(np.float64)
    anchors = kmeans_anchors(wh, DET_ANCHORS)
    feat_w, feat_b = feature_bank()
    cells = cell_features(np.stack([t for t, _, _ in train]), feat_w, feat_b, DET_STRIDE)
    x = _unfold(cells, DET_KERNEL)
    targets = anchor_targets(gt, anchors)
    w_raw, b_raw = train_logistic(x, targets)
    n_feat = feat_w.shape[0]
    head_w = w_raw.T.reshape(DET_ANCHORS, n_feat, DET_KERNEL, DET_KERNEL)
    model = grid_detector_onnx(
        feat_w, feat_b, head_w, b_raw, anchors=anchors, input_hw=DET_INPUT, stride=DET_STRIDE
    )
    model_bytes = serialize(model)
    conf, iou = 0.5, 0.45
    train_eval = evaluate_detector(model_bytes, train, spec, conf, iou)
    held_eval = evaluate_detector(model_bytes, heldout, spec, conf, iou)
    logger.info(
        "detector: rendered %d scenes in %.1f s, trained in %.1f s; heldout recall %.3f, "
        "empty scenes clean %.3f, precision %.3f",
        len(train) + len(heldout),
        rendered - started,
        time.perf_counter() - rendered,
        held_eval.recall,
        held_eval.empty_clean,
        held_eval.precision,
    )
    n_boxes = DET_ANCHORS * (DET_INPUT // DET_STRIDE) ** 2
    fields: dict[str, Any] = {
        "description": "Demo hazard detector (traffic cones, orange/red spills) for conveyor-belt "
        "cameras, trained on synthetic scenes (tools.scenes). Ultralytics YOLO output layout.",
        "inputs": [spec.model_dump(mode="json", exclude_none=True)],
        "outputs": [{"name": "output0", "shape": [1, 5, n_boxes], "dtype": "float32"}],
        "labels": ["hazard"],
        "postprocess": {"type": "yolo", "conf_threshold": conf, "iou_threshold": iou},
        "provenance": {
            "generator": GENERATOR,
            "seed": seed,
            "n_train": len(train),
            "n_heldout": len(heldout),
            "anchors": [list(a) for a in anchors],
            "grid": [DET_INPUT // DET_STRIDE, DET_INPUT // DET_STRIDE],
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
    model_bytes = serialize(model)
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
            "weights": "random (He init, batch norm folded into conv biases)",
        },
    }
    return write_bundle(out_root, BENCHMARK_NAME, VERSION, model_bytes, fields, overwrite=overwrite)


# --------------------------------------------------------------------------- CLI

BUILDERS: dict[str, Callable[[Path, bool], Path]] = {
    CLASSIFIER_NAME: lambda out, overwrite: build_demo_classifier(out, overwrite=overwrite),
    DETECTOR_NAME: lambda out, overwrite: build_demo_detector(out, overwrite=overwrite),
    BENCHMARK_NAME: lambda out, overwrite: build_benchmark_model(out, overwrite=overwrite),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.demo_models", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("models"), help="bundle root (default: models)")
    parser.add_argument("--only", choices=sorted(BUILDERS), action="append", help="build only this model (repeatable)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing bundles")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    names = args.only or list(BUILDERS)
    for name in names:
        started = time.perf_counter()
        try:
            path = BUILDERS[name](args.out, args.overwrite)
        except FileExistsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        size = (path / "model.onnx").stat().st_size
        print(f"{name}: {path} ({size / 1e6:.2f} MB) built in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
