"""Alarm thresholds from training scores: empirical quantiles and the POT tail fit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tools.fit.thresholds import (
    ThresholdSpec,
    fit_threshold,
    pot_threshold,
    quantile_threshold,
    score_quantiles,
)


def test_quantile_of_uniform_grid() -> None:
    scores = np.arange(1001, dtype=np.float64)  # 0..1000
    assert quantile_threshold(scores, 0.995) == pytest.approx(995.0)
    assert fit_threshold(scores, ThresholdSpec("quantile", 0.9)) == pytest.approx(900.0)


@pytest.mark.parametrize("rate", [1e-3, 1e-4])
def test_pot_on_exponential_tail_matches_analytic_quantile(rate: float) -> None:
    rng = np.random.default_rng(7)
    scores = rng.exponential(scale=2.0, size=50_000)
    analytic = -2.0 * math.log(rate)  # P(X > x) = exp(-x / 2)
    assert pot_threshold(scores, rate) == pytest.approx(analytic, rel=0.08)


def test_pot_extrapolates_beyond_the_sample_where_a_quantile_cannot() -> None:
    rng = np.random.default_rng(3)
    scores = rng.exponential(size=20_000)
    analytic = -math.log(1e-5)  # 11.5, beyond the sample maximum (~10)
    assert scores.max() < analytic
    assert pot_threshold(scores, 1e-5) == pytest.approx(analytic, rel=0.15)


def test_pot_on_pareto_tail() -> None:
    rng = np.random.default_rng(11)
    scores = rng.pareto(4.0, size=50_000) + 1.0  # P(X > x) = x**-4
    analytic = 1e-3 ** (-1 / 4)
    assert pot_threshold(scores, 1e-3) == pytest.approx(analytic, rel=0.1)


def test_pot_rate_inside_the_body_is_the_empirical_quantile() -> None:
    scores = np.arange(1001, dtype=np.float64)
    assert pot_threshold(scores, 0.1) == pytest.approx(900.0)


def test_pot_needs_enough_exceedances() -> None:
    with pytest.raises(ValueError, match="need at least 10"):
        pot_threshold(np.arange(100, dtype=np.float64), 1e-3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("quantile:0.995", ThresholdSpec("quantile", 0.995)),
        ("pot:1e-3", ThresholdSpec("pot", 1e-3)),
    ],
)
def test_parse(text: str, expected: ThresholdSpec) -> None:
    assert ThresholdSpec.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.995", "expected 'quantile:<level>'"),
        ("gev:0.1", "expected 'quantile:<level>'"),
        ("quantile:high", "'high' is not a number"),
        ("quantile:1.5", "strictly between 0 and 1"),
        ("pot:0", "strictly between 0 and 1"),
    ],
)
def test_parse_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ThresholdSpec.parse(text)


def test_false_alarm_budget_is_split_per_method() -> None:
    assert ThresholdSpec("quantile", 0.99).with_false_alarm_rate(0.005).param == pytest.approx(
        0.995
    )
    assert ThresholdSpec("pot", 1e-3).with_false_alarm_rate(5e-4).param == pytest.approx(5e-4)


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [float("inf")]])
def test_rejects_empty_or_non_finite_scores(bad: list[float]) -> None:
    with pytest.raises(ValueError, match="training scores"):
        quantile_threshold(bad, 0.9)


def test_score_quantiles_summary() -> None:
    summary = score_quantiles(np.arange(1001, dtype=np.float64))
    assert summary["q0.5"] == pytest.approx(500.0)
    assert summary["max"] == 1000.0
