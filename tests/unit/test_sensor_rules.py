"""Sensor rules (threshold, rate_of_change, silence): per-key state, hysteresis, persistence,
gaps, event detail, bounded keys and config validation."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from runtime.config.base import config_union
from runtime.errors import ConfigError
from runtime.messages import ModelInfo, RuleEvent, WindowScore
from runtime.processing.windows import Gap
from runtime.registry import import_submodules
from runtime.rules.rate_of_change import RateOfChangeConfig, RateOfChangeRule
from runtime.rules.sensor_base import SENSOR_RULES, SensorRule
from runtime.rules.sensor_threshold import SensorThresholdConfig, SensorThresholdRule
from runtime.rules.silence import SilenceConfig, SilenceRule

S = 1_000_000_000  # ns per second
MODEL = ModelInfo("m", "1", "0" * 64)
FEATURES = ("vibration.rms", "temp.mean", "current.max")
MODEL_THRESHOLD = 0.7
R, C = "raised", "cleared"


def window(
    key: str = "pump1",
    end_s: float = 1.0,
    score: float = 0.0,
    *,
    size_s: float = 1.0,
    features: Sequence[float] = (0.0, 0.0, 0.0),
    zscores: Sequence[float] | None = None,
    seq: int = 0,
) -> WindowScore:
    end_ns = round(end_s * S)
    return WindowScore(
        pipeline="p",
        key=key,
        seq=seq,
        start_ns=end_ns - round(size_s * S),
        end_ns=end_ns,
        n_samples=10,
        partial=False,
        model=MODEL,
        score=score,
        threshold=MODEL_THRESHOLD,
        feature_names=FEATURES,
        features=np.asarray(features, np.float32),
        zscores=None if zscores is None else np.asarray(zscores, np.float32),
        received_mono_ns=end_ns,
    )


def gap(key: str, last_s: float, next_s: float, *, ongoing: bool = False) -> Gap:
    return Gap(key, round(last_s * S), round(next_s * S), ongoing=ongoing)


def threshold(**fields: Any) -> SensorThresholdRule:
    cfg = SensorThresholdConfig.model_validate({"type": "threshold"} | fields)
    return SensorThresholdRule.from_config(cfg, "th", MODEL_THRESHOLD)


def rate(**fields: Any) -> RateOfChangeRule:
    cfg = RateOfChangeConfig.model_validate(
        {"type": "rate_of_change", "value": "vibration.rms", "max_rate_per_s": 1.0} | fields
    )
    return RateOfChangeRule.from_config(cfg, "roc", MODEL_THRESHOLD)


def silence(**fields: Any) -> SilenceRule:
    cfg = SilenceConfig.model_validate({"type": "silence"} | fields)
    return SilenceRule.from_config(cfg, "quiet", MODEL_THRESHOLD)


def run(
    rule: SensorRule,
    values: Sequence[float],
    *,
    feature: bool = False,
    key: str = "pump1",
    period_s: float = 1.0,
) -> list[tuple[int, str]]:
    """One window per value (ends ``period_s`` apart); (window index, state) per event."""
    events: list[tuple[int, str]] = []
    for i, v in enumerate(values):
        end_s = (i + 1) * period_s
        w = window(key, end_s, features=(v, 0.0, 0.0)) if feature else window(key, end_s, v)
        events.extend((i, e.state) for e in rule.on_window(w, round(end_s * S)))
    return events


# --- threshold -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "scores", "expected"),
    [
        pytest.param({}, [0.1, 0.8, 0.9, 0.2], [(1, R), (3, C)], id="model-threshold-default"),
        pytest.param({}, [0.7, 0.71, 0.7], [(1, R), (2, C)], id="strictly-above-raises"),
        pytest.param(
            {"raise_above": 0.5}, [0.6, 0.9, 0.9, 0.9], [(0, R)], id="no-repeat-while-raised"
        ),
        pytest.param(
            {"raise_above": 0.8, "clear_below": 0.3},
            [0.9, 0.5, 0.79, 0.31, 0.3, 0.5, 0.81],
            [(0, R), (4, C), (6, R)],
            id="hysteresis-band-changes-nothing",
        ),
        pytest.param(
            {"raise_above": 0.8},
            [0.9, 0.5, 0.81, 0.3],
            [(0, R), (1, C), (2, R), (3, C)],
            id="without-hysteresis-flaps",
        ),
        pytest.param(
            {"clear_below": 0.3},
            [0.75, 0.5, 0.2],
            [(0, R), (2, C)],
            id="clear-below-alone-keeps-model-threshold",
        ),
        pytest.param(
            {"for_windows": 3},
            [0.9, 0.9, 0.1, 0.9, 0.9, 0.9, 0.9],
            [(5, R)],
            id="for-windows-streak-restarts",
        ),
        pytest.param(
            {"raise_above": 0.8, "clear_below": 0.3, "for_windows": 2},
            [0.9, 0.5, 0.9, 0.9],
            [(3, R)],
            id="band-window-breaks-raise-streak",
        ),
        pytest.param(
            {"raise_above": 0.8, "clear_below": 0.3, "clear_windows": 2},
            [0.9, 0.1, 0.5, 0.1, 0.1],
            [(0, R), (4, C)],
            id="band-window-breaks-clear-streak",
        ),
        pytest.param(
            {"emit_clear": False}, [0.9, 0.1, 0.9, 0.1], [(0, R), (2, R)], id="emit-clear-false"
        ),
        pytest.param(
            {"cooldown_s": 2.5},
            [0.9, 0.1, 0.9, 0.9, 0.9, 0.9],
            [(0, R), (1, C), (4, R)],
            id="cooldown-then-persisting-condition-raises",
        ),
        pytest.param(
            {"raise_below": 0.2, "clear_above": 0.5},
            [0.3, 0.1, 0.3, 0.49, 0.5, 0.19],
            [(1, R), (4, C), (5, R)],
            id="below-side-hysteresis",
        ),
        pytest.param(
            {"raise_below": 0.2}, [0.2, 0.19, 0.2], [(1, R), (2, C)], id="below-side-default-clear"
        ),
    ],
)
def test_threshold_on_score(
    config: dict[str, Any], scores: list[float], expected: list[tuple[int, str]]
) -> None:
    assert run(threshold(**config), scores) == expected


def test_threshold_on_a_feature() -> None:
    rule = threshold(value="vibration.rms", raise_above=5.0, clear_below=4.0)
    assert run(rule, [1.0, 6.0, 4.5, 3.0], feature=True) == [(1, R), (3, C)]
    assert rule.label == "vibration.rms"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        pytest.param({"for_s": 3.0}, [(3, R)], id="for-s"),  # ends 1,2,3,4: 4 - 1 >= 3
        pytest.param({"for_s": 2.5}, [(3, R)], id="for-s-rounds-up-to-a-window"),
        pytest.param({"for_s": 1.0, "for_windows": 4}, [(3, R)], id="both-windows-decide"),
        pytest.param({"for_s": 4.0, "for_windows": 2}, [(4, R)], id="both-seconds-decide"),
    ],
)
def test_threshold_for_s_persistence(
    config: dict[str, Any], expected: list[tuple[int, str]]
) -> None:
    assert run(threshold(**config), [0.9] * 6) == expected


def test_for_s_counts_window_time_not_window_count() -> None:
    rule = threshold(for_s=10.0)
    assert run(rule, [0.9] * 3, period_s=5.0) == [(2, R)]  # ends 5, 10, 15


def test_for_s_streak_broken_by_a_low_window() -> None:
    assert run(threshold(for_s=2.0), [0.9, 0.9, 0.1, 0.9, 0.9, 0.9]) == [(5, R)]


def test_hole_breaks_the_streak_but_not_a_raised_alert() -> None:
    rule = threshold(for_windows=2, clear_windows=2)
    assert rule.on_window(window(end_s=1, score=0.9), 1 * S) == []
    assert rule.on_gap(gap("pump1", 1, 5), 5 * S) == []
    assert rule.on_window(window(end_s=6, score=0.9), 6 * S) == []  # streak restarted
    assert [e.state for e in rule.on_window(window(end_s=7, score=0.9), 7 * S)] == [R]
    assert rule.on_window(window(end_s=8, score=0.1), 8 * S) == []
    assert rule.on_gap(gap("pump1", 8, 12), 12 * S) == []  # the raised alert stays raised
    assert rule.on_window(window(end_s=13, score=0.1), 13 * S) == []  # clear streak restarted
    assert [e.state for e in rule.on_window(window(end_s=14, score=0.1), 14 * S)] == [C]


def test_ongoing_silence_does_not_break_the_streak() -> None:
    rule = threshold(for_windows=2)
    rule.on_window(window(end_s=1, score=0.9), 1 * S)
    rule.on_gap(gap("pump1", 1, 5, ongoing=True), 5 * S)
    assert [e.state for e in rule.on_window(window(end_s=2, score=0.9), 6 * S)] == [R]


def test_threshold_event_detail() -> None:
    rule = threshold(value="vibration.rms", raise_above=5.0, severity="critical", top_features=2)
    w = window(end_s=10, features=(7.5, 20.0, 3.0), zscores=(4.0, -6.0, 0.5))
    (raised,) = rule.on_window(w, 10 * S)
    assert (raised.rule, raised.state, raised.severity) == ("th", R, "critical")
    assert (raised.label, raised.score, raised.bbox) == ("vibration.rms", 7.5, None)
    d = raised.sensor
    assert d is not None
    assert (d.key, d.window_start_ns, d.window_end_ns) == ("pump1", 9 * S, 10 * S)
    assert (d.value_name, d.value, d.threshold) == ("vibration.rms", 7.5, 5.0)
    assert [(f.name, f.zscore) for f in d.top_features] == [
        ("temp.mean", -6.0),
        ("vibration.rms", 4.0),
    ]

    (cleared,) = rule.on_window(window(end_s=11, features=(2.0, 0, 0), zscores=(9, 9, 9)), 11 * S)
    assert (cleared.state, cleared.label, cleared.score) == (C, "vibration.rms", 2.0)
    d = cleared.sensor
    assert d is not None
    assert (d.window_start_ns, d.window_end_ns, d.value, d.threshold) == (10 * S, 11 * S, 2.0, 5.0)
    assert d.top_features == ()


def test_score_label_and_threshold_default_to_the_model() -> None:
    (raised,) = threshold().on_window(window(score=0.9), S)
    assert raised.label == "anomaly"
    assert raised.sensor is not None
    assert (raised.sensor.value_name, raised.sensor.threshold) == ("score", MODEL_THRESHOLD)
    (labelled,) = threshold(label="bearing").on_window(window(score=0.9), S)
    assert labelled.label == "bearing"


def test_keys_are_independent() -> None:
    rule = threshold(raise_above=0.5, for_windows=2)
    events: list[tuple[str, str]] = []
    for i, (key, score) in enumerate(
        [("a", 0.9), ("b", 0.9), ("a", 0.9), ("b", 0.1), ("b", 0.9), ("a", 0.1), ("b", 0.9)]
    ):
        for e in rule.on_window(window(key, i + 1, score), (i + 1) * S):
            assert e.sensor is not None
            events.append((e.sensor.key, e.state))
    # b's low window neither broke a's streak nor, later, did a's clear touch b
    assert events == [("a", R), ("a", C), ("b", R)]


@pytest.mark.parametrize(
    ("patterns", "watched"),
    [
        pytest.param(["*"], {"pump1", "fan1", "Pump2", "pump1/extra"}, id="wildcard"),
        pytest.param(["pump*"], {"pump1", "pump1/extra"}, id="prefix-case-sensitive"),
        pytest.param(["fan?", "Pump*"], {"fan1", "Pump2"}, id="several"),
        pytest.param(["pump1"], {"pump1"}, id="exact"),
    ],
)
def test_keys_patterns(patterns: list[str], watched: set[str]) -> None:
    rules: list[SensorRule] = [threshold(keys=patterns), rate(keys=patterns, value="score")]
    for rule in rules:
        seen = set()
        for key in ("pump1", "fan1", "Pump2", "pump1/extra"):
            rule.on_window(window(key, 1, 0.0), S)
            for e in rule.on_window(window(key, 2, 5.0), 2 * S):
                assert e.sensor is not None
                seen.add(e.sensor.key)
        assert seen == watched


def test_nan_counts_neither_way_and_is_logged_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rule = threshold(for_windows=2, clear_windows=2)
    nan = math.nan
    with caplog.at_level(logging.WARNING):
        # NaN breaks the raise streak, and later the clear streak; it never clears by itself
        events = run(rule, [0.9, nan, 0.9, 0.9, nan, nan, 0.1, nan, 0.1, 0.1])
    assert events == [(3, R), (9, C)]
    nan_logs = [r for r in caplog.records if "NaN" in r.getMessage()]
    assert len(nan_logs) == 1


def test_check_names_the_valid_values() -> None:
    threshold().check(FEATURES)
    threshold(value="temp.mean", raise_above=1.0).check(FEATURES)
    rule = threshold(value="vibration.rsm", raise_above=1.0)
    with pytest.raises(ConfigError, match=r"'vibration\.rsm'.*'score'.*vibration\.rms, temp\.mean"):
        rule.check(FEATURES)
    with pytest.raises(ConfigError, match=r"vibration\.rsm"):
        rate(value="vibration.rsm").check(FEATURES)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"raise_above": 1, "raise_below": 0}, "one side", id="both-sides"),
        pytest.param({"raise_above": 1, "clear_above": 2}, "one side", id="mixed-sides"),
        pytest.param(
            {"raise_above": 1, "clear_below": 2},
            r"clear_below \(2.0\) must be <=",
            id="clear-above-raise",
        ),
        pytest.param(
            {"raise_below": 1, "clear_above": 0.5},
            r"clear_above \(0.5\) must be >=",
            id="clear-below-raise",
        ),
        pytest.param({"clear_above": 1}, "clear_above needs raise_below", id="clear-without-raise"),
        pytest.param({"value": "temp.mean"}, "needs a level", id="feature-without-level"),
        pytest.param({"raise_above": math.nan}, "finite", id="nan-level"),
        pytest.param({"for_windows": 0}, "greater than or equal to 1", id="for-windows-0"),
        pytest.param({"for_s": -1}, "greater than or equal to 0", id="negative-for-s"),
        pytest.param({"severity": "fatal"}, "info", id="severity"),
        pytest.param({"keys": []}, "at least 1", id="no-keys"),
        pytest.param({"raise_score": 0.5}, "Extra inputs", id="camera-field"),
    ],
)
def test_threshold_config_errors(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SensorThresholdConfig.model_validate({"type": "threshold"} | fields)


def test_clear_below_beyond_the_model_threshold_fails_at_build() -> None:
    cfg = SensorThresholdConfig.model_validate({"type": "threshold", "clear_below": 0.9})
    with pytest.raises(ConfigError, match=r"clear_below \(0.9\).*model threshold \(0.7\)"):
        SensorThresholdRule.from_config(cfg, "th", MODEL_THRESHOLD)


# --- rate_of_change ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "values", "expected"),
    [
        pytest.param({}, [0, 0.5, 2.0, 2.5, 0.5, 0.0], [(2, R), (3, C), (4, R), (5, C)], id="both"),
        pytest.param(
            {"direction": "rising"}, [0, 0.5, 2.0, 2.5, 0.5, 0.0], [(2, R), (3, C)], id="rising"
        ),
        pytest.param(
            {"direction": "falling"}, [0, 0.5, 2.0, 2.5, 0.5, 0.0], [(4, R), (5, C)], id="falling"
        ),
        pytest.param({}, [0, 1.0, 2.0], [], id="exactly-max-does-not-raise"),
        pytest.param(
            {"clear_rate_per_s": 0.25},
            [0, 2, 2.5, 3.0, 3.25, 3.5],
            [(1, R), (4, C)],
            id="hysteresis",
        ),
        pytest.param({"for_windows": 2}, [0, 2, 1.5, 3, 5], [(4, R)], id="for-windows"),
        pytest.param({"emit_clear": False}, [0, 2, 2, 4], [(1, R), (3, R)], id="emit-clear-false"),
    ],
)
def test_rate_sequences(
    config: dict[str, Any], values: list[float], expected: list[tuple[int, str]]
) -> None:
    assert run(rate(**config), values, feature=True) == expected


def test_rate_divides_by_the_time_between_window_ends() -> None:
    rule = rate()
    assert run(rule, [0.0, 3.0, 6.0, 7.0], feature=True, period_s=2.0) == [(1, R), (3, C)]
    rule = rate(direction="falling", severity="info")
    rule.on_window(window(end_s=2, features=(10.0, 0, 0)), 2 * S)
    (ev,) = rule.on_window(window(end_s=6, features=(2.0, 0, 0)), 6 * S)
    assert (ev.label, ev.score, ev.severity) == ("vibration.rms rate", -2.0, "info")
    d = ev.sensor
    assert d is not None
    assert (d.key, d.window_start_ns, d.window_end_ns) == ("pump1", 5 * S, 6 * S)
    assert (d.value_name, d.value, d.threshold) == ("vibration.rms/s", -2.0, 1.0)


def test_rate_is_not_computed_across_a_hole() -> None:
    rule = rate()
    rule.on_window(window(end_s=1, features=(0.0, 0, 0)), S)
    assert rule.on_gap(gap("pump1", 1, 9), 9 * S) == []
    assert rule.on_window(window(end_s=10, features=(100.0, 0, 0)), 10 * S) == []
    assert [e.state for e in rule.on_window(window(end_s=11, features=(102.0, 0, 0)), 11 * S)] == [
        R
    ]


def test_rate_ignores_a_window_from_before_the_hole_scored_after_it() -> None:
    rule = rate()
    rule.on_window(window(end_s=1, features=(0.0, 0, 0)), S)
    rule.on_gap(gap("pump1", 1.5, 9), 9 * S)
    assert rule.on_window(window(end_s=2, features=(0.0, 0, 0)), 10 * S) == []  # late, pre-hole
    assert rule.on_window(window(end_s=10, features=(100.0, 0, 0)), 10 * S) == []
    assert states(rule.on_window(window(end_s=11, features=(102.0, 0, 0)), 11 * S)) == [R]


def test_rate_survives_an_ongoing_silence_report() -> None:
    rule = rate()
    rule.on_window(window(end_s=1, features=(0.0, 0, 0)), S)
    rule.on_gap(gap("pump1", 1, 3, ongoing=True), 3 * S)
    assert [e.state for e in rule.on_window(window(end_s=2, features=(5.0, 0, 0)), 4 * S)] == [R]


def test_rate_nan_value_resets_the_previous_window() -> None:
    nan = math.nan
    # 0 -> NaN -> 5: no rate across the NaN window; 5 -> 9 rises 4/s
    assert run(rate(), [0.0, nan, 5.0, 9.0], feature=True) == [(3, R)]


def test_rate_ignores_a_window_not_after_the_previous_one() -> None:
    rule = rate()
    rule.on_window(window(end_s=5, features=(0.0, 0, 0)), S)
    assert rule.on_window(window(end_s=5, features=(50.0, 0, 0)), 2 * S) == []
    assert rule.on_window(window(end_s=4, features=(50.0, 0, 0)), 3 * S) == []
    # the previous window is still the one ending at 5 s with value 0
    assert rule.on_window(window(end_s=6, features=(0.5, 0, 0)), 4 * S) == []


def test_rate_of_the_score() -> None:
    rule = rate(value="score", max_rate_per_s=0.1)
    assert run(rule, [0.1, 0.15, 0.5]) == [(2, R)]
    assert rule.label == "score rate"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"max_rate_per_s": 0}, "greater than 0", id="zero-max"),
        pytest.param(
            {"clear_rate_per_s": 2.0}, r"clear_rate_per_s \(2.0\) must be <=", id="clear-beyond-max"
        ),
        pytest.param({"direction": "up"}, "rising", id="direction"),
        pytest.param({"max_rate_per_s": math.inf}, "finite", id="inf-max"),
    ],
)
def test_rate_config_errors(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        rate(**fields)


# --- silence -------------------------------------------------------------------------------------


def states(events: list[RuleEvent]) -> list[str]:
    return [e.state for e in events]


def test_ongoing_silence_raises_and_the_next_window_clears() -> None:
    rule = silence()
    (raised,) = rule.on_gap(gap("pump1", 10, 40, ongoing=True), 40 * S)
    assert (raised.rule, raised.state, raised.label, raised.severity) == (
        "quiet",
        R,
        "silence",
        "warning",
    )
    d = raised.sensor
    assert d is not None
    assert (d.key, d.window_start_ns, d.window_end_ns) == ("pump1", 10 * S, 40 * S)
    assert (d.value_name, d.value, d.threshold, raised.score) == ("silence_s", 30.0, 0.0, 30.0)
    assert rule.on_gap(gap("pump1", 10, 70, ongoing=True), 70 * S) == []  # no second raise
    assert rule.on_window(window("pump2", 80), 80 * S) == []  # another key
    (cleared,) = rule.on_window(window("pump1", 81), 81 * S)
    assert cleared.state == C
    d = cleared.sensor
    assert d is not None
    assert (d.key, d.window_start_ns, d.window_end_ns, d.value) == ("pump1", 80 * S, 81 * S, 30.0)
    assert rule.on_window(window("pump1", 82), 82 * S) == []


def test_a_hole_raises_and_clears_at_once() -> None:
    rule = silence(severity="critical")
    events = rule.on_gap(gap("pump1", 10, 25), 25 * S)
    assert states(events) == [R, C]
    for e in events:
        assert e.severity == "critical"
        assert e.sensor is not None
        assert (e.sensor.window_start_ns, e.sensor.window_end_ns, e.sensor.value) == (
            10 * S,
            25 * S,
            15.0,
        )
    assert len(rule.tracked) == 0


def test_a_hole_after_an_ongoing_silence_just_clears() -> None:
    rule = silence()
    assert states(rule.on_gap(gap("pump1", 10, 40, ongoing=True), 40 * S)) == [R]
    (cleared,) = rule.on_gap(gap("pump1", 10, 55), 56 * S)
    assert cleared.state == C
    assert cleared.sensor is not None
    assert cleared.sensor.value == 45.0  # the whole hole
    assert rule.on_window(window("pump1", 57), 57 * S) == []


def test_a_window_from_before_the_silence_does_not_clear_it() -> None:
    rule = silence()
    rule.on_gap(gap("pump1", 10, 40, ongoing=True), 40 * S)
    assert (
        rule.on_window(window("pump1", 10), 41 * S) == []
    )  # time window ending at the last reading
    assert rule.on_window(window("pump1", 10 + 1e-9), 41 * S) == []  # count window: last ts + 1
    assert states(rule.on_window(window("pump1", 60), 60 * S)) == [C]


@pytest.mark.parametrize(
    ("fields", "gaps", "expected"),
    [
        pytest.param({"min_silence_s": 20}, [("pump1", 0, 19, True)], [], id="short-silence"),
        pytest.param({"min_silence_s": 20}, [("pump1", 0, 20, True)], [R], id="at-min"),
        pytest.param({"min_silence_s": 20}, [("pump1", 0, 10, False)], [], id="short-hole"),
        pytest.param({"keys": ["fan*"]}, [("pump1", 0, 50, True)], [], id="unwatched-key"),
        pytest.param({"emit_clear": False}, [("pump1", 0, 50, False)], [R], id="no-clear"),
        pytest.param(
            {"min_silence_s": 20},
            [("pump1", 0, 20, True), ("pump1", 0, 21, False)],
            [R, C],
            id="hole-after-ongoing-just-clears",
        ),
    ],
)
def test_silence_cases(
    fields: dict[str, Any], gaps: list[tuple[str, float, float, bool]], expected: list[str]
) -> None:
    rule = silence(**fields)
    events: list[RuleEvent] = []
    for key, last, nxt, ongoing in gaps:
        events += rule.on_gap(gap(key, last, nxt, ongoing=ongoing), round(nxt * S))
    assert states(events) == expected


def test_silence_config_errors() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        silence(min_silence_s=-1)
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        silence(max_keys=0)


# --- bounded keys --------------------------------------------------------------------------------


def test_idle_keys_are_evicted_least_recently_seen_first() -> None:
    rule = threshold(max_keys=3, for_windows=2)
    for t, key in enumerate(["a", "b", "c", "a", "d", "e"]):
        rule.on_window(window(key, t + 1, 0.1), (t + 1) * S)
    assert len(rule.tracked) == 3
    assert rule.tracked.evicted == 2
    assert [k for k in "abcde" if k in rule.tracked] == ["a", "d", "e"]  # a was seen again


def test_a_raised_key_survives_a_flood_of_bogus_keys() -> None:
    rule = threshold(max_keys=2)
    assert states(rule.on_window(window("pump1", 1, 0.9), S)) == [R]
    for i in range(100):
        rule.on_window(window(f"bogus{i}", 2, 0.1), 2 * S)
    assert len(rule.tracked) == 2
    assert rule.tracked.evicted == 99
    assert states(rule.on_window(window("pump1", 3, 0.1), 3 * S)) == [C]


def test_when_every_tracked_key_is_raised_new_keys_are_rejected() -> None:
    rule = threshold(max_keys=2)
    for key in ("a", "b", "c"):
        rule.on_window(window(key, 1, 0.9), S)
    assert ("c" in rule.tracked, rule.tracked.rejected) == (False, 1)
    assert states(rule.on_window(window("a", 2, 0.1), 2 * S)) == [C]  # a is idle again
    assert states(rule.on_window(window("c", 3, 0.9), 3 * S)) == [R]  # so c displaces it
    assert rule.tracked.evicted == 1


def test_silence_tracks_at_most_max_keys_raised_keys() -> None:
    rule = silence(max_keys=2)
    raised = [rule.on_gap(gap(f"k{i}", 0, 30, ongoing=True), 30 * S) for i in range(5)]
    assert [len(r) for r in raised] == [1, 1, 0, 0, 0]
    assert (len(rule.tracked), rule.tracked.rejected) == (2, 3)
    assert states(rule.on_window(window("k0", 40), 40 * S)) == [C]
    assert len(rule.tracked) == 1


# --- registry and schema -------------------------------------------------------------------------


def test_registry_and_discriminated_union() -> None:
    import_submodules("runtime.rules")
    assert {"threshold", "rate_of_change", "silence"} <= set(SENSOR_RULES.keys())
    adapter: TypeAdapter[Any] = TypeAdapter(config_union(SENSOR_RULES.items()))
    cfg = adapter.validate_python({"type": "rate_of_change", "max_rate_per_s": 2})
    assert isinstance(cfg, RateOfChangeConfig)
    rule = SENSOR_RULES.get(cfg.type).from_config(cfg, "r", MODEL_THRESHOLD)
    assert isinstance(rule, RateOfChangeRule)
    defs = adapter.json_schema()["$defs"]
    assert {"SensorThresholdConfig", "RateOfChangeConfig", "SilenceConfig"} <= set(defs)
    with pytest.raises(TypeError, match="expected SilenceConfig"):
        SilenceRule.from_config(cfg, "r", MODEL_THRESHOLD)


# --- property: per key, events alternate raised / cleared, starting with raised ------------------

_event_steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("window"),
            st.sampled_from(["a", "b", "c"]),
            st.one_of(st.floats(-2, 2), st.just(math.nan)),
        ),
        st.tuples(st.just("gap"), st.sampled_from(["a", "b", "c"]), st.booleans()),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(
    steps=_event_steps,
    for_windows=st.integers(1, 3),
    clear_windows=st.integers(1, 3),
    for_s=st.sampled_from([0.0, 1.5]),
    cooldown_s=st.sampled_from([0.0, 2.0]),
    max_keys=st.integers(1, 4),
)
def test_events_alternate_per_key(
    steps: list[tuple[str, str, Any]],
    for_windows: int,
    clear_windows: int,
    for_s: float,
    cooldown_s: float,
    max_keys: int,
) -> None:
    common = {
        "for_windows": for_windows,
        "clear_windows": clear_windows,
        "for_s": for_s,
        "cooldown_s": cooldown_s,
        "max_keys": max_keys,
    }
    rules: list[SensorRule] = [
        threshold(raise_above=0.5, clear_below=-0.5, **common),
        threshold(value="vibration.rms", raise_below=0.0, **common),
        rate(**common),
        silence(max_keys=max_keys, min_silence_s=1.0),
    ]
    for rule in rules:
        last: dict[str, str] = {}
        t = 0
        for kind, key, arg in steps:
            t += 1
            if kind == "window":
                w = window(key, t, arg, features=(arg, 0.0, 0.0))
                events = rule.on_window(w, t * S)
            else:
                events = rule.on_gap(gap(key, t - 2, t, ongoing=arg), t * S)
                t += 1
            for e in events:
                assert e.sensor is not None and e.sensor.key == key
                assert e.state == (C if last.get(key) == R else R)
                last[key] = e.state
