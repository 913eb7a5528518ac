"""Frozen, slotted messages exchanged between pipeline stages.

Times ending in ``_ns`` are nanoseconds. ``*_mono_ns`` come from ``time.monotonic_ns`` and are only
compared with each other (stage latencies); ``*_at_ns`` are wall-clock ``time.time_ns`` for display.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import numpy as np
from numpy.typing import NDArray

ALERT_SCHEMA_VERSION = 1

BBox = tuple[float, float, float, float]
"""x1, y1, x2, y2 in pixels of the original frame."""


@dataclass(frozen=True, slots=True)
class Frame:
    source: str
    seq: int
    captured_at_ns: int
    captured_mono_ns: int
    image: NDArray[np.uint8]  # H x W x 3, BGR as OpenCV delivers it

    def __post_init__(self) -> None:
        img = self.image
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(
                f"frame from {self.source!r}: expected HxWx3 uint8 image, "
                f"got shape {img.shape} dtype {img.dtype}"
            )

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True, slots=True)
class SensorReading:
    """One decoded sensor message: one or more named values of one sensor key at one time."""

    key: str
    ts_ns: int  # wall-clock time of the reading (from the payload, else arrival time)
    received_mono_ns: int
    fields: tuple[str, ...]
    values: NDArray[np.float64]  # shape (len(fields),), finite

    def __post_init__(self) -> None:
        v = self.values
        if v.dtype != np.float64 or v.shape != (len(self.fields),):
            raise ValueError(
                f"reading {self.key!r}: expected float64 values of shape ({len(self.fields)},), "
                f"got shape {v.shape} dtype {v.dtype}"
            )


@dataclass(frozen=True, slots=True)
class Classification:
    class_id: int
    label: str
    score: float


@dataclass(frozen=True, slots=True)
class Detection:
    class_id: int
    label: str
    score: float
    bbox: BBox


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    version: str
    sha256: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


@dataclass(frozen=True, slots=True)
class StageTimes:
    """Monotonic timestamps taken as a frame passes through the stages."""

    captured_mono_ns: int
    dequeued_mono_ns: int
    preprocessed_mono_ns: int
    inferred_mono_ns: int
    postprocessed_mono_ns: int

    def latency_ms(self, published_mono_ns: int) -> dict[str, float]:
        def ms(a: int, b: int) -> float:
            return round((b - a) / 1e6, 3)

        return {
            "queue": ms(self.captured_mono_ns, self.dequeued_mono_ns),
            "preprocess": ms(self.dequeued_mono_ns, self.preprocessed_mono_ns),
            "infer": ms(self.preprocessed_mono_ns, self.inferred_mono_ns),
            "postprocess": ms(self.inferred_mono_ns, self.postprocessed_mono_ns),
            "publish": ms(self.postprocessed_mono_ns, published_mono_ns),
            "total": ms(self.captured_mono_ns, published_mono_ns),
        }


@dataclass(frozen=True, slots=True)
class Inference:
    """A model's decoded result for one frame: classifications and/or detections."""

    pipeline: str
    frame: Frame
    model: ModelInfo
    classifications: tuple[Classification, ...] = ()
    detections: tuple[Detection, ...] = ()


AlertState = Literal["raised", "cleared"]


@dataclass(frozen=True, slots=True)
class FeatureContribution:
    """One feature of a window and how far it sits from the training data (``zscore``)."""

    name: str
    value: float
    zscore: float

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "value": _round(self.value), "zscore": _round(self.zscore)}


