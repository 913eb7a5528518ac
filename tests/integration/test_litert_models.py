"""A real model from a PyPI wheel through edgewatch: MediaPipe 0.10.21's short-range face detector
(Apache-2.0) loaded by LoadedModel with the LiteRT backend, run on real photos from
scikit-image's wheel. Files come from the cache that ``python -m tools.model_wheels`` fills;
nothing is downloaded here.

What is checked: the strongest anchor on the astronaut photo scores high and its decoded box
lies on her face (annotated by eye); on a real photo without a face (coffee cup) and on a blank
frame the strongest anchor scores low; XNNPACK and the builtin kernels agree."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from runtime.backends.litert import LiteRtBackendConfig
from runtime.model import LoadedModel
from runtime.processing.nms import box_iou
from tools.bundle import write_bundle
from tools.model_wheels import WheelFileError, cached

pytestmark = pytest.mark.integration

INPUT = 128
ASTRONAUT_FACE = np.array([[182.0, 80.0, 273.0, 185.0]])
"""x1, y1, x2, y2 in astronaut.png (512x512), by eye: cheek to cheek, hairline to chin."""


def wheel_file(key: str) -> Path:
    try:
        return cached(key)
    except WheelFileError as exc:
        pytest.fail(str(exc), pytrace=False)


def face_manifest() -> dict[str, object]:
    """MediaPipe's input: RGB 128x128, pixels mapped to [-1, 1]; 896 SSD anchors out."""
    return {
        "backend": "litert",
        "inputs": [
            {
                "name": "input",
                "shape": [1, INPUT, INPUT, 3],
                "layout": "NHWC",
                "dtype": "float32",
                "color": "RGB",
                "resize": "stretch",
                "scale": 1 / 127.5,
                "mean": [1.0, 1.0, 1.0],
                "std": [1.0, 1.0, 1.0],
            }
        ],
        "outputs": [
            {"name": "regressors", "shape": [1, 896, 16], "dtype": "float32"},
            {"name": "classificators", "shape": [1, 896, 1], "dtype": "float32"},
        ],
        "description": "MediaPipe face_detection_short_range (Apache-2.0), from the 0.10.21 wheel",
    }


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = wheel_file("mediapipe-face-detection-short-range").read_bytes()
    root = tmp_path_factory.mktemp("models")
    return write_bundle(root, "face", "0.10.21", data, face_manifest(), file_name="face.tflite")


def anchor_centres() -> NDArray[np.float32]:
    """The short-range model's 896 anchor centres (normalised x, y): 2 per cell of the 16x16
    grid (stride 8), then 6 per cell of the 8x8 grid (three stride-16 layers merged)."""
    centres = []
    for grid, per_cell in ((16, 2), (8, 6)):
        for y in range(grid):
            for x in range(grid):
                centres += [((x + 0.5) / grid, (y + 0.5) / grid)] * per_cell
    return np.array(centres, np.float32)


def strongest_face(
    model: LoadedModel, image: NDArray[np.uint8]
) -> tuple[float, NDArray[np.float32]]:
    """(score, box in image pixels) of the anchor with the highest score."""
    assert model.preprocessor is not None
    tensor, _ = model.preprocessor(image)
    regressors, classificators = model.infer(tensor)
    logits = classificators[0, :, 0]
    best = int(np.argmax(logits))
    score = float(1.0 / (1.0 + np.exp(-logits[best])))
    dx, dy, w, h = regressors[0, best, :4] / INPUT
    cx, cy = anchor_centres()[best] + (dx, dy)
    height, width = image.shape[:2]
    box = np.array(
        [[(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]]
    )
    return score, box.astype(np.float32)


def photo(key: str) -> NDArray[np.uint8]:
    image = cv2.imread(str(wheel_file(key)), cv2.IMREAD_COLOR)
    assert image is not None, key
    return np.asarray(image, dtype=np.uint8)


@pytest.fixture(scope="module")
def model(bundle: Path) -> Iterator[LoadedModel]:
    loaded = LoadedModel.load(bundle, LiteRtBackendConfig())
    yield loaded
    loaded.close()


def test_face_detector_runs_fully_on_xnnpack(model: LoadedModel) -> None:
    details = model.backend.details()
    assert details["runtime"].startswith("ai-edge-litert ")  # type: ignore[union-attr]
    assert details["ops"] == 164  # 74 of them DEQUANTIZE of float16 weights
    assert details["partitions"] == [{"delegate": "XNNPACK", "ops": 164}]
    assert details["ops_on_cpu"] == 0
    assert model.backend.active_providers == ["XNNPACK"]


def test_astronaut_face_is_found_where_it_is(model: LoadedModel) -> None:
    score, box = strongest_face(model, photo("skimage-astronaut"))
    assert score > 0.8
    assert box_iou(box, ASTRONAUT_FACE)[0, 0] > 0.6, box


@pytest.mark.parametrize("what", ["coffee", "blank"])
def test_no_face_scores_low(model: LoadedModel, what: str) -> None:
    image = photo("skimage-coffee") if what == "coffee" else np.full((480, 640, 3), 128, np.uint8)
    astronaut, _ = strongest_face(model, photo("skimage-astronaut"))
    score, _ = strongest_face(model, image)
    assert score < 0.5
    assert astronaut - score > 0.5


def test_builtin_kernels_agree_with_xnnpack(bundle: Path, model: LoadedModel) -> None:
    builtin = LoadedModel.load(bundle, LiteRtBackendConfig(xnnpack=False, num_threads=2))
    try:
        assert builtin.backend.details()["partitions"] == []
        assert builtin.preprocessor is not None and model.preprocessor is not None
        tensor, _ = model.preprocessor(photo("skimage-astronaut"))
        for ours, theirs in zip(model.infer(tensor), builtin.infer(tensor), strict=True):
            np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-3)
    finally:
        builtin.close()
