"""Alarm thresholds from the training score distribution: an empirical quantile, or a
peaks-over-threshold (POT) fit of a generalized Pareto tail for a target false-alarm rate."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

logger = logging.getLogger(__name__)

ThresholdMethod = Literal["quantile", "pot"]

POT_INITIAL_QUANTILE = 0.98
"""Exceedances over this quantile of the training scores are fitted by the POT method."""
_MIN_EXCEEDANCES = 10


@dataclass(frozen=True, slots=True)
class ThresholdSpec:
    """``quantile`` with ``param`` the quantile level (0.995), or ``pot`` with ``param`` the
    target false-alarm rate per window (1e-3)."""

    method: ThresholdMethod
    param: float

    def __post_init__(self) -> None:
        if not 0.0 < self.param < 1.0:
            raise ValueError(
                f"threshold {self.method}:{self.param}: expected a value strictly between 0 and 1"
            )

    @property
    def false_alarm_rate(self) -> float:
        return 1.0 - self.param if self.method == "quantile" else self.param

    def with_false_alarm_rate(self, rate: float) -> ThresholdSpec:
        """The same method aimed at another false-alarm rate."""
        return ThresholdSpec(self.method, 1.0 - rate if self.method == "quantile" else rate)

    def __str__(self) -> str:
        return f"{self.method}:{self.param:g}"

    @classmethod
    def parse(cls, text: str) -> ThresholdSpec:
        """``quantile:0.995`` or ``pot:1e-3``."""
        method, sep, value = text.partition(":")
        if not sep or method not in ("quantile", "pot"):
            raise ValueError(
                f"threshold {text!r}: expected 'quantile:<level>' (e.g. quantile:0.995) "
                "or 'pot:<false-alarm rate>' (e.g. pot:1e-3)"
            )
        try:
            param = float(value)
        except ValueError as exc:
            raise ValueError(f"threshold {text!r}: {value!r} is not a number") from exc
        return cls("quantile" if method == "quantile" else "pot", param)


def _clean(scores: ArrayLike) -> NDArray[np.float64]:
    x = np.asarray(scores, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("threshold: no training scores")
    if not np.all(np.isfinite(x)):
        raise ValueError(
            f"threshold: {int((~np.isfinite(x)).sum())} training scores are not finite"
        )
    return x


def quantile_threshold(scores: ArrayLike, level: float) -> float:
    """The empirical ``level`` quantile (linear interpolation) of the scores."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"quantile level {level}: expected 0 < level < 1")
    return float(np.quantile(_clean(scores), level))


def pot_threshold(
    scores: ArrayLike, false_alarm_rate: float, initial_quantile: float = POT_INITIAL_QUANTILE
) -> float:
    """The level exceeded with probability ``false_alarm_rate`` under a generalized Pareto fit of
    the exceedances over the ``initial_quantile`` of the scores (Pickands-Balkema-de Haan).

    With a rate at or above the tail fraction the empirical quantile is returned; with too few
    exceedances to fit, a :class:`ValueError` says how many are needed.
    """
    from scipy.stats import genpareto  # type: ignore[import-untyped]

    x = _clean(scores)
    if not 0.0 < false_alarm_rate < 1.0:
        raise ValueError(f"POT false-alarm rate {false_alarm_rate}: expected 0 < rate < 1")
    u = float(np.quantile(x, initial_quantile))
    excess = x[x > u] - u
    tail_fraction = excess.size / x.size
    if false_alarm_rate >= tail_fraction:
        return float(np.quantile(x, 1.0 - false_alarm_rate))
    if excess.size < _MIN_EXCEEDANCES:
        raise ValueError(
            f"POT: {excess.size} scores exceed the {initial_quantile} quantile; need at least "
            f"{_MIN_EXCEEDANCES} (more training windows, or a quantile threshold)"
        )
    shape, _, scale = genpareto.fit(excess, floc=0.0)
    ratio = false_alarm_rate / tail_fraction
    if abs(shape) < 1e-9:
        level = u - scale * math.log(ratio)
    else:
        level = u + scale / shape * (ratio ** (-shape) - 1.0)
    logger.debug(
        "POT: u=%.6g, %d exceedances, xi=%.4g, sigma=%.4g -> %.6g",
        u,
        excess.size,
        shape,
        scale,
        level,
    )
    return float(level)


def fit_threshold(scores: ArrayLike, spec: ThresholdSpec) -> float:
    if spec.method == "quantile":
        return quantile_threshold(scores, spec.param)
    return pot_threshold(scores, spec.param)


def score_quantiles(scores: ArrayLike) -> dict[str, float]:
    """A summary of the training scores for the manifest."""
    x = _clean(scores)
    levels = (0.5, 0.9, 0.99, 0.995, 0.999)
    out = {f"q{lvl:g}": float(np.quantile(x, lvl)) for lvl in levels}
    out["max"] = float(x.max())
    return out
