"""Run a float model and its quantized version over one labelled set and compare them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from runtime.model import LoadedModel
from runtime.processing.postprocess.base import POSTPROCESSORS
from tools.evaluate import metrics
from tools.evaluate.data import DataError, LabelledSet, Task
from tools.evaluate.divergence import LayerDivergence
from tools.evaluate.latency import Latency

logger = logging.getLogger(__name__)

METRIC_NAMES: dict[Task, str] = {"classify": "top-1", "detect": "mAP@0.5", "anomaly": "F1"}
MAP_CONF_THRESHOLD = 0.001  # mAP ranks every candidate; the device's threshold would cut the curve


@dataclass(frozen=True, slots=True)
class ModelRun:
    """One model's raw first outputs over the set, and what they decode to."""

    outputs: NDArray[np.float32]  # [N, ...] first output per sample
    accuracy: float  # the task's metric, 0..1
    class_ids: NDArray[np.int64] | None = None  # classify: top-1
    scores: NDArray[np.float32] | None = None  # anomaly: score per window
    flagged: NDArray[np.bool_] | None = None  # anomaly: score > threshold


@dataclass(frozen=True, slots=True)
class Comparison:
    task: Task
    metric: str
    source: str
    labelled_by: str
    n_samples: int
    labels: tuple[str, ...]
    reference: ModelRun
    candidate: ModelRun
    truth_ids: NDArray[np.int64] | None = None
    truth_flags: NDArray[np.bool_] | None = None
    threshold: float | None = None
    latency: tuple[Latency, Latency] | None = None
    layers: tuple[LayerDivergence, ...] = field(default_factory=tuple)

    @property
    def drop_points(self) -> float:
        """Accuracy lost, in percentage points (negative: the candidate scored higher)."""
        return 100.0 * (self.reference.accuracy - self.candidate.accuracy)

    @property
    def agreement(self) -> float | None:
        """Share of samples on which both models decide the same (top-1 or anomalous/normal)."""
        for a, b in (
            (self.reference.class_ids, self.candidate.class_ids),
            (self.reference.flagged, self.candidate.flagged),
        ):
            if a is not None and b is not None:
                return float(np.mean(a == b))
        return None

    @property
    def max_abs_diff(self) -> float:
        return float(np.max(np.abs(self.reference.outputs - self.candidate.outputs)))

    @property
    def mean_abs_diff(self) -> float:
        return float(np.mean(np.abs(self.reference.outputs - self.candidate.outputs)))

    @property
    def speedup(self) -> float | None:
        if self.latency is None:
            return None
        return self.latency[0].p50_ms / max(self.latency[1].p50_ms, 1e-9)


def check_compatible(reference: LoadedModel, candidate: LoadedModel) -> None:
    a, b = reference.manifest, candidate.manifest
    ia, ib = a.inputs[0], b.inputs[0]
    if (ia.shape, ia.layout) != (ib.shape, ib.layout) or a.labels != b.labels:
        raise DataError(
            f"{a.name}/{a.version} and {b.name}/{b.version} don't take the same input or labels: "
            f"{ia.shape} {ia.layout} {a.labels} vs {ib.shape} {ib.layout} {b.labels}"
        )


def run_model(
    model: LoadedModel, data: LabelledSet, progress: Callable[[int], None] | None = None
) -> ModelRun:
    """All outputs of ``model`` over ``data`` (one call per sample, as on the device), scored."""
    if not data.has_labels:
        raise DataError(
            f"data source {data.source} has no labels ({data.labelled_by}); evaluation needs "
            "a labelled set (an image folder with one subfolder per label, a video with a "
            ".labels.json sidecar, scenes:seed=S,n=N, or a recording with a 'label' column)"
        )
    raw: list[list[NDArray[np.float32]]] = []
    for tensor in data.inputs:
        raw.append(model.infer(tensor[np.newaxis]))
        if progress is not None:
            progress(1)
    first = np.stack([outs[0] for outs in raw]).astype(np.float32)
    if data.task == "classify":
        assert data.class_ids is not None
        ids = first.reshape(len(data), -1).argmax(axis=1).astype(np.int64)
        return ModelRun(first, metrics.top1_accuracy(ids, data.class_ids), class_ids=ids)
    if data.task == "anomaly":
        return _anomaly_run(model, data, raw)
    return _detection_run(model, data, raw, first)


def _anomaly_run(
    model: LoadedModel, data: LabelledSet, raw: list[list[NDArray[np.float32]]]
) -> ModelRun:
    sensor = model.manifest.sensor
    assert sensor is not None and data.anomalous is not None
    index = [o.name for o in model.manifest.outputs].index(sensor.score_output)
    scores = np.asarray([outs[index].reshape(-1)[0] for outs in raw], np.float32)
    flagged = scores > sensor.threshold
    return ModelRun(
        np.asarray([o[0] for o in raw], np.float32),
        metrics.f1_score(flagged, data.anomalous),
        scores=scores,
        flagged=flagged,
    )


def _detection_run(
    model: LoadedModel,
    data: LabelledSet,
    raw: list[list[NDArray[np.float32]]],
    first: NDArray[np.float32],
) -> ModelRun:
    assert data.boxes is not None
    config = model.manifest.postprocess
    if hasattr(config, "conf_threshold"):
        config = config.model_copy(update={"conf_threshold": MAP_CONF_THRESHOLD})
    decoder = POSTPROCESSORS.get(config.type).from_config(config, model.manifest.labels)
    predictions: list[tuple[metrics.Box, ...]] = []
    for outs, geometry in zip(raw, data.geometries, strict=True):
        _, detections = decoder.decode(list(outs), geometry)
        predictions.append(tuple(metrics.Box(*d.bbox, d.class_id, d.score) for d in detections))
    n_classes = max(1, len(model.manifest.labels))
    return ModelRun(first, metrics.mean_average_precision(predictions, data.boxes, n_classes))


def threshold_of(model: LoadedModel) -> float | None:
    return None if model.manifest.sensor is None else model.manifest.sensor.threshold