@dataclass(frozen=True, slots=True)
class WindowScore:
    """A model's verdict on one sensor window, with the window's features.

    ``values`` holds what sensor rules compare: ``"score"`` and every feature name.
    ``zscores`` (same order as ``feature_names``) compare the features with the training data;
    None when the bundle has no training statistics.
    """

    pipeline: str
    key: str
    seq: int  # per-pipeline window counter
    start_ns: int
    end_ns: int
    n_samples: int
    partial: bool
    model: ModelInfo
    score: float
    threshold: float  # the model's own threshold (manifest), for alerts and default rules
    feature_names: tuple[str, ...]
    features: NDArray[np.float32]  # (len(feature_names),)
    zscores: NDArray[np.float32] | None
    received_mono_ns: int  # arrival of the newest reading of the window (latency origin)

    def value(self, name: str) -> float:
        """``"score"`` or a feature name; KeyError naming the choices for anything else."""
        if name == "score":
            return self.score
        try:
            return float(self.features[self.feature_names.index(name)])
        except ValueError:
            raise KeyError(
                f"{name!r} is neither 'score' nor a feature of this model "
                f"({', '.join(self.feature_names[:8])}...)"
            ) from None

    def top_features(self, n: int = 3) -> tuple[FeatureContribution, ...]:
        """The ``n`` features furthest from the training data (largest ``|zscore|``)."""
        if self.zscores is None or n <= 0:
            return ()
        magnitude = np.nan_to_num(np.abs(self.zscores), nan=0.0)
        order = np.argsort(-magnitude, kind="stable")[:n]
        return tuple(
            FeatureContribution(
                self.feature_names[i], float(self.features[i]), float(self.zscores[i])
            )
            for i in order
        )


@dataclass(frozen=True, slots=True)
class SensorDetail:
    """What a sensor alert is about: the key, the window, and the value that crossed a level."""

    key: str
    window_start_ns: int
    window_end_ns: int
    value_name: str  # "score", a feature name, or "silence_s"
    value: float
    threshold: float | None
    top_features: tuple[FeatureContribution, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "key": self.key,
            "window_start": iso_utc(self.window_start_ns),
            "window_end": iso_utc(self.window_end_ns),
            "value_name": self.value_name,
            "value": _round(self.value),
            "threshold": None if self.threshold is None else _round(self.threshold),
            "top_features": [f.as_dict() for f in self.top_features],
        }


@dataclass(frozen=True, slots=True)
class RuleEvent:
    """What a rule decided for one inference or window; the pipeline turns it into an Alert."""

    rule: str
    state: AlertState
    severity: str
    label: str
    score: float
    bbox: BBox | None = None
    sensor: SensorDetail | None = None


@dataclass(frozen=True, slots=True)
class Alert:
    alert_id: str
    seq: int
    boot_id: str
    device_id: str
    pipeline: str
    rule: str
    state: AlertState
    severity: str
    ts_ns: int
    model: ModelInfo
    label: str
    score: float
    bbox: BBox | None
    source: str
    frame_seq: int
    captured_at_ns: int
    captured_mono_ns: int
    latency_ms: dict[str, float] = field(default_factory=dict)
    sensor: SensorDetail | None = None

    def as_dict(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "schema_version": ALERT_SCHEMA_VERSION,
            "alert_id": self.alert_id,
            "seq": self.seq,
            "boot_id": self.boot_id,
            "device_id": self.device_id,
            "pipeline": self.pipeline,
            "rule": self.rule,
            "state": self.state,
            "severity": self.severity,
            "ts": iso_utc(self.ts_ns),
            "model": self.model.as_dict(),
            "label": self.label,
            "score": round(self.score, 6),
            "bbox": None if self.bbox is None else [round(v, 2) for v in self.bbox],
            "source": self.source,
            "frame_seq": self.frame_seq,
            "captured_at": iso_utc(self.captured_at_ns),
            "latency_ms": self.latency_ms,
        }
        if self.sensor is not None:
            doc["sensor"] = self.sensor.as_dict()
        return doc

    def to_json(self) -> bytes:
        return json.dumps(self.as_dict(), separators=(",", ":")).encode()


def _round(x: float) -> float | None:
    """JSON-safe: 6 significant decimals, and None for NaN/inf (JSON has no such numbers)."""
    return round(x, 6) if np.isfinite(x) else None


def iso_utc(ns: int) -> str:
    """UTC ISO-8601 with millisecond precision and a trailing Z."""
    dt = datetime.fromtimestamp(ns / 1e9, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
