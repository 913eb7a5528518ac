"""Fit anomaly models on normal-operation sensor recordings and bundle them as ONNX (desktop only)."""

from tools.fit.bundle_anomaly import (
    MODEL_KINDS,
    SCORE_OUTPUT,
    FitResult,
    FittedAnomaly,
    fit_anomaly,
    fit_model,
    fit_recording,
)
from tools.fit.thresholds import ThresholdSpec, fit_threshold, pot_threshold, quantile_threshold

__all__ = [
    "MODEL_KINDS",
    "SCORE_OUTPUT",
    "FitResult",
    "FittedAnomaly",
    "ThresholdSpec",
    "fit_anomaly",
    "fit_model",
    "fit_recording",
    "fit_threshold",
    "pot_threshold",
    "quantile_threshold",
]
