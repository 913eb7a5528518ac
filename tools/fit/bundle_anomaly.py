"""Recording → windows → features → fitted model → ONNX bundle with the anomaly manifest.

The runtime manifest's input/postprocess fields describe camera models; an anomaly bundle has one
input ``features`` [N, D] float32, and its feature spec, window, threshold and training score
summary live in ``provenance``. The manifest requires a ``postprocess``; ``{"type": "classify"}``
is a placeholder until the runtime has a score postprocessor.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from runtime.processing.features import FeatureSpec
from tools.bundle import write_bundle
from tools.fit.data import DEFAULT_FEATURES, featurise, load_recordings, make_windows
from tools.fit.thresholds import ThresholdSpec, score_quantiles

logger = logging.getLogger(__name__)

ModelKind = Literal["pca", "iforest", "autoencoder"]
MODEL_KINDS: tuple[ModelKind, ...] = ("pca", "iforest", "autoencoder")


class AnomalyModel(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def threshold(self) -> float: ...
    def score(self, features: NDArray[np.floating[Any]]) -> NDArray[np.float64]: ...
    def output_specs(self) -> list[dict[str, Any]]: ...
    def provenance(self) -> dict[str, Any]: ...
    def to_onnx(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class FitResult:
    bundle_dir: Path
    model: AnomalyModel
    feature_names: tuple[str, ...]
    training_features: NDArray[np.float32]


def fit_model(
    kind: ModelKind, features: NDArray[np.floating[Any]], threshold: ThresholdSpec, seed: int = 0
) -> AnomalyModel:
    if kind == "pca":
        from tools.fit.pca import fit_pca

        return fit_pca(features, threshold)
    if kind == "iforest":
        from tools.fit.isolation import fit_isolation_forest

        return fit_isolation_forest(features, threshold, seed=seed)
    if kind == "autoencoder":
        from tools.fit.autoencoder import fit_autoencoder

        return fit_autoencoder(features, threshold, seed=seed)
    raise ValueError(f"unknown model {kind!r}; expected one of: {', '.join(MODEL_KINDS)}")


def manifest_fields(
    model: AnomalyModel,
    *,
    feature_names: Sequence[str],
    feature_spec: FeatureSpec,
    fields: Sequence[str],
    window: int,
    hop: int,
    threshold: ThresholdSpec,
    training_scores: NDArray[np.float64],
    key_column: str | None,
    timestamp_column: str | None,
    source: str,
) -> dict[str, Any]:
    return {
        "inputs": [{"name": "features", "shape": [None, len(feature_names)], "dtype": "float32"}],
        "outputs": model.output_specs(),
        "postprocess": {"type": "classify"},
        "description": f"{model.kind} anomaly model on {', '.join(fields)}; score > threshold is anomalous",
        "provenance": {
            "tool": "tools.fit",
            "model_kind": model.kind,
            "source": source,
            "fields": list(fields),
            "key_column": key_column,
            "timestamp_column": timestamp_column,
            "window": {"type": "count", "size": window, "hop": hop},
            "feature_spec": feature_spec.model_dump(mode="json"),
            "feature_names": list(feature_names),
            "threshold": {
                "method": threshold.method,
                "param": threshold.param,
                "value": model.threshold,
            },
            "training": {
                "n_windows": int(training_scores.size),
                "score_quantiles": score_quantiles(training_scores),
                "false_alarm_rate": float((training_scores > model.threshold).mean()),
            },
            "model": model.provenance(),
        },
    }


def fit_recording(
    input_path: Path,
    fields: Sequence[str],
    *,
    kind: ModelKind,
    threshold: ThresholdSpec,
    name: str,
    version: str,
    out: Path,
    window: int = 64,
    hop: int = 32,
    key_column: str | None = None,
    timestamp_column: str | None = None,
    feature_spec: FeatureSpec = DEFAULT_FEATURES,
    seed: int = 0,
    overwrite: bool = False,
) -> FitResult:
    """Fit ``kind`` on the windows of a normal-operation recording and write the bundle."""
    recordings = load_recordings(
        input_path, fields, key_column=key_column, timestamp_column=timestamp_column
    )
    batch = make_windows(recordings, window, hop)
    features = featurise(batch, feature_spec)
    names = tuple(feature_spec.names(fields, window))
    logger.info("fit %s: %d windows x %d features from %s", kind, *features.shape, input_path)
    model = fit_model(kind, features, threshold, seed)
    scores = model.score(features)
    fields_for_manifest = manifest_fields(
        model,
        feature_names=names,
        feature_spec=feature_spec,
        fields=fields,
        window=window,
        hop=hop,
        threshold=threshold,
        training_scores=scores,
        key_column=key_column,
        timestamp_column=timestamp_column,
        source=Path(input_path).name,
    )
    bundle_dir = write_bundle(
        Path(out), name, version, model.to_onnx(), fields_for_manifest, overwrite=overwrite
    )
    return FitResult(bundle_dir, model, names, features)
