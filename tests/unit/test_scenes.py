"""Synthetic scenes: deterministic per seed, kinds measurably different, a decodable demo video."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from tools.scenes import (
    DEFAULT_SEGMENTS,
    SCENE_KINDS,
    draw_scene,
    labels_path,
    render_detection_scene,
    render_scene,
    sample_flame,
    sample_layout,
    sample_plume,
    write_demo_video,
)


def orange_fraction(image: NDArray[np.uint8]) -> float:
    """Share of bright, saturated orange-to-yellow pixels (flames, cones)."""
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    return float(np.mean((h >= 5) & (h <= 35) & (s >= 120) & (v >= 200)))


def saturation(image: NDArray[np.uint8]) -> NDArray[np.float64]:
    return cv2.cvtColor(image, cv2.COLOR_BGR2HSV)[..., 1].astype(np.float64)


def read_frames(path: Path) -> list[NDArray[np.uint8]]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"cv2 cannot open {path}"
    frames = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(np.asarray(frame, dtype=np.uint8))
    finally:
        cap.release()
    return frames


@pytest.mark.parametrize("kind", SCENE_KINDS)
def test_render_is_deterministic_per_seed(kind: str) -> None:
    a = render_scene(kind, np.random.default_rng(11), t=2.5)  # type: ignore[arg-type]
    b = render_scene(kind, np.random.default_rng(11), t=2.5)  # type: ignore[arg-type]
    c = render_scene(kind, np.random.default_rng(12), t=2.5)  # type: ignore[arg-type]
    assert a.shape == (480, 640, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert np.abs(a.astype(np.int16) - c.astype(np.int16)).mean() > 5


def test_render_honours_size() -> None:
    image = render_scene("fire", np.random.default_rng(0), width=320, height=200, t=0.0)
    assert image.shape == (200, 320, 3)


def test_fire_has_more_orange_than_normal() -> None:
    normal = [orange_fraction(render_scene("normal", np.random.default_rng(s))) for s in range(8)]
    fire = [orange_fraction(render_scene("fire", np.random.default_rng(s))) for s in range(8)]
    # same seed, same camera layout: the flame only adds orange
    assert all(f > n for f, n in zip(fire, normal, strict=True))
    assert np.mean(fire) > 3 * np.mean(normal) + 0.005


@pytest.mark.parametrize("seed", range(6))
def test_smoke_greys_out_a_visible_region(seed: int) -> None:
    rng = np.random.default_rng(seed)
    layout = dataclasses.replace(sample_layout(rng), noise_sigma=0.0, shake_px=0.0)
    plume = sample_plume(rng, layout)
    clear = draw_scene(layout, None, 2.0, np.random.default_rng(0))
    smoky = draw_scene(layout, plume, 2.0, np.random.default_rng(0))
    changed = np.abs(clear.astype(np.int16) - smoky.astype(np.int16)).max(axis=-1) > 15
    assert changed.mean() > 0.05
    assert saturation(smoky)[changed].mean() < saturation(clear)[changed].mean()


def test_flame_flickers_over_time() -> None:
    rng = np.random.default_rng(3)
    layout = dataclasses.replace(sample_layout(rng), noise_sigma=0.0, shake_px=0.0)
    flame = sample_flame(rng, layout)
    frames = [draw_scene(layout, flame, t, np.random.default_rng(0)) for t in (0.0, 0.13, 0.31)]
    assert all(orange_fraction(f) > 0.002 for f in frames)
    diffs = [
        np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()
        for a, b in itertools.pairwise(frames)
    ]
    assert min(diffs) > 0.2


def test_unknown_kind_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match=r"unknown scene kind 'steam'.*normal, smoke, fire"):
        render_scene("steam", np.random.default_rng(0))  # type: ignore[arg-type]


def test_tiny_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least 64x48"):
        render_scene("normal", np.random.default_rng(0), width=32, height=32)


@pytest.mark.parametrize("n_objects", [0, 1, 3])
def test_detection_scene_boxes_cover_orange_hazards(n_objects: int) -> None:
    image, boxes = render_detection_scene(np.random.default_rng(40 + n_objects), n_objects)
    again, boxes_again = render_detection_scene(np.random.default_rng(40 + n_objects), n_objects)
    assert np.array_equal(image, again) and boxes == boxes_again
    assert len(boxes) == n_objects
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    hazard_colour = (hsv[..., 0] <= 20) & (hsv[..., 1] >= 170) & (hsv[..., 2] >= 120)
    inside = np.zeros(hazard_colour.shape, bool)
    for x1, y1, x2, y2 in boxes:
        assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480
        assert (x2 - x1) >= 8 and (y2 - y1) >= 8
        region = hazard_colour[int(y1) : int(y2), int(x1) : int(x2)]
        assert region.mean() > 0.25, f"box {(x1, y1, x2, y2)} is not mostly hazard-coloured"
        inside[int(y1) : int(y2), int(x1) : int(x2)] = True
    # hazard colours outside the boxes are rare (no unlabelled hazard)
    assert hazard_colour[~inside].mean() < 0.003


def test_detection_scene_rejects_negative_count() -> None:
    with pytest.raises(ValueError, match="n_objects must be >= 0"):
        render_detection_scene(np.random.default_rng(0), -1)


def test_demo_video_segments_sidecar_and_decoding(tmp_path: Path) -> None:
    path = tmp_path / "demo.mp4"
    segments = write_demo_video(
        path,
        fps=10,
        segments=[("normal", 0.8), ("fire", 0.6), ("smoke", 0.5), ("normal", 0.3)],
        size=(320, 240),
        seed=5,
    )
    assert segments == [(0, 7, "normal"), (8, 13, "fire"), (14, 18, "smoke"), (19, 21, "normal")]
    sidecar = json.loads(labels_path(path).read_text())
    assert labels_path(path) == tmp_path / "demo.labels.json"
    assert sidecar["frame_count"] == 22 and sidecar["fps"] == 10 and sidecar["seed"] == 5
    assert [(s["first_frame"], s["last_frame"], s["kind"]) for s in sidecar["segments"]] == segments
    assert sidecar["segments"][1]["start_s"] == pytest.approx(0.8)
    frames = read_frames(path)
    assert len(frames) == 22
    assert frames[0].shape == (240, 320, 3)
    fire = np.mean([orange_fraction(f) for f in frames[8:14]])
    normal = np.mean([orange_fraction(f) for f in frames[0:8]])
    assert fire > normal + 0.003  # the flames survive mp4v compression


def test_demo_video_default_segments(tmp_path: Path) -> None:
    path = tmp_path / "default.mp4"
    segments = write_demo_video(path, size=(160, 120), seed=1)
    expected_total = sum(round(s * 10) for _, s in DEFAULT_SEGMENTS)
    assert [k for _, _, k in segments] == [k for k, _ in DEFAULT_SEGMENTS]
    assert segments[0][0] == 0 and segments[-1][1] == expected_total - 1
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(segments))
    assert len(read_frames(path)) == expected_total


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fps": 0}, "fps must be > 0"),
        ({"segments": []}, "segments must not be empty"),
        ({"segments": [("normal", 0.01)]}, "shorter than one frame"),
    ],
)
def test_demo_video_rejects_bad_arguments(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        write_demo_video(tmp_path / "bad.mp4", **kwargs)  # type: ignore[arg-type]
