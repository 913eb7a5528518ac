"""Output decoders (classify, yolo, ssd) and NMS: hand-computed tables, hypothesis properties."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray
from pydantic import ValidationError

from runtime.errors import ModelError
from runtime.manifest import manifest_model
from runtime.messages import Detection
from runtime.processing.nms import batched_nms, box_iou, nms
from runtime.processing.postprocess.base import POSTPROCESSORS
from runtime.processing.postprocess.classify import (
    ClassifyConfig,
    ClassifyPostprocessor,
    softmax,
)
from runtime.processing.postprocess.ssd import SsdConfig, SsdPostprocessor, input_size
from runtime.processing.postprocess.yolo import YoloConfig, YoloPostprocessor
from runtime.processing.preprocess import Geometry
from runtime.registry import import_submodules

IDENTITY = Geometry(
    frame_width=640, frame_height=640, scale_x=1.0, scale_y=1.0, pad_x=0.0, pad_y=0.0
)
# a 640x480 frame letterboxed into a 320x320 input: scale 0.5, 40 px bands top and bottom
LETTERBOX = Geometry(
    frame_width=640, frame_height=480, scale_x=0.5, scale_y=0.5, pad_x=0.0, pad_y=40.0
)
# a 640x480 frame stretched into a 300x300 input
STRETCH = Geometry(
    frame_width=640, frame_height=480, scale_x=300 / 640, scale_y=300 / 480, pad_x=0.0, pad_y=0.0
)
LABELS3 = ["person", "car", "dog"]
PROPERTY = settings(max_examples=100, deadline=None)


def ref_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Plain-Python IoU, independent of the implementation under test."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def boxes_f32(rows: Sequence[tuple[float, ...]]) -> NDArray[np.float32]:
    return np.asarray(rows, dtype=np.float32).reshape(-1, 4)


def yolo_output(
    anchors: list[tuple[float, float, float, float, int, float]],
    nc: int,
    total: int = 16,
) -> NDArray[np.float32]:
    """[1, 4+nc, total]: given anchors (cx, cy, w, h, class, score), the rest all-zero."""
    out = np.zeros((1, 4 + nc, total), dtype=np.float32)
    for j, (cx, cy, w, h, cls, score) in enumerate(anchors):
        out[0, :4, j] = (cx, cy, w, h)
        out[0, 4 + cls, j] = score
    return out


def ssd_outputs(
    rows: list[tuple[float, float, float, float, float, float]],
    count: int | None = None,
    total: int = 10,
) -> list[NDArray[np.generic]]:
    """TFLite order: boxes [1,N,4] (ymin,xmin,ymax,xmax), classes [1,N], scores [1,N], count [1]."""
    boxes = np.zeros((1, total, 4), dtype=np.float32)
    classes = np.zeros((1, total), dtype=np.float32)
    scores = np.zeros((1, total), dtype=np.float32)
    for j, (ymin, xmin, ymax, xmax, cls, score) in enumerate(rows):
        boxes[0, j] = (ymin, xmin, ymax, xmax)
        classes[0, j] = cls
        scores[0, j] = score
    n = len(rows) if count is None else count
    return [boxes, classes, scores, np.asarray([n], dtype=np.float32)]


def assert_sorted_desc(values: list[float]) -> None:
    assert values == sorted(values, reverse=True)


def assert_in_frame(dets: tuple[Detection, ...], geometry: Geometry) -> None:
    for d in dets:
        x1, y1, x2, y2 = d.bbox
        assert 0.0 <= x1 < x2 <= geometry.frame_width, d
        assert 0.0 <= y1 < y2 <= geometry.frame_height, d


# ---------------------------------------------------------------------------------------- NMS


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
        ((0, 0, 10, 10), (5, 0, 15, 10), 50 / 150),
        ((0, 0, 10, 10), (5, 5, 15, 15), 25 / 175),
        ((0, 0, 10, 10), (10, 0, 20, 10), 0.0),  # touching edges
        ((0, 0, 10, 10), (20, 20, 30, 30), 0.0),
        ((0, 0, 10, 10), (2, 2, 4, 4), 4 / 100),  # contained
        ((0, 0, 0, 10), (0, 0, 0, 10), 0.0),  # zero-area boxes
        ((10, 10, 0, 0), (0, 0, 10, 10), 0.0),  # inverted box has no area
    ],
)
def test_box_iou_matches_hand_computed(
    a: tuple[float, ...], b: tuple[float, ...], expected: float
) -> None:
    got = box_iou(boxes_f32([a]), boxes_f32([b]))
    assert got.shape == (1, 1)
    assert got[0, 0] == pytest.approx(expected)


def test_box_iou_is_pairwise() -> None:
    a = boxes_f32([(0, 0, 10, 10), (5, 0, 15, 10)])
    b = boxes_f32([(0, 0, 10, 10), (100, 100, 110, 110), (5, 5, 15, 15)])
    got = box_iou(a, b)
    assert got.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert got[i, j] == pytest.approx(ref_iou(tuple(a[i]), tuple(b[j])))


@pytest.mark.parametrize(
    ("boxes", "scores", "iou_threshold", "max_out", "expected"),
    [
        pytest.param([], [], 0.5, 10, [], id="empty"),
        pytest.param([(0, 0, 10, 10)], [0.3], 0.5, 10, [0], id="single"),
        pytest.param(
            [(0, 0, 10, 10), (1, 1, 11, 11)], [0.6, 0.9], 0.5, 10, [1], id="overlap-best-survives"
        ),
        pytest.param(
            [(0, 0, 10, 10), (50, 50, 60, 60)], [0.2, 0.9], 0.5, 10, [1, 0], id="disjoint-sorted"
        ),
        # IoU of these two is exactly 1/3
        pytest.param(
            [(0, 0, 10, 10), (5, 0, 15, 10)], [0.9, 0.8], 0.3, 10, [0], id="iou-above-threshold"
        ),
        pytest.param(
            [(0, 0, 10, 10), (5, 0, 15, 10)], [0.9, 0.8], 0.34, 10, [0, 1], id="iou-below"
        ),
        # A suppresses B; C only overlaps B, so it survives (greedy, not transitive)
        pytest.param(
            [(0, 0, 10, 10), (4, 0, 14, 10), (8, 0, 18, 10)],
            [0.9, 0.8, 0.7],
            0.3,
            10,
            [0, 2],
            id="chain",
        ),
        pytest.param(
            [(0, 0, 10, 10), (20, 0, 30, 10), (40, 0, 50, 10)],
            [0.5, 0.7, 0.6],
            0.5,
            2,
            [1, 2],
            id="max-out",
        ),
        pytest.param(
            [(0, 0, 10, 10), (20, 0, 30, 10)], [0.5, 0.5], 0.5, 10, [0, 1], id="ties-by-index"
        ),
        pytest.param([(0, 0, 10, 10), (0, 0, 10, 10)], [0.5, 0.5], 1.0, 10, [0, 1], id="thr-1"),
        pytest.param([(0, 0, 10, 10), (20, 0, 30, 10)], [0.5, 0.4], 0.5, 0, [], id="max-out-0"),
    ],
)
def test_nms_table(
    boxes: list[tuple[float, float, float, float]],
    scores: list[float],
    iou_threshold: float,
    max_out: int,
    expected: list[int],
) -> None:
    keep = nms(boxes_f32(boxes), np.asarray(scores, np.float32), iou_threshold, max_out)
    assert keep.dtype == np.intp
    assert keep.tolist() == expected


@pytest.mark.parametrize(
    ("class_ids", "expected"),
    [
        pytest.param([0, 0], [1], id="same-class-suppressed"),
        pytest.param([0, 1], [1, 0], id="different-classes-both-kept"),
        pytest.param([7, 1_000_000], [1, 0], id="sparse-large-ids"),
    ],
)
def test_batched_nms_is_per_class(class_ids: list[int], expected: list[int]) -> None:
    boxes = boxes_f32([(0, 0, 10, 10), (1, 1, 11, 11)])
    scores = np.asarray([0.6, 0.9], np.float32)
    keep = batched_nms(boxes, scores, np.asarray(class_ids), 0.5, 10)
    assert keep.tolist() == expected


def test_batched_nms_handles_negative_coordinates() -> None:
    # the common "class * (max + 1)" offset is 0 when max == -1, merging the classes
    boxes = boxes_f32([(-11, -11, -1, -1)] * 3)
    scores = np.asarray([0.9, 0.8, 0.7], np.float32)
    keep = batched_nms(boxes, scores, np.asarray([0, 1, 1]), 0.5, 9)
    assert keep.tolist() == [0, 1]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: nms(np.zeros((2, 3), np.float32), np.zeros(2, np.float32), 0.5, 5), "Nx4"),
        (lambda: nms(np.zeros((2, 4), np.float32), np.zeros(3, np.float32), 0.5, 5), "scores"),
        (lambda: nms(np.zeros((1, 4), np.float32), np.zeros(1, np.float32), 0.5, -1), "max_out"),
        (
            lambda: nms(np.full((1, 4), np.nan, np.float32), np.zeros(1, np.float32), 0.5, 5),
            "finite",
        ),
        (lambda: nms(np.zeros((1, 4), np.float32), np.full(1, np.inf), 0.5, 5), "finite"),
        (
            lambda: batched_nms(
                np.zeros((2, 4), np.float32),
                np.zeros(2, np.float32),
                np.zeros(2),  # type: ignore[arg-type]  # float ids on purpose
                0.5,
                5,
            ),
            "class_ids",
        ),
    ],
)
def test_nms_rejects_bad_input(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


@st.composite
def nms_case(
    draw: st.DrawFn, integer_coords: bool = False
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int64], float]:
    n = draw(st.integers(0, 25))
    coord = (
        st.integers(-50, 100).map(float)
        if integer_coords
        else st.floats(-50, 100, allow_nan=False, width=32)
    )
    size = st.integers(0, 60).map(float) if integer_coords else st.floats(0, 60, width=32)
    rows = []
    for _ in range(n):
        x, y, w, h = draw(coord), draw(coord), draw(size), draw(size)
        rows.append((x, y, x + w, y + h))
    # few distinct score values so ties happen
    scores = draw(
        st.lists(st.sampled_from([0.1, 0.3, 0.5, 0.7, 0.9, 0.95]), min_size=n, max_size=n)
    )
    classes = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    thr = draw(st.floats(0.0, 1.0))
    return (
        boxes_f32(rows),
        np.asarray(scores, np.float32),
        np.asarray(classes, np.int64),
        thr,
    )


def check_nms_invariants(
    boxes: NDArray[np.float32],
    scores: NDArray[np.float32],
    groups: NDArray[np.int64],
    thr: float,
    keep: NDArray[np.intp],
) -> None:
    eps = 1e-6
    kept = keep.tolist()
    rows = [tuple(float(v) for v in b) for b in boxes]
    assert len(set(kept)) == len(kept)
    assert_sorted_desc([float(scores[i]) for i in kept])
    for a_pos, a in enumerate(kept):
        for b in kept[a_pos + 1 :]:
            if groups[a] == groups[b]:
                assert ref_iou(rows[a], rows[b]) <= thr + eps
    rank = {i: pos for pos, i in enumerate(kept)}
    for d in range(len(rows)):
        if d in rank:
            continue
        assert any(
            groups[k] == groups[d]
            and scores[k] >= scores[d]
            and ref_iou(rows[k], rows[d]) > thr - eps
            for k in kept
        ), f"box {d} was dropped but no kept box of its class suppresses it"


@PROPERTY
@given(nms_case())
def test_nms_properties(case: tuple[Any, ...]) -> None:
    boxes, scores, _, thr = case
    keep = nms(boxes, scores, thr, len(boxes))
    check_nms_invariants(boxes, scores, np.zeros(len(boxes), np.int64), thr, keep)


@PROPERTY
@given(nms_case())
def test_batched_nms_properties(case: tuple[Any, ...]) -> None:
    boxes, scores, classes, thr = case
    keep = batched_nms(boxes, scores, classes, thr, len(boxes))
    check_nms_invariants(boxes, scores, classes, thr, keep)


@PROPERTY
@given(nms_case(), st.integers(0, 30))
def test_nms_max_out_is_a_prefix(case: tuple[Any, ...], max_out: int) -> None:
    boxes, scores, classes, thr = case
    full = batched_nms(boxes, scores, classes, thr, len(boxes)).tolist()
    assert batched_nms(boxes, scores, classes, thr, max_out).tolist() == full[:max_out]


@PROPERTY
@given(nms_case(integer_coords=True))
def test_batched_nms_equals_per_class_nms(case: tuple[Any, ...]) -> None:
    boxes, scores, classes, thr = case
    merged: list[int] = []
    for c in np.unique(classes):
        idx = np.flatnonzero(classes == c)
        merged += idx[nms(boxes[idx], scores[idx], thr, len(idx))].tolist()
    merged.sort(key=lambda i: (-scores[i], i))
    assert batched_nms(boxes, scores, classes, thr, len(boxes)).tolist() == merged


# ----------------------------------------------------------------------------------- registry


@pytest.mark.parametrize(
    ("key", "config", "cls"),
    [
        ("classify", {"type": "classify", "top_k": 2, "softmax": True}, ClassifyPostprocessor),
        ("yolo", {"type": "yolo", "conf_threshold": 0.4}, YoloPostprocessor),
        ("ssd", {"type": "ssd", "label_offset": 1}, SsdPostprocessor),
    ],
)
def test_registered_and_built_from_config(key: str, config: dict[str, Any], cls: type) -> None:
    import_submodules("runtime.processing.postprocess")
    plugin = POSTPROCESSORS.get(key)
    assert plugin is cls
    built = plugin.from_config(plugin.config_type.model_validate(config), LABELS3)
    assert isinstance(built, cls)
    assert built.labels == LABELS3  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("postprocess", "config_cls"),
    [
        ({"type": "classify"}, ClassifyConfig),
        ({"type": "yolo", "iou_threshold": 0.6}, YoloConfig),
        ({"type": "ssd", "label_offset": 1}, SsdConfig),
    ],
)
def test_manifest_parses_each_postprocess_config(
    postprocess: dict[str, Any], config_cls: type
) -> None:
    manifest = manifest_model().model_validate(
        {
            "name": "m",
            "version": "1",
            "file": "m.onnx",
            "sha256": "0" * 64,
            "inputs": [{"name": "x", "shape": [1, 3, 32, 32]}],
            "outputs": [{"name": "y", "shape": [1, 10]}],
            "postprocess": postprocess,
        }
    )
    assert isinstance(manifest.postprocess, config_cls)


@pytest.mark.parametrize(
    ("config_cls", "data", "field"),
    [
        (ClassifyConfig, {"type": "classify", "top_k": 0}, "top_k"),
        (ClassifyConfig, {"type": "classify", "output": -1}, "output"),
        (ClassifyConfig, {"type": "classify", "topk": 3}, "topk"),
        (YoloConfig, {"type": "yolo", "iou_threshold": 1.5}, "iou_threshold"),
        (YoloConfig, {"type": "yolo", "max_detections": 0}, "max_detections"),
        (YoloConfig, {"type": "classify"}, "type"),
        (SsdConfig, {"type": "ssd", "conf_threshold": -0.1}, "conf_threshold"),
        (SsdConfig, {"type": "ssd", "scores_output": 0}, "distinct"),
    ],
)
def test_config_rejects_bad_values(config_cls: Any, data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        config_cls.model_validate(data)


@pytest.mark.parametrize("cls", [ClassifyPostprocessor, YoloPostprocessor, SsdPostprocessor])
def test_from_config_rejects_another_plugins_config(cls: Any) -> None:
    wrong = SsdConfig(type="ssd") if cls is not SsdPostprocessor else YoloConfig(type="yolo")
    with pytest.raises(TypeError, match="expected"):
        cls.from_config(wrong, [])


# ----------------------------------------------------------------------------------- classify


@pytest.mark.parametrize(
    ("scores", "top_k", "min_score", "expected_ids"),
    [
        ([0.1, 0.5, 0.2, 0.15, 0.05], 3, 0.0, [1, 2, 3]),
        ([0.1, 0.5, 0.2, 0.15, 0.05], 10, 0.0, [1, 2, 3, 0, 4]),
        ([0.1, 0.5, 0.2, 0.15, 0.05], 5, 0.15, [1, 2, 3]),  # min_score is inclusive
        ([0.1, 0.5, 0.2, 0.15, 0.05], 5, 0.9, []),
        ([0.3, 0.3, 0.4], 3, 0.0, [2, 0, 1]),  # ties: lower class id first
        ([0.2, float("nan"), 0.7, float("inf")], 5, 0.0, [2, 0]),  # non-finite never reported
        ([0.9], 5, 0.0, [0]),
    ],
)
def test_classify_top_k(
    scores: list[float], top_k: int, min_score: float, expected_ids: list[int]
) -> None:
    decoder = ClassifyPostprocessor([], top_k=top_k, min_score=min_score)
    classes, dets = decoder.decode([np.asarray([scores], np.float32)], IDENTITY)
    assert dets == ()
    assert [c.class_id for c in classes] == expected_ids
    for c in classes:
        assert c.score == pytest.approx(scores[c.class_id])
        assert c.label == f"class_{c.class_id}"
    assert_sorted_desc([c.score for c in classes])


@pytest.mark.parametrize("shape", [(5,), (1, 5)])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_classify_accepts_shapes_and_float_dtypes(shape: tuple[int, ...], dtype: Any) -> None:
    labels = ["a", "b", "c", "d", "e"]
    x = np.asarray([0.05, 0.1, 0.6, 0.2, 0.05], dtype=dtype).reshape(shape)
    classes, _ = ClassifyPostprocessor(labels, top_k=2).decode([x], IDENTITY)
    assert [(c.class_id, c.label) for c in classes] == [(2, "c"), (3, "d")]
    assert classes[0].score == pytest.approx(0.6, abs=1e-3)
    assert isinstance(classes[0].score, float)


def test_classify_softmax_matches_manual_computation() -> None:
    logits = [2.0, -1.0, 0.5, 3.0]
    total = sum(math.exp(v) for v in logits)
    manual = [math.exp(v) / total for v in logits]
    decoder = ClassifyPostprocessor(["w", "x", "y", "z"], softmax=True, top_k=4)
    classes, _ = decoder.decode([np.asarray([logits], np.float32)], IDENTITY)
    assert [c.class_id for c in classes] == [3, 0, 2, 1]
    for c in classes:
        assert c.score == pytest.approx(manual[c.class_id], rel=1e-6)
    assert sum(c.score for c in classes) == pytest.approx(1.0)


def test_softmax_is_stable_for_large_logits() -> None:
    out = softmax(np.asarray([1000.0, 1000.0, -1000.0], np.float32))
    np.testing.assert_allclose(out, [0.5, 0.5, 0.0], atol=1e-12)


def test_classify_reads_the_configured_output() -> None:
    decoy = np.asarray([[0.9, 0.1]], np.float32)
    real = np.asarray([[0.2, 0.8]], np.float32)
    decoder = ClassifyPostprocessor.from_config(
        ClassifyConfig(type="classify", output=1, top_k=1), ["no", "yes"]
    )
    classes, _ = decoder.decode([decoy, real], IDENTITY)
    assert [c.label for c in classes] == ["yes"]
    assert classes[0].score == pytest.approx(0.8)


@pytest.mark.parametrize(
    ("outputs", "labels", "message"),
    [
        ([np.zeros((2, 5), np.float32)], [], r"expected shape \[1, C\] or \[C\].*got \[2, 5\]"),
        ([np.zeros((1, 5, 1), np.float32)], [], r"got \[1, 5, 1\]"),
        ([np.zeros((1, 0), np.float32)], [], r"C >= 1, got \[1, 0\]"),
        ([np.zeros((), np.float32)], [], r"got \[\]"),
        ([np.zeros((1, 5), np.int8)], [], "expected a float.*got dtype int8"),
        ([np.zeros((1, 5), np.uint8)], [], "got dtype uint8"),
        ([], [], "config output=0 but the model has 0 output"),
        ([np.zeros((1, 4), np.float32)], ["a", "b", "c"], r"expected 3 scores.*got shape \[1, 4\]"),
    ],
)
def test_classify_rejects_wrong_outputs(
    outputs: list[NDArray[np.generic]], labels: list[str], message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        ClassifyPostprocessor(labels).decode(outputs, IDENTITY)


@PROPERTY
@given(
    scores=hnp.arrays(
        np.float32,
        st.integers(1, 40),
        elements=st.floats(width=32, allow_nan=True, allow_infinity=True),
    ),
    use_softmax=st.booleans(),
    top_k=st.integers(1, 10),
    min_score=st.floats(-1.0, 1.0),
)
def test_classify_never_raises_on_random_scores(
    scores: NDArray[np.float32], use_softmax: bool, top_k: int, min_score: float
) -> None:
    decoder = ClassifyPostprocessor([], softmax=use_softmax, top_k=top_k, min_score=min_score)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        classes, dets = decoder.decode([scores[np.newaxis]], IDENTITY)
    assert dets == ()
    assert len(classes) <= top_k
    assert_sorted_desc([c.score for c in classes])
    assert len({c.class_id for c in classes}) == len(classes)
    for c in classes:
        assert math.isfinite(c.score)
        assert c.score >= min_score
        assert 0 <= c.class_id < scores.size


# --------------------------------------------------------------------------------------- yolo


def decode_yolo(
    output: NDArray[np.generic],
    labels: list[str] = LABELS3,
    geometry: Geometry = IDENTITY,
    **kwargs: Any,
) -> tuple[Detection, ...]:
    classes, dets = YoloPostprocessor(labels, **kwargs).decode([output], geometry)
    assert classes == ()
    return dets


# two heavily overlapping boxes (IoU 0.68) around (100, 100), and one far away
A = (100.0, 100.0, 40.0, 40.0)
B = (104.0, 104.0, 40.0, 40.0)
FAR = (400.0, 400.0, 20.0, 20.0)


@pytest.mark.parametrize(
    ("anchors", "kwargs", "expected"),
    [
        pytest.param(
            [(*A, 0, 0.9), (*B, 0, 0.8)],
            {},
            [(0, 0.9, (80, 80, 120, 120))],
            id="same-class-one-survives",
        ),
        pytest.param(
            [(*A, 0, 0.7), (*B, 0, 0.8)],
            {},
            [(0, 0.8, (84, 84, 124, 124))],
            id="higher-score-wins",
        ),
        pytest.param(
            [(*A, 0, 0.9), (*B, 1, 0.8)],
            {},
            [(0, 0.9, (80, 80, 120, 120)), (1, 0.8, (84, 84, 124, 124))],
            id="different-classes-both-survive",
        ),
        pytest.param(
            [(*A, 0, 0.9), (*B, 1, 0.8)],
            {"class_agnostic_nms": True},
            [(0, 0.9, (80, 80, 120, 120))],
            id="class-agnostic-suppresses",
        ),
        pytest.param(
            [(*A, 0, 0.9), (*B, 0, 0.8)],
            {"iou_threshold": 0.7},
            [(0, 0.9, (80, 80, 120, 120)), (0, 0.8, (84, 84, 124, 124))],
            id="iou-threshold-above-overlap",
        ),
        pytest.param(
            [(*A, 2, 0.24), (*FAR, 1, 0.25)],
            {},
            [(1, 0.25, (390, 390, 410, 410))],
            id="conf-threshold-inclusive",
        ),
        pytest.param(
            [(*A, 0, 0.5), (*FAR, 1, 0.6), (300.0, 100.0, 10.0, 10.0, 2, 0.7)],
            {"max_detections": 2},
            [(2, 0.7, (295, 95, 305, 105)), (1, 0.6, (390, 390, 410, 410))],
            id="max-detections-keeps-best",
        ),
        pytest.param(
            [(*A, 0, 0.9), (100.0, 100.0, 0.0, 40.0, 0, 0.95), (100.0, 100.0, 40.0, -1.0, 1, 0.95)],
            {},
            [(0, 0.9, (80, 80, 120, 120))],
            id="degenerate-boxes-dropped",
        ),
        pytest.param(
            [(630.0, 10.0, 40.0, 40.0, 0, 0.9)],
            {},
            [(0, 0.9, (610, 0, 640, 30))],
            id="clipped-to-frame",
        ),
        pytest.param([], {}, [], id="nothing-above-threshold"),
        # 1e-300 rounds to 0.0 in float32: the comparison must not happen in float32
        pytest.param([(*A, 0, 0.0)], {"conf_threshold": 1e-300}, [], id="tiny-threshold"),
    ],
)
def test_yolo_table(
    anchors: list[tuple[float, float, float, float, int, float]],
    kwargs: dict[str, Any],
    expected: list[tuple[int, float, tuple[float, ...]]],
) -> None:
    dets = decode_yolo(yolo_output(anchors, nc=3), **kwargs)
    got = [(d.class_id, d.score, d.bbox) for d in dets]
    assert len(got) == len(expected)
    for (cid, score, bbox), (e_cid, e_score, e_bbox) in zip(got, expected, strict=True):
        assert cid == e_cid
        assert score == pytest.approx(e_score)
        assert bbox == pytest.approx(e_bbox)
    assert [d.label for d in dets] == [LABELS3[c] for c, _, _ in expected]


def test_yolo_picks_the_best_class_per_anchor() -> None:
    out = yolo_output([(*A, 0, 0.3)], nc=3)
    out[0, 4:, 0] = (0.3, 0.1, 0.8)
    (det,) = decode_yolo(out)
    assert (det.class_id, det.label) == (2, "dog")
    assert det.score == pytest.approx(0.8)


@pytest.mark.parametrize(
    ("geometry", "anchor", "expected_bbox"),
    [
        # input box (110,130)-(210,190) → frame x/0.5, (y-40)/0.5
        pytest.param(LETTERBOX, (160.0, 160.0, 100.0, 60.0), (220, 180, 420, 300), id="letterbox"),
        # stretch 640x480 → 300x300: input box (60,30)-(180,150) → x*640/300, y*480/300
        pytest.param(STRETCH, (120.0, 90.0, 120.0, 120.0), (128, 48, 384, 240), id="stretch"),
        # partly in the top letterbox band: clipped at the frame's top edge
        pytest.param(LETTERBOX, (160.0, 40.0, 40.0, 40.0), (280, 0, 360, 40), id="letterbox-clip"),
    ],
)
def test_yolo_maps_boxes_to_frame_pixels(
    geometry: Geometry,
    anchor: tuple[float, float, float, float],
    expected_bbox: tuple[float, ...],
) -> None:
    (det,) = decode_yolo(yolo_output([(*anchor, 1, 0.9)], nc=3), geometry=geometry)
    assert det.bbox == pytest.approx(expected_bbox)


def test_yolo_drops_boxes_entirely_in_letterbox_padding() -> None:
    out = yolo_output([(160.0, 20.0, 40.0, 30.0, 0, 0.9), (*A, 1, 0.8)], nc=3)  # top band: y<40
    dets = decode_yolo(out, geometry=LETTERBOX)
    assert [d.class_id for d in dets] == [1]


@pytest.mark.parametrize("labels", [LABELS3, []])
def test_yolo_transposed_layout_gives_the_same_result(labels: list[str]) -> None:
    anchors = [(*A, 0, 0.9), (*B, 0, 0.8), (*B, 1, 0.7), (250.0, 200.0, 20.0, 20.0, 2, 0.6)]
    channels_first = yolo_output(anchors, nc=3, total=40)
    channels_last = np.ascontiguousarray(channels_first.transpose(0, 2, 1))
    first = decode_yolo(channels_first, labels=labels, geometry=LETTERBOX)
    assert len(first) == 3
    assert decode_yolo(channels_last, labels=labels, geometry=LETTERBOX) == first
    assert decode_yolo(channels_first[0], labels=labels, geometry=LETTERBOX) == first  # no batch


def test_yolo_square_output_is_read_channels_first() -> None:
    out = yolo_output([(*A, 0, 0.9)], nc=3, total=7)  # N == 4 + nc
    (det,) = decode_yolo(out)
    assert det.bbox == pytest.approx((80, 80, 120, 120))


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_yolo_accepts_other_float_dtypes(dtype: Any) -> None:
    (det,) = decode_yolo(yolo_output([(*A, 0, 0.75)], nc=3).astype(dtype))
    assert det.bbox == pytest.approx((80, 80, 120, 120))
    assert det.score == pytest.approx(0.75)


def test_yolo_without_labels_uses_class_n_names() -> None:
    (det,) = decode_yolo(yolo_output([(*A, 4, 0.9)], nc=5), labels=[])
    assert (det.class_id, det.label) == (4, "class_4")


@pytest.mark.parametrize(
    ("outputs", "labels", "message"),
    [
        (
            [np.zeros((1, 85, 100), np.float32)],
            LABELS3,
            r"expected shape \[1, 7, N\] or \[1, N, 7\] \(4 box values \+ 3 labels\), "
            r"got \[1, 85, 100\]",
        ),
        ([np.zeros((2, 7, 100), np.float32)], LABELS3, r"got \[2, 7, 100\]"),
        ([np.zeros((1, 1, 7, 100), np.float32)], LABELS3, r"got \[1, 1, 7, 100\]"),
        ([np.zeros((700,), np.float32)], LABELS3, r"got \[700\]"),
        ([np.zeros((1, 4, 100), np.float32)], [], r"nc >= 1, got \[1, 4, 100\]"),
        ([np.zeros((1, 7, 100), np.int8)], LABELS3, "float.*got dtype int8"),
        ([np.zeros((1, 7, 100), np.float32)] * 2, LABELS3[:1], r"\[1, 5, N\]"),
        ([], LABELS3, "config output=0 but the model has 0 output"),
    ],
)
def test_yolo_rejects_wrong_outputs(
    outputs: list[NDArray[np.generic]], labels: list[str], message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        YoloPostprocessor(labels).decode(outputs, IDENTITY)


@st.composite
def geometries(draw: st.DrawFn) -> Geometry:
    """Geometry as the preprocessor builds it, for a random frame and model-input size."""
    fw, fh = draw(st.integers(16, 2000)), draw(st.integers(16, 2000))
    iw, ih = draw(st.integers(32, 1024)), draw(st.integers(32, 1024))
    if draw(st.booleans()):
        return Geometry(fw, fh, iw / fw, ih / fh, 0.0, 0.0)
    s = min(iw / fw, ih / fh)
    nw, nh = max(1, round(fw * s)), max(1, round(fh * s))
    return Geometry(fw, fh, nw / fw, nh / fh, float((iw - nw) // 2), float((ih - nh) // 2))


ANY_FLOAT32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
PLAUSIBLE = st.floats(-200.0, 1200.0, width=32)


@PROPERTY
@given(
    data=st.data(),
    nc=st.integers(1, 5),
    n=st.integers(0, 60),
    transposed=st.booleans(),
    geometry=geometries(),
    conf=st.floats(0.0, 1.0),
    iou=st.floats(0.0, 1.0),
    max_det=st.integers(1, 20),
    agnostic=st.booleans(),
    wild=st.booleans(),
)
def test_yolo_never_raises_and_boxes_stay_in_frame(
    *,
    data: st.DataObject,
    nc: int,
    n: int,
    transposed: bool,
    geometry: Geometry,
    conf: float,
    iou: float,
    max_det: int,
    agnostic: bool,
    wild: bool,
) -> None:
    elements = ANY_FLOAT32 if wild else PLAUSIBLE
    out = data.draw(hnp.arrays(np.float32, (1, 4 + nc, n), elements=elements))
    if not wild:  # realistic scores so that detections actually come out
        out[0, 4:] = data.draw(hnp.arrays(np.float32, (nc, n), elements=st.floats(0, 1, width=32)))
    if transposed:
        out = out.transpose(0, 2, 1)
    labels = [f"l{i}" for i in range(nc)]
    decoder = YoloPostprocessor(
        labels,
        conf_threshold=conf,
        iou_threshold=iou,
        max_detections=max_det,
        class_agnostic_nms=agnostic,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, dets = decoder.decode([out], geometry)
    assert len(dets) <= max_det
    assert_sorted_desc([d.score for d in dets])
    assert_in_frame(dets, geometry)
    for d in dets:
        assert d.score >= conf
        assert d.score <= 1.0 or wild
        assert math.isfinite(d.score)
        assert d.label == labels[d.class_id]


# ---------------------------------------------------------------------------------------- ssd


def decode_ssd(
    outputs: list[NDArray[np.generic]],
    labels: list[str] = LABELS3,
    geometry: Geometry = STRETCH,
    **kwargs: Any,
) -> tuple[Detection, ...]:
    classes, dets = SsdPostprocessor(labels, **kwargs).decode(outputs, geometry)
    assert classes == ()
    return dets


def test_ssd_input_size_from_geometry() -> None:
    assert input_size(STRETCH) == pytest.approx((300, 300))
    assert input_size(LETTERBOX) == pytest.approx((320, 320))


@pytest.mark.parametrize(
    ("rows", "count", "geometry", "kwargs", "expected"),
    [
        pytest.param(
            [(0.1, 0.2, 0.5, 0.6, 1, 0.9)],
            None,
            STRETCH,
            {},
            [(1, "car", 0.9, (128, 48, 384, 240))],
            id="stretch",
        ),
        pytest.param(
            # input px (80,80)-(240,160) → frame x/0.5, (y-40)/0.5
            [(0.25, 0.25, 0.5, 0.75, 2, 0.8)],
            None,
            LETTERBOX,
            {},
            [(2, "dog", 0.8, (160, 80, 480, 240))],
            id="letterbox",
        ),
        pytest.param(
            [(0.1, 0.2, 0.5, 0.6, 0, 0.9)],
            None,
            STRETCH,
            {"label_offset": 1},
            [(1, "car", 0.9, (128, 48, 384, 240))],
            id="label-offset",
        ),
        pytest.param(
            [(0.1, 0.2, 0.5, 0.6, 2, 0.9)],
            None,
            STRETCH,
            {"label_offset": 1},
            [(3, "class_3", 0.9, (128, 48, 384, 240))],
            id="label-offset-past-labels",
        ),
        pytest.param(
            [(30.0, 60.0, 150.0, 180.0, 0, 0.7)],
            None,
            STRETCH,
            {"normalized": False},
            [(0, "person", 0.7, (128, 48, 384, 240))],
            id="pixel-boxes",
        ),
        pytest.param(
            [(0.1, 0.1, 0.2, 0.2, 0, 0.6), (0.3, 0.3, 0.4, 0.4, 1, 0.95), (0, 0, 1, 1, 2, 0.4)],
            None,
            IDENTITY,
            {},
            [(1, "car", 0.95, (192, 192, 256, 256)), (0, "person", 0.6, (64, 64, 128, 128))],
            id="threshold-and-sorted",
        ),
        pytest.param(
            [(0.1, 0.1, 0.2, 0.2, 0, 0.6), (0.3, 0.3, 0.4, 0.4, 1, 0.95)],
            1,
            IDENTITY,
            {},
            [(0, "person", 0.6, (64, 64, 128, 128))],
            id="rows-past-count-ignored",
        ),
        pytest.param(
            [(0.1, 0.1, 0.2, 0.2, 0, 0.6)],
            50,
            IDENTITY,
            {},
            [(0, "person", 0.6, (64, 64, 128, 128))],
            id="count-above-n-clamped",
        ),
        pytest.param([(0.1, 0.1, 0.2, 0.2, 0, 0.6)], -3, IDENTITY, {}, [], id="negative-count"),
        pytest.param(
            [(0.1, 0.1, 0.2, 0.2, 0, 0.5)],
            None,
            IDENTITY,
            {"conf_threshold": 0.5},
            [(0, "person", 0.5, (64, 64, 128, 128))],
            id="threshold-inclusive",
        ),
        pytest.param(
            [(-0.2, 0.9, 0.3, 1.4, 0, 0.9)],
            None,
            IDENTITY,
            {},
            [(0, "person", 0.9, (576, 0, 640, 192))],
            id="clipped",
        ),
        pytest.param(
            [(0.02, 0.2, 0.1, 0.4, 0, 0.9), (0.3, 0.3, 0.2, 0.4, 0, 0.9)],
            None,
            LETTERBOX,
            {},
            [],
            id="in-padding-or-inverted-dropped",
        ),
    ],
)
def test_ssd_table(
    rows: list[tuple[float, float, float, float, float, float]],
    count: int | None,
    geometry: Geometry,
    kwargs: dict[str, Any],
    expected: list[tuple[int, str, float, tuple[float, ...]]],
) -> None:
    dets = decode_ssd(ssd_outputs(rows, count), geometry=geometry, **kwargs)
    assert len(dets) == len(expected)
    for d, (cid, label, score, bbox) in zip(dets, expected, strict=True):
        assert (d.class_id, d.label) == (cid, label)
        assert d.score == pytest.approx(score)
        assert d.bbox == pytest.approx(bbox, abs=1e-3)


def test_ssd_custom_output_order_and_plain_shapes() -> None:
    boxes, classes, scores, count = ssd_outputs([(0.1, 0.2, 0.5, 0.6, 1, 0.9)])
    config = SsdConfig(
        type="ssd", scores_output=0, count_output=1, boxes_output=2, classes_output=3
    )
    decoder = SsdPostprocessor.from_config(config, LABELS3)
    # no batch axes, integer class ids and count
    outputs = [scores[0], count.astype(np.int32), boxes[0], classes[0].astype(np.int64)]
    _, (det,) = decoder.decode(outputs, STRETCH)
    assert det.label == "car"
    assert det.bbox == pytest.approx((128, 48, 384, 240))


def test_ssd_skips_non_finite_rows() -> None:
    outputs = ssd_outputs([(0.1, 0.1, 0.2, 0.2, 0, 0.6)] * 4)
    outputs[0][0, 0, 1] = np.nan
    outputs[1][0, 1] = np.inf
    outputs[2][0, 2] = np.nan
    (det,) = decode_ssd(outputs, geometry=IDENTITY)
    assert det.bbox == pytest.approx((64, 64, 128, 128))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda o: o.__setitem__(0, np.zeros((1, 10, 5), np.float32)),
            r"boxes output 0.*\[1, N, 4\], got \[1, 10, 5\]",
        ),
        (lambda o: o.__setitem__(0, np.zeros((2, 10, 4), np.float32)), r"got \[2, 10, 4\]"),
        (
            lambda o: o.__setitem__(2, np.zeros((1, 9), np.float32)),
            r"scores output 2.*\[1, 10\].*got \[1, 9\]",
        ),
        (
            lambda o: o.__setitem__(1, np.zeros((1, 10, 1), np.float32)),
            r"classes output 1.*got \[1, 10, 1\]",
        ),
        (
            lambda o: o.__setitem__(3, np.zeros((2,), np.float32)),
            r"count output 3.*\[1\], got \[2\]",
        ),
        (
            lambda o: o.__setitem__(3, np.full((1,), np.nan, np.float32)),
            "count output 3 is not finite",
        ),
        (
            lambda o: o.__setitem__(0, np.zeros((1, 10, 4), np.uint8)),
            "boxes output 0.*float.*uint8",
        ),
        (lambda o: o.__setitem__(2, np.zeros((1, 10), np.int32)), "scores output 2.*int32"),
        (lambda o: o.__setitem__(1, np.zeros((1, 10), np.bool_)), "classes output 1.*bool"),
        (lambda o: o.pop(), "count_output=3 but the model has 3 output"),
    ],
)
def test_ssd_rejects_wrong_outputs(mutate: Any, message: str) -> None:
    outputs = ssd_outputs([(0.1, 0.1, 0.2, 0.2, 0, 0.6)])
    mutate(outputs)
    with pytest.raises(ModelError, match=message):
        decode_ssd(outputs)


@PROPERTY
@given(
    data=st.data(),
    n=st.integers(0, 30),
    geometry=geometries(),
    conf=st.floats(0.0, 1.0),
    label_offset=st.integers(-2, 2),
    normalized=st.booleans(),
    wild=st.booleans(),
)
def test_ssd_never_raises_and_boxes_stay_in_frame(
    *,
    data: st.DataObject,
    n: int,
    geometry: Geometry,
    conf: float,
    label_offset: int,
    normalized: bool,
    wild: bool,
) -> None:
    coord = ANY_FLOAT32 if wild else st.floats(-0.25, 1.25, width=32)
    if not normalized and not wild:
        coord = st.floats(-100, 1200, width=32)
    boxes = data.draw(hnp.arrays(np.float32, (1, n, 4), elements=coord))
    classes = data.draw(
        hnp.arrays(np.float32, (1, n), elements=ANY_FLOAT32 if wild else st.integers(0, 5))
    )
    scores = data.draw(
        hnp.arrays(np.float32, (1, n), elements=ANY_FLOAT32 if wild else st.floats(0, 1))
    )
    count = np.asarray([data.draw(st.floats(-5, 40, width=32))], np.float32)
    decoder = SsdPostprocessor(
        LABELS3, conf_threshold=conf, label_offset=label_offset, normalized=normalized
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, dets = decoder.decode([boxes, classes, scores, count], geometry)
    assert len(dets) <= min(n, max(0, round(float(count[0]))))
    assert_sorted_desc([d.score for d in dets])
    assert_in_frame(dets, geometry)
    for d in dets:
        assert math.isfinite(d.score)
        assert d.score >= conf


def test_ssd_boxes_are_exact_with_an_odd_letterbox_padding() -> None:
    from runtime.manifest import InputSpec
    from runtime.processing.preprocess import Preprocessor

    spec = InputSpec(name="x", shape=[1, 300, 300, 3], layout="NHWC", resize="letterbox")
    _, geometry = Preprocessor(spec)(np.zeros((480, 640, 3), np.uint8))
    assert (geometry.pad_y, geometry.input_height) == (37.0, 300)  # 75 px of padding: 37 + 38
    ssd = SsdPostprocessor(["thing"], conf_threshold=0.5)
    outputs: list[NDArray[Any]] = [
        np.array([[[0.5, 0.5, 0.6, 0.6]]], np.float32),  # ymin, xmin, ymax, xmax of the input
        np.array([[0]], np.float32),
        np.array([[0.9]], np.float32),
        np.array([1], np.float32),
    ]
    _, (det,) = ssd.decode(outputs, geometry)
    scale = 300 / 640
    expected = (150 / scale, (150 - 37) / scale, 180 / scale, (180 - 37) / scale)
    assert det.bbox == pytest.approx(expected, abs=1e-3)
