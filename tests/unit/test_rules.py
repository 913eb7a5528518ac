"""threshold and zone rules: debounce, hysteresis, cooldown, events, zone geometry, config."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from runtime.config.base import HasConfigType, config_union
from runtime.messages import BBox, Classification, Detection, Frame, Inference, ModelInfo
from runtime.registry import import_submodules
from runtime.rules._state import AlertStateMachine, FrameMatch
from runtime.rules.base import RULES
from runtime.rules.threshold import ThresholdConfig, ThresholdRule
from runtime.rules.zone import ZoneConfig, ZoneRule

S = 1_000_000_000  # ns per second
FRAME = Frame("cam0", 0, 0, 0, np.zeros((480, 640, 3), np.uint8))
BIG_FRAME = Frame("cam1", 0, 0, 0, np.zeros((960, 1280, 3), np.uint8))
MODEL = ModelInfo("m", "1", "0" * 64)
# normalized (0.25..0.75) of a 640x480 frame: x 160..480, y 120..360
SQUARE = [(0.25, 0.25), (0.75, 0.25), (0.75, 0.75), (0.25, 0.75)]
SQUARE_PX = [(160.0, 120.0), (480.0, 120.0), (480.0, 360.0), (160.0, 360.0)]


def inference(
    classifications: Sequence[tuple[str, float]] = (),
    detections: Sequence[tuple[str, float, BBox]] = (),
    frame: Frame = FRAME,
) -> Inference:
    return Inference(
        pipeline="p",
        frame=frame,
        model=MODEL,
        classifications=tuple(Classification(i, c, s) for i, (c, s) in enumerate(classifications)),
        detections=tuple(Detection(i, c, s, box) for i, (c, s, box) in enumerate(detections)),
    )


def threshold(**overrides: Any) -> ThresholdRule:
    fields: dict[str, Any] = {"type": "threshold", "labels": ["person"], "raise_score": 0.5}
    cfg = ThresholdConfig.model_validate(fields | overrides)
    return ThresholdRule.from_config(cfg, "t")


def zone(**overrides: Any) -> ZoneRule:
    fields: dict[str, Any] = {"type": "zone", "labels": ["person"], "polygon": SQUARE}
    cfg = ZoneConfig.model_validate(fields | overrides)
    return ZoneRule.from_config(cfg, "z")


def run_scores(
    rule: ThresholdRule, scores: Sequence[float], times_s: Sequence[float] | None = None
) -> list[tuple[int, str]]:
    """Feed one 'person' classification per frame; return (frame index, state) per event."""
    times = times_s if times_s is not None else range(len(scores))
    events: list[tuple[int, str]] = []
    for i, (score, t) in enumerate(zip(scores, times, strict=True)):
        for ev in rule.evaluate(inference([("person", score)]), round(t * S)):
            events.append((i, ev.state))
    return events


R, C = "raised", "cleared"


# --- threshold: debounce / hysteresis ------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "scores", "expected"),
    [
        pytest.param({}, [0.1, 0.6, 0.7, 0.2], [(1, R), (3, C)], id="basic"),
        pytest.param({}, [0.5, 0.49], [(0, R), (1, C)], id="at-raise-score-raises"),
        pytest.param({}, [0.9, 0.9, 0.9, 0.9], [(0, R)], id="no-repeat-while-raised"),
        pytest.param(
            {"raise_frames": 3},
            [0.1, 0.9, 0.1, 0.1, 0.9, 0.9, 0.9],
            [(6, R)],
            id="debounce-single-spike-ignored",
        ),
        pytest.param(
            {"raise_frames": 3},
            [0.9, 0.9, 0.1, 0.9, 0.9, 0.9],
            [(5, R)],
            id="debounce-streak-restarts-after-gap",
        ),
        pytest.param(
            {"clear_frames": 2},
            [0.9, 0.1, 0.9, 0.1, 0.1],
            [(0, R), (4, C)],
            id="clear-debounce",
        ),
        pytest.param(
            {"raise_score": 0.7, "clear_score": 0.3},
            [0.8, 0.5, 0.71, 0.4, 0.69, 0.31, 0.29, 0.5, 0.69, 0.7],
            [(0, R), (6, C), (9, R)],
            id="hysteresis-no-flapping",
        ),
        pytest.param(
            {"raise_score": 0.7},
            [0.8, 0.5, 0.71, 0.4, 0.69, 0.31, 0.29, 0.5, 0.69, 0.7],
            [(0, R), (1, C), (2, R), (3, C), (9, R)],
            id="same-sequence-without-hysteresis-flaps",
        ),
        pytest.param(
            {"raise_score": 0.7, "clear_score": 0.3, "clear_frames": 2},
            [0.9, 0.1, 0.5, 0.1, 0.1],
            [(0, R), (4, C)],
            id="band-frame-breaks-clear-streak",
        ),
        pytest.param(
            {"raise_score": 0.7, "clear_score": 0.3, "raise_frames": 2},
            [0.8, 0.5, 0.8, 0.8],
            [(3, R)],
            id="band-frame-breaks-raise-streak",
        ),
        pytest.param(
            {"emit_clear": False},
            [0.9, 0.1, 0.1, 0.9, 0.1],
            [(0, R), (3, R)],
            id="emit-clear-false-still-resets",
        ),
    ],
)
def test_threshold_sequences(
    config: dict[str, Any], scores: list[float], expected: list[tuple[int, str]]
) -> None:
    assert run_scores(threshold(**config), scores) == expected


@pytest.mark.parametrize(
    ("config", "scores", "times_s", "expected"),
    [
        pytest.param(
            {"cooldown_s": 10},
            [0.9, 0.1, 0.9, 0.9, 0.9],
            [0, 1, 2, 10.999, 11],
            [(0, R), (1, C), (4, R)],
            id="suppressed-within-allowed-at-boundary",
        ),
        pytest.param(
            {"cooldown_s": 5},
            [0.9, 0.1, 0.9, 0.1, 0.9],
            [0, 1, 5, 6, 12],
            [(0, R), (1, C), (4, R)],
            id="spike-during-cooldown-forgotten",
        ),
        pytest.param(
            {"cooldown_s": 5, "raise_frames": 3},
            [0.9, 0.9, 0.9, 0.1, 0.9, 0.9, 0.9, 0.9, 0.9],
            [0, 1, 2, 3, 4, 5, 6, 7, 8],
            [(2, R), (3, C), (8, R)],
            id="streak-built-during-cooldown-raises-when-it-ends",
        ),
        pytest.param(
            {"cooldown_s": 100},
            [0.9, 0.1],
            [0, 1],
            [(0, R), (1, C)],
            id="no-cooldown-before-first-clear",
        ),
        pytest.param(
            {"cooldown_s": 5, "emit_clear": False},
            [0.9, 0.1, 0.9, 0.9],
            [0, 1, 2, 6],
            [(0, R), (3, R)],
            id="silent-clear-starts-cooldown",
        ),
        pytest.param(
            {"cooldown_s": 0.5},
            [0.9, 0.1, 0.9, 0.9],
            [0, 1, 1.4, 1.5],
            [(0, R), (1, C), (3, R)],
            id="sub-second-cooldown",
        ),
    ],
)
def test_threshold_cooldown(
    config: dict[str, Any],
    scores: list[float],
    times_s: list[float],
    expected: list[tuple[int, str]],
) -> None:
    assert run_scores(threshold(**config), scores, times_s) == expected


# --- threshold: event contents -------------------------------------------------------------------


def test_raised_event_from_classification_has_no_bbox() -> None:
    rule = threshold(severity="critical")
    [ev] = rule.evaluate(inference([("person", 0.75)]), 0)
    assert (ev.rule, ev.state, ev.severity, ev.label, ev.score, ev.bbox) == (
        "t",
        "raised",
        "critical",
        "person",
        0.75,
        None,
    )
    assert rule.raised


def test_raised_event_carries_best_detection_bbox() -> None:
    rule = threshold(labels=["person", "cat"])
    inf = inference(
        classifications=[("cat", 0.6)],
        detections=[
            ("person", 0.7, (1.0, 2.0, 3.0, 4.0)),
            ("person", 0.8, (10.0, 20.0, 30.0, 40.0)),
            ("dog", 0.99, (0.0, 0.0, 5.0, 5.0)),  # not watched
        ],
    )
    [ev] = rule.evaluate(inf, 0)
    assert (ev.label, ev.score, ev.bbox) == ("person", 0.8, (10.0, 20.0, 30.0, 40.0))


def test_classification_beats_weaker_detection() -> None:
    rule = threshold(labels=["person", "cat"])
    inf = inference([("cat", 0.9)], [("person", 0.8, (1.0, 2.0, 3.0, 4.0))])
    [ev] = rule.evaluate(inf, 0)
    assert (ev.label, ev.score, ev.bbox) == ("cat", 0.9, None)


def test_equal_scores_keep_the_first_item() -> None:
    rule = threshold(labels=["*"])
    inf = inference(
        classifications=[("cat", 0.8)],
        detections=[("person", 0.8, (1.0, 2.0, 3.0, 4.0)), ("dog", 0.8, (5.0, 6.0, 7.0, 8.0))],
    )
    [ev] = rule.evaluate(inf, 0)
    assert (ev.label, ev.bbox) == ("cat", None)


def test_cleared_event_carries_raised_label_and_frame_score() -> None:
    rule = threshold(labels=["person", "car"], raise_score=0.8, clear_score=0.4)
    assert [e.state for e in rule.evaluate(inference([("person", 0.9)]), 0)] == ["raised"]
    [ev] = rule.evaluate(inference(detections=[("car", 0.2, (0.0, 0.0, 9.0, 9.0))]), 1)
    assert (ev.state, ev.label, ev.score, ev.bbox) == ("cleared", "person", 0.2, None)
    assert not rule.raised


def test_empty_frame_scores_zero_and_clears() -> None:
    rule = threshold()
    rule.evaluate(inference([("person", 0.9)]), 0)
    [ev] = rule.evaluate(inference(), 1)
    assert (ev.state, ev.label, ev.score) == ("cleared", "person", 0.0)


@pytest.mark.parametrize(
    ("labels", "seen_label", "raises"),
    [
        (["*"], "forklift", True),
        (["person", "*"], "forklift", True),
        (["person"], "forklift", False),
        (["person", "forklift"], "forklift", True),
        (["Person"], "person", False),
    ],
)
def test_label_matching(labels: list[str], seen_label: str, raises: bool) -> None:
    rule = threshold(labels=labels)
    events = rule.evaluate(inference(detections=[(seen_label, 0.9, (0.0, 0.0, 1.0, 1.0))]), 0)
    assert [e.label for e in events] == ([seen_label] if raises else [])


def test_nan_score_never_raises_or_wins() -> None:
    rule = threshold()
    assert rule.evaluate(inference([("person", float("nan"))]), 0) == []
    [ev] = rule.evaluate(inference([("person", float("nan")), ("person", 0.6)]), 1)
    assert ev.score == 0.6


def test_numpy_scores_become_python_floats() -> None:
    rule = threshold()
    [ev] = rule.evaluate(inference([("person", np.float32(0.75))]), 0)  # type: ignore[list-item]
    assert type(ev.score) is float


# --- threshold: config validation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "loc", "fragment"),
    [
        ({"clear_score": 0.8}, ("clear_score",), "clear_score (0.8) must be <= raise_score (0.5)"),
        ({"labels": []}, ("labels",), "at least 1 item"),
        ({"labels": [""]}, ("labels", 0), "at least 1 character"),
        ({"raise_score": 0}, ("raise_score",), "greater than 0"),
        ({"raise_score": 1.5}, ("raise_score",), "less than or equal to 1"),
        ({"raise_score": float("nan")}, ("raise_score",), "finite"),
        ({"clear_score": -0.1}, ("clear_score",), "greater than or equal to 0"),
        ({"raise_frames": 0}, ("raise_frames",), "greater than or equal to 1"),
        ({"clear_frames": 0}, ("clear_frames",), "greater than or equal to 1"),
        ({"cooldown_s": -1}, ("cooldown_s",), "greater than or equal to 0"),
        ({"cooldown_s": float("inf")}, ("cooldown_s",), "finite"),
        ({"severity": "fatal"}, ("severity",), "'info', 'warning' or 'critical'"),
        ({"raise_scor": 0.4}, ("raise_scor",), "Extra inputs are not permitted"),
    ],
)
def test_threshold_config_errors(
    overrides: dict[str, Any], loc: tuple[str | int, ...], fragment: str
) -> None:
    with pytest.raises(ValidationError) as info:
        threshold(**overrides)
    errors = info.value.errors()
    assert [e["loc"] for e in errors] == [loc]
    assert fragment in errors[0]["msg"]


def test_threshold_config_defaults() -> None:
    cfg = ThresholdConfig.model_validate(
        {"type": "threshold", "labels": ["person"], "raise_score": 0.6}
    )
    assert cfg.effective_clear_score == 0.6
    assert (cfg.raise_frames, cfg.clear_frames, cfg.cooldown_s) == (1, 1, 0.0)
    assert (cfg.severity, cfg.emit_clear) == ("warning", True)


# --- zone ----------------------------------------------------------------------------------------


def box_with_bottom_center(x: float, y: float, h: float = 40.0) -> BBox:
    return (x - 20.0, y - h, x + 20.0, y)


@pytest.mark.parametrize(
    ("anchor_xy", "inside"),
    [
        pytest.param((320.0, 300.0), True, id="inside"),
        pytest.param((100.0, 300.0), False, id="left-of-zone"),
        pytest.param((320.0, 400.0), False, id="below-zone"),
        pytest.param((320.0, 360.0), True, id="on-bottom-edge"),
        pytest.param((160.0, 200.0), True, id="on-left-edge"),
        pytest.param((480.0, 360.0), True, id="on-corner"),
        pytest.param((480.5, 200.0), False, id="just-outside-right-edge"),
    ],
)
@pytest.mark.parametrize("polygon_kind", ["normalized", "pixels"])
def test_zone_inside_outside_edge(
    anchor_xy: tuple[float, float], inside: bool, polygon_kind: str
) -> None:
    rule = zone() if polygon_kind == "normalized" else zone(polygon=SQUARE_PX, coordinates="pixels")
    inf = inference(detections=[("person", 0.9, box_with_bottom_center(*anchor_xy))])
    events = rule.evaluate(inf, 0)
    assert [e.state for e in events] == (["raised"] if inside else [])


def test_normalized_zone_scales_with_frame_size_pixels_do_not() -> None:
    # bottom-centre (200, 300): inside x 160..480 on 640x480, outside x 320..960 on 1280x960
    box = box_with_bottom_center(200.0, 300.0)
    on_small = inference(detections=[("person", 0.9, box)])
    on_big = inference(detections=[("person", 0.9, box)], frame=BIG_FRAME)

    normalized = zone()
    assert normalized.match(on_small).hit
    assert not normalized.match(on_big).hit
    assert normalized.match(on_small).hit  # cached contour follows the frame size back

    pixels = zone(polygon=SQUARE_PX, coordinates="pixels")
    assert pixels.match(on_small).hit
    assert pixels.match(on_big).hit


@pytest.mark.parametrize(
    ("bbox", "bottom_center_hit", "center_hit"),
    [
        pytest.param((300.0, 300.0, 340.0, 400.0), False, True, id="straddles-bottom-edge"),
        pytest.param((300.0, 60.0, 340.0, 160.0), True, False, id="straddles-top-edge"),
        pytest.param((300.0, 200.0, 340.0, 300.0), True, True, id="fully-inside"),
    ],
)
def test_anchor_choice(bbox: BBox, bottom_center_hit: bool, center_hit: bool) -> None:
    inf = inference(detections=[("person", 0.9, bbox)])
    assert zone(anchor="bottom_center").match(inf).hit is bottom_center_hit
    assert zone(anchor="center").match(inf).hit is center_hit


def test_concave_zone_notch_is_outside() -> None:
    # an L: the top-right quarter of the bounding square is not part of the zone
    l_shape = [(0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0)]
    rule = zone(polygon=l_shape, anchor="center")
    in_notch = inference(detections=[("person", 0.9, (480.0, 60.0, 520.0, 100.0))])
    in_leg = inference(detections=[("person", 0.9, (100.0, 60.0, 140.0, 100.0))])
    assert not rule.match(in_notch).hit
    assert rule.match(in_leg).hit


@pytest.mark.parametrize(
    ("detection", "hit"),
    [
        pytest.param(("person", 0.5), True, id="at-min-score"),
        pytest.param(("person", 0.49), False, id="below-min-score"),
        pytest.param(("dog", 0.99), False, id="unwatched-label"),
        pytest.param(("person", float("nan")), False, id="nan-score"),
    ],
)
def test_zone_label_and_min_score(detection: tuple[str, float], hit: bool) -> None:
    label, score = detection
    inf = inference(detections=[(label, score, box_with_bottom_center(320.0, 300.0))])
    assert zone().match(inf).hit is hit


def test_zone_ignores_classifications() -> None:
    assert zone(labels=["*"]).evaluate(inference([("person", 0.99)]), 0) == []


def test_zone_event_is_best_detection_inside() -> None:
    inside_weak = box_with_bottom_center(200.0, 300.0)
    inside_strong = box_with_bottom_center(400.0, 300.0)
    outside_strongest = box_with_bottom_center(600.0, 300.0)
    inf = inference(
        detections=[
            ("person", 0.6, inside_weak),
            ("person", 0.99, outside_strongest),
            ("person", 0.9, inside_strong),
        ]
    )
    [ev] = zone(severity="info").evaluate(inf, 0)
    assert (ev.rule, ev.state, ev.severity, ev.label, ev.score, ev.bbox) == (
        "z",
        "raised",
        "info",
        "person",
        0.9,
        inside_strong,
    )
    [cleared] = zone_cleared_after(inf)
    assert (cleared.label, cleared.score, cleared.bbox) == ("person", 0.0, None)


def zone_cleared_after(raising: Inference) -> list[Any]:
    rule = zone()
    rule.evaluate(raising, 0)
    return rule.evaluate(inference(), 1)


@pytest.mark.parametrize(
    ("config", "inside", "times_s", "expected"),
    [
        pytest.param(
            {"raise_frames": 2, "clear_frames": 2},
            [True, False, True, True, False, True, False, False],
            range(8),
            [(3, R), (7, C)],
            id="debounce-both-edges",
        ),
        pytest.param(
            {"cooldown_s": 3},
            [True, False, True, True],
            [0, 1, 3.5, 4],
            [(0, R), (1, C), (3, R)],
            id="cooldown",
        ),
        pytest.param(
            {"emit_clear": False},
            [True, False, True],
            range(3),
            [(0, R), (2, R)],
            id="emit-clear-false",
        ),
    ],
)
def test_zone_debounce(
    config: dict[str, Any],
    inside: list[bool],
    times_s: Sequence[float],
    expected: list[tuple[int, str]],
) -> None:
    rule = zone(**config)
    events = []
    for i, (is_in, t) in enumerate(zip(inside, times_s, strict=True)):
        x = 320.0 if is_in else 600.0
        inf = inference(detections=[("person", 0.9, box_with_bottom_center(x, 300.0))])
        events += [(i, e.state) for e in rule.evaluate(inf, round(t * S))]
    assert events == expected


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"polygon": [(0.1, 0.1), (0.9, 0.9)]}, "at least 3 points"),
        ({"polygon": []}, "at least 3 points"),
        ({"polygon": [(0.1, 0.1), (0.5, 0.5), (0.9, 0.9)]}, "zero area"),
        ({"polygon": [(0.2, 0.2), (0.2, 0.2), (0.2, 0.2)]}, "zero area"),
        ({"polygon": [(0.1, 0.3), (0.5, 0.3), (0.9, 0.3), (0.4, 0.3)]}, "zero area"),
        ({"polygon": SQUARE_PX}, "outside 0..1 but coordinates is 'normalized'"),
        ({"polygon": [(0.1, 0.1), (0.9, float("nan")), (0.5, 0.9)]}, "finite"),
        ({"polygon": [(0.1, 0.1, 0.0), (0.9, 0.1, 0.0), (0.5, 0.9, 0.0)]}, "at most 2 items"),
    ],
)
def test_invalid_polygon(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        zone(**overrides)
    errors = info.value.errors()
    assert all(e["loc"][0] == "polygon" for e in errors), errors
    assert any(fragment in e["msg"] for e in errors), errors


@pytest.mark.parametrize(
    ("overrides", "loc"),
    [
        ({"coordinates": "percent"}, ("coordinates",)),
        ({"anchor": "top_left"}, ("anchor",)),
        ({"min_score": 1.1}, ("min_score",)),
        ({"raise_frames": 0}, ("raise_frames",)),
        ({"labels": []}, ("labels",)),
    ],
)
def test_zone_config_errors(overrides: dict[str, Any], loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        zone(**overrides)
    assert [e["loc"] for e in info.value.errors()] == [loc]


def test_pixel_polygon_may_exceed_one() -> None:
    assert zone(polygon=SQUARE_PX, coordinates="pixels").config.polygon == SQUARE_PX


# --- registry / config union ---------------------------------------------------------------------


def test_rules_registered_and_built_from_union() -> None:
    import_submodules("runtime.rules")
    assert {"threshold", "zone"} <= set(RULES.keys())
    plugins: list[tuple[str, HasConfigType]] = list(RULES.items())
    adapter: TypeAdapter[Any] = TypeAdapter(config_union(plugins))
    cfg = adapter.validate_python({"type": "zone", "labels": ["car"], "polygon": SQUARE})
    assert isinstance(cfg, ZoneConfig)
    assert isinstance(RULES.get(cfg.type).from_config(cfg, "gate"), ZoneRule)
    cfg = adapter.validate_python({"type": "threshold", "labels": ["*"], "raise_score": 0.3})
    assert isinstance(RULES.get(cfg.type).from_config(cfg, "any"), ThresholdRule)


def test_from_config_rejects_other_config_type() -> None:
    cfg = ZoneConfig.model_validate({"type": "zone", "labels": ["car"], "polygon": SQUARE})
    with pytest.raises(TypeError, match="expected ThresholdConfig, got ZoneConfig"):
        ThresholdRule.from_config(cfg, "t")


def test_frame_match_rejects_contradictions() -> None:
    with pytest.raises(ValueError, match="both raising and clearing"):
        FrameMatch(hit=True, miss=True, label="x", score=1.0)
    with pytest.raises(ValueError, match="needs the matching label"):
        FrameMatch(hit=True, miss=False, label=None, score=1.0)
    with pytest.raises(ValueError, match="must be >= 1"):
        AlertStateMachine("m", raise_frames=0)


# --- properties ----------------------------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, Any], list[float], list[int]]:
    raise_score = draw(st.floats(0.05, 1.0))
    clear_score = draw(st.floats(0.0, raise_score))
    config = {
        "raise_score": raise_score,
        "clear_score": clear_score,
        "raise_frames": draw(st.integers(1, 4)),
        "clear_frames": draw(st.integers(1, 4)),
        "cooldown_s": draw(st.sampled_from([0.0, 0.5, 2.0])),
    }
    score = st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, clear_score, raise_score, 1.0]))
    scores = draw(st.lists(score, max_size=60))
    steps = draw(st.lists(st.integers(0, S), min_size=len(scores), max_size=len(scores)))
    return config, scores, list(np.cumsum(steps, dtype=np.int64).tolist())


@given(scenarios())
def test_events_alternate_and_respect_levels(
    scenario: tuple[dict[str, Any], list[float], list[int]],
) -> None:
    config, scores, times_ns = scenario
    rule = threshold(**config)
    states: list[str] = []
    for i, (score, now) in enumerate(zip(scores, times_ns, strict=True)):
        for ev in rule.evaluate(inference([("person", score)]), now):
            states.append(ev.state)
            window = scores[: i + 1]
            if ev.state == "raised":
                assert ev.score >= config["raise_score"]
                assert all(s >= config["raise_score"] for s in window[-config["raise_frames"] :])
            else:
                assert ev.score < config["clear_score"]
                assert all(s < config["clear_score"] for s in window[-config["clear_frames"] :])
    assert states == [R, C] * (len(states) // 2) + [R] * (len(states) % 2)
    assert rule.raised == (len(states) % 2 == 1)


@given(scenarios())
def test_emit_clear_false_raises_at_the_same_frames(
    scenario: tuple[dict[str, Any], list[float], list[int]],
) -> None:
    config, scores, times_ns = scenario
    loud, quiet = threshold(**config), threshold(**config, emit_clear=False)
    loud_raises, quiet_events = [], []
    for i, (score, now) in enumerate(zip(scores, times_ns, strict=True)):
        inf = inference([("person", score)])
        loud_raises += [i for e in loud.evaluate(inf, now) if e.state == "raised"]
        quiet_events += [(i, e.state) for e in quiet.evaluate(inf, now)]
    assert quiet_events == [(i, "raised") for i in loud_raises]
