"""Compare two bundles on a labelled set and decide: accuracy drop ≤ max_drop points AND
speed-up ≥ min_speedup, both measured here with the backend the device uses."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends.base import BACKENDS
from runtime.model import LoadedModel, read_manifest
from runtime.registry import import_submodules
from tools.evaluate.compare import (
    METRIC_NAMES,
    Comparison,
    check_compatible,
    run_model,
    threshold_of,
)
from tools.evaluate.data import LabelledSet, load_set
from tools.evaluate.divergence import is_qdq, layer_divergence
from tools.evaluate.latency import interleaved_latency
from tools.evaluate.progress import progress_bar

logger = logging.getLogger(__name__)
WORST_LAYERS = 5


@dataclass(frozen=True, slots=True)
class GateThresholds:
    max_drop_points: float = 1.0
    min_speedup: float = 1.2


@dataclass(frozen=True, slots=True)
class GateResult:
    passed: bool
    reasons: tuple[str, ...]  # why it failed; empty when it passed
    thresholds: GateThresholds
    comparison: Comparison


def load_bundle(bundle: Path) -> LoadedModel:
    import_submodules("runtime.backends")
    kind = read_manifest(bundle).backend
    config = BACKENDS.get(kind).config_type.model_validate({"type": kind})
    return LoadedModel.load(bundle, config)


def compare_bundles(
    reference_dir: Path,
    candidate_dir: Path,
    data: LabelledSet | str | Path,
    *,
    float_source: bytes | None = None,
    latency_runs: int = 50,
) -> Comparison:
    """``float_source``: the float model the candidate was quantized from (after pre-processing),
    for per-layer divergence; defaults to the reference bundle's model file."""
    reference, candidate = load_bundle(reference_dir), load_bundle(candidate_dir)
    try:
        check_compatible(reference, candidate)
        labelled = data if isinstance(data, LabelledSet) else load_set(data, reference.manifest)
        runs = []
        for model in (reference, candidate):
            name = f"{model.manifest.name}/{model.manifest.version}"
            with progress_bar(f"evaluating {name}", len(labelled)) as advance:
                runs.append(run_model(model, labelled, advance))
        latency = interleaved_latency(reference, candidate, labelled.inputs, latency_runs)
        candidate_bytes = candidate.path.read_bytes()
        layers = []
        if candidate.manifest.backend == "onnxruntime" and is_qdq(candidate_bytes):
            source = float_source if float_source is not None else reference.path.read_bytes()
            layers = layer_divergence(source, candidate_bytes, labelled.inputs)
        return Comparison(
            task=labelled.task,
            metric=METRIC_NAMES[labelled.task],
            source=labelled.source,
            labelled_by=labelled.labelled_by,
            n_samples=len(labelled),
            labels=tuple(reference.manifest.labels),
            reference=runs[0],
            candidate=runs[1],
            truth_ids=labelled.class_ids,
            truth_flags=labelled.anomalous,
            threshold=threshold_of(reference),
            latency=latency,
            layers=tuple(layers),
        )
    finally:
        reference.close()
        candidate.close()


def decide(comparison: Comparison, thresholds: GateThresholds) -> GateResult:
    reasons = []
    if comparison.drop_points > thresholds.max_drop_points:
        reasons.append(
            f"{comparison.metric} dropped {comparison.drop_points:.2f} points "
            f"(> {thresholds.max_drop_points:g} allowed)"
        )
    speedup = comparison.speedup
    if speedup is not None and speedup < thresholds.min_speedup:
        reasons.append(f"speed-up {speedup:.2f}x (< {thresholds.min_speedup:g}x required)")
    return GateResult(not reasons, tuple(reasons), thresholds, comparison)


def gate_record(result: GateResult) -> dict[str, Any]:
    """What goes into the manifest's ``provenance.gate``."""
    c = result.comparison
    latency = c.latency
    return {
        "passed": result.passed,
        "reasons": list(result.reasons),
        "thresholds": {
            "max_drop_points": result.thresholds.max_drop_points,
            "min_speedup": result.thresholds.min_speedup,
        },
        "data": {"source": c.source, "labelled_by": c.labelled_by, "n_samples": c.n_samples},
        "metric": c.metric,
        "reference_accuracy": round(c.reference.accuracy, 6),
        "quantized_accuracy": round(c.candidate.accuracy, 6),
        "drop_points": round(c.drop_points, 4),
        "agreement": None if c.agreement is None else round(c.agreement, 6),
        "max_abs_diff": round(c.max_abs_diff, 6),
        "mean_abs_diff": round(c.mean_abs_diff, 6),
        "latency_p50_ms": None
        if latency is None
        else {"reference": round(latency[0].p50_ms, 4), "quantized": round(latency[1].p50_ms, 4)},
        "speedup": None if c.speedup is None else round(c.speedup, 3),
        "worst_layers": [
            {"tensor": layer.tensor, "node": layer.node, "sqnr_db": _finite(layer.sqnr_db)}
            for layer in c.layers[:WORST_LAYERS]
        ],
    }


def _finite(x: float) -> float | None:
    return round(x, 3) if np.isfinite(x) else None
