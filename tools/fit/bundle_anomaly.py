"""Recording → windows → features → fitted model → ONNX bundle with the anomaly manifest.

An anomaly bundle has one input ``features`` [N, D] float32 and no ``postprocess``; its manifest's
``sensor`` section tells sensor pipelines how to feed and read it: the fields, the count window,
the :class:`FeatureSpec`, the feature names, the output holding the score (``score``, [N], for
every model kind; a PCA bundle also outputs ``t2`` and ``q``, but ``score`` is the decision
score the threshold applies to), the threshold, and the training features' mean and std.
``provenance`` records how the model was made: the threshold method, the training score summary
and false-alarm rate, and the model's own parameters.
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
from tools.fit.data import DEFAULT_FEATURES, Recording, featurise, load_recordings, make_windows
from tools.fit.thresholds import ThresholdSpec, score_quantiles

logger = logging.getLogger(__name__)

ModelKind = Literal["pca", "iforest", "autoencoder"]
MODEL_KINDS: tuple[ModelKind, ...] = ("pca", "iforest", "autoencoder")
SCORE_OUTPUT = "score"
"""The output every model kind writes its per-window decision score to."""
STD_FLOOR_REL = 1e-6


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


def feature_stats(
    features: NDArray[np.floating[Any]],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean and population std of every training feature; the std is floored at
    ``1e-6 * max(1, |mean|)`` so that z-scores against it are always finite."""
    x = np.asarray(features, np.float64)
    mean = x.mean(axis=0)
    std = np.maximum(x.std(axis=0), STD_FLOOR_REL * np.maximum(1.0, np.abs(mean)))
    return mean, std


def manifest_fields(
    model: AnomalyModel,
    *,
    feature_names: Sequence[str],
    feature_spec: FeatureSpec,
    fields: Sequence[str],
    window: int,
    hop: int,
    threshold: ThresholdSpec,
    training_features: NDArray[np.floating[Any]],
    training_scores: NDArray[np.float64],
    key_column: str | None,
    timestamp_column: str | None,
    source: str,
    extra_provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    outputs = model.output_specs()
    if SCORE_OUTPUT not in [o["name"] for o in outputs]:
        raise ValueError(f"{model.kind}: the model has no {SCORE_OUTPUT!r} output")
    mean, std = feature_stats(training_features)
    return {
        "inputs": [{"name": "features", "shape": [None, len(feature_names)], "dtype": "float32"}],
        "outputs": outputs,
        "sensor": {
            "fields": list(fields),
            "window": {"kind": "count", "size": window, "hop": hop},
            "features": feature_spec.model_dump(mode="json"),
            "feature_names": list(feature_names),
            "score_output": SCORE_OUTPUT,
            "threshold": model.threshold,
            "feature_mean": mean.tolist(),
            "feature_std": std.tolist(),
        },
        "description": f"{model.kind} anomaly model on {', '.join(fields)}; "
        f"{SCORE_OUTPUT} > {model.threshold:g} is anomalous",
        "provenance": {
            "tool": "tools.fit",
            "model_kind": model.kind,
            "source": source,
            "key_column": key_column,
            "timestamp_column": timestamp_column,
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
            **(extra_provenance or {}),
        },
    }


@dataclass(frozen=True, slots=True)
class FittedAnomaly:
    """A fitted model and the manifest fields of its bundle, not yet written."""

    model: AnomalyModel
    feature_names: tuple[str, ...]
    training_features: NDArray[np.float32]
    manifest_fields: dict[str, Any]

    def write(self, out: Path, name: str, version: str, *, overwrite: bool = False) -> FitResult:
        bundle_dir = write_bundle(
            Path(out),
            name,
            version,
            self.model.to_onnx(),
            self.manifest_fields,
            overwrite=overwrite,
        )
        return FitResult(bundle_dir, self.model, self.feature_names, self.training_features)


def fit_anomaly(
    recordings: Sequence[Recording],
    *,
    kind: ModelKind,
    threshold: ThresholdSpec,
    window: int = 64,
    hop: int = 32,
    feature_spec: FeatureSpec = DEFAULT_FEATURES,
    seed: int = 0,
    source: str,
    key_column: str | None = None,
    timestamp_column: str | None = None,
    extra_provenance: dict[str, Any] | None = None,
) -> FittedAnomaly:
    """Fit ``kind`` on the count windows of ``recordings`` (one per key, same fields)."""
    if not recordings:
        raise ValueError("fit: no recordings")
    fields = recordings[0].fields
    for rec in recordings:
        if rec.fields != fields:
            raise ValueError(
                f"fit: recordings must share fields: {list(fields)} vs {list(rec.fields)} "
                f"(key {rec.key!r})"
            )
    batch = make_windows(recordings, window, hop)
    features = featurise(batch, feature_spec)
    names = tuple(feature_spec.names(fields, window))
    logger.info("fit %s: %d windows x %d features from %s", kind, *features.shape, source)
    model = fit_model(kind, features, threshold, seed)
    fields_for_manifest = manifest_fields(
        model,
        feature_names=names,
        feature_spec=feature_spec,
        fields=fields,
        window=window,
        hop=hop,
        threshold=threshold,
        training_features=features,
        training_scores=model.score(features),
        key_column=key_column,
        timestamp_column=timestamp_column,
        source=source,
        extra_provenance=extra_provenance,
    )
    return FittedAnomaly(model, names, features, fields_for_manifest)


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
    """Fit ``kind`` on the windows of a normal-operation recording file and write the bundle."""
    recordings = load_recordings(
        input_path, fields, key_column=key_column, timestamp_column=timestamp_column
    )
    fitted = fit_anomaly(
        recordings,
        kind=kind,
        threshold=threshold,
        window=window,
        hop=hop,
        feature_spec=feature_spec,
        seed=seed,
        source=Path(input_path).name,
        key_column=key_column,
        timestamp_column=timestamp_column,
    )
    return fitted.write(out, name, version, overwrite=overwrite)
