"""ONNX ↔ TFLite parity through edgewatch.

One network, ``models/demo-hazard-classifier-tflite``, in four encodings: float ONNX, float
TFLite, full-int8 TFLite and int8 (QDQ) ONNX. Each is loaded by ``LoadedModel`` with its own
backend (onnxruntime or LiteRT), fed by its own preprocessor (NCHW float, NHWC float, NHWC
int8 quantized with the model's scale and zero point) and decoded by the classify
postprocessor, on freshly rendered scenes no build ever drew.

Bounds, and what they were measured at on 300 such scenes (seed 2024):

* float TFLite vs float ONNX: the same top-1 on every frame; probabilities within 1e-4
  (measured 5.4e-6: both compute in float32, in different orders).
* int8 vs float: top-1 agrees on >= 97 % of frames (measured 99.0 %; 99.8-100 % on other seeds);
  every disagreement is a near tie (float's top two within 0.3; measured <= 0.14) that int8
  resolves to float's runner-up; probabilities within 0.15, on average within 0.01 (measured
  0.071 and 0.0026; an int8 probability has steps of 1/256).
* int8 TFLite vs int8 ONNX: top-1 agrees on >= 97 % (measured 100 %), within 0.15 (measured 0.036).

The exporter is checked on a deeper graph too: MobileNetV2 (depthwise convs, strided padding,
ReLU6, residual adds, global pooling) converted from ONNX gives the same logits on LiteRT.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from numpy.typing import NDArray

from runtime.backends.litert import LiteRtBackendConfig
from runtime.backends.onnxruntime import OrtBackendConfig
from runtime.config.base import PluginConfig
from runtime.model import LoadedModel
from runtime.processing.postprocess.base import POSTPROCESSORS
from tools.bundle import write_bundle
from tools.demo_models import BUILDERS
from tools.demo_tflite_models import (
    FP32_VERSION,
    INT8_VERSION,
    ONNX_INT8_VERSION,
    ONNX_VERSION,
    TFLITE_CLASSIFIER_NAME,
    TFLITE_FILE,
    build_demo_tflite_classifier,
)
from tools.onnx_builders import mobilenet_v2_onnx, serialize
from tools.scenes import SCENE_KINDS, render_scene
from tools.tflite_export import UnsupportedGraph, onnx_to_tflite

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "models" / TFLITE_CLASSIFIER_NAME
FRESH_SEED = 2024
FRAMES_PER_CLASS = 100
VERSIONS = (ONNX_VERSION, FP32_VERSION, INT8_VERSION, ONNX_INT8_VERSION)


def backend_for(bundle: Path) -> PluginConfig:
    if bundle.name in (FP32_VERSION, INT8_VERSION):
        return LiteRtBackendConfig(num_threads=1)
    return OrtBackendConfig(intra_op_threads=1)


@dataclass(frozen=True)
class Served:
    """What edgewatch made of every frame: real-valued outputs and the decoded top-1 label."""

    probs: NDArray[np.float32]  # [N, classes]
    top1: list[str]
    model: LoadedModel


@pytest.fixture(scope="module")
def frames() -> list[tuple[NDArray[np.uint8], int]]:
    rng = np.random.default_rng(FRESH_SEED)
    return [
        (render_scene(kind, rng, 640, 480, t=float(rng.uniform(0.0, 60.0))), label)
        for _ in range(FRAMES_PER_CLASS)
        for label, kind in enumerate(SCENE_KINDS)
    ]


@pytest.fixture(scope="module")
def served(frames: list[tuple[NDArray[np.uint8], int]]) -> Iterator[dict[str, Served]]:
    out: dict[str, Served] = {}
    try:
        for version in VERSIONS:
            bundle = BUNDLES / version
            model = LoadedModel.load(bundle, backend_for(bundle))
            out[version] = run(model, frames)
        yield out
    finally:
        for s in out.values():
            s.model.close()


def run(model: LoadedModel, frames: list[tuple[NDArray[np.uint8], int]]) -> Served:
    pp = model.manifest.postprocess
    decoder = POSTPROCESSORS.get(pp.type).from_config(pp, model.manifest.labels)
    assert model.preprocessor is not None
    probs, top1 = [], []
    for image, _ in frames:
        tensor, geometry = model.preprocessor(image)
        outputs = model.infer(tensor)
        classes, _ = decoder.decode(list(outputs), geometry)
        probs.append(outputs[0][0])
        top1.append(classes[0].label)
    return Served(np.asarray(probs, np.float32), top1, model)


def agreement(a: Served, b: Served) -> float:
    return float(np.mean([x == y for x, y in zip(a.top1, b.top1, strict=True)]))


# --------------------------------------------------------------------------- the bundles


def test_every_encoding_carries_the_onnx_twins_weights(served: dict[str, Served]) -> None:
    twin = served[ONNX_VERSION].model.manifest
    for version in (FP32_VERSION, INT8_VERSION, ONNX_INT8_VERSION):
        manifest = served[version].model.manifest
        assert manifest.provenance["onnx_twin"] == {"version": ONNX_VERSION, "sha256": twin.sha256}
        assert manifest.labels == twin.labels and manifest.postprocess == twin.postprocess
        assert manifest.inputs[0].mean == twin.inputs[0].mean
        assert manifest.inputs[0].std == twin.inputs[0].std
    for version in (FP32_VERSION, INT8_VERSION):
        manifest = served[version].model.manifest
        assert (manifest.backend, manifest.file, manifest.inputs[0].layout) == (
            "litert",
            TFLITE_FILE,
            "NHWC",
        )


def test_int8_manifest_quantization_is_the_models(served: dict[str, Served]) -> None:
    model = served[INT8_VERSION].model
    for spec, real in (
        (model.manifest.inputs[0], model.backend.inputs[0]),
        (model.manifest.outputs[0], model.backend.outputs[0]),
    ):
        assert spec.dtype == real.dtype == "int8"
        assert spec.quantization is not None and real.quantization is not None
        assert spec.quantization.scale == pytest.approx(real.quantization[0], rel=1e-6)
        assert spec.quantization.zero_point == real.quantization[1]
    details = model.backend.details()
    assert str(details["runtime"]).startswith("ai-edge-litert")
    assert isinstance(details["ops_delegated"], int) and details["ops_delegated"] > 0


# --------------------------------------------------------------------------- parity


def test_float_tflite_matches_float_onnx(served: dict[str, Served]) -> None:
    onnx_fp32, tflite_fp32 = served[ONNX_VERSION], served[FP32_VERSION]
    assert tflite_fp32.top1 == onnx_fp32.top1
    assert np.abs(tflite_fp32.probs - onnx_fp32.probs).max() <= 1e-4


def test_int8_tflite_tracks_float_tflite(served: dict[str, Served]) -> None:
    fp32, int8 = served[FP32_VERSION], served[INT8_VERSION]
    assert agreement(int8, fp32) >= 0.97
    diff = np.abs(int8.probs - fp32.probs)
    assert diff.max() <= 0.15 and diff.mean() <= 0.01
    ranked = np.argsort(-fp32.probs, axis=1, kind="stable")
    labels = fp32.model.manifest.labels
    for i in np.flatnonzero([a != b for a, b in zip(int8.top1, fp32.top1, strict=True)]):
        first, second = fp32.probs[i, ranked[i, 0]], fp32.probs[i, ranked[i, 1]]
        assert first - second < 0.3, f"frame {i}: int8 overturned a clear float decision"
        assert int8.top1[i] == labels[ranked[i, 1]]


def test_int8_tflite_matches_int8_onnx(served: dict[str, Served]) -> None:
    assert agreement(served[INT8_VERSION], served[ONNX_INT8_VERSION]) >= 0.97
    assert np.abs(served[INT8_VERSION].probs - served[ONNX_INT8_VERSION].probs).max() <= 0.15


@pytest.mark.parametrize("version", VERSIONS)
def test_every_encoding_still_classifies(
    version: str, served: dict[str, Served], frames: list[tuple[NDArray[np.uint8], int]]
) -> None:
    truth = [SCENE_KINDS[label] for _, label in frames]
    hits = [p == t for p, t in zip(served[version].top1, truth, strict=True)]
    assert np.mean(hits) >= 0.93  # measured 0.963-0.973


# --------------------------------------------------------------------------- the exporter


def mobilenet_bundles(root: Path) -> tuple[Path, Path]:
    model = mobilenet_v2_onnx(num_classes=10, input_hw=64, seed=3)
    fields = {
        "inputs": [{"name": "image", "shape": [1, 3, 64, 64]}],
        "outputs": [{"name": "logits", "shape": [1, 10]}],
        "postprocess": {"type": "classify", "softmax": True, "top_k": 1},
    }
    onnx_dir = write_bundle(root, "mnv2", "onnx", serialize(model), fields)
    tflite_fields = {
        **fields,
        "backend": "litert",
        "inputs": [{"name": "image", "shape": [1, 64, 64, 3], "layout": "NHWC"}],
    }
    tflite_dir = write_bundle(
        root, "mnv2", "tflite", onnx_to_tflite(model), tflite_fields, file_name=TFLITE_FILE
    )
    return onnx_dir, tflite_dir


def test_mobilenet_v2_converts_to_the_same_function(tmp_path: Path) -> None:
    onnx_dir, tflite_dir = mobilenet_bundles(tmp_path)
    rng = np.random.default_rng(FRESH_SEED + 1)
    images = [render_scene(SCENE_KINDS[i % 3], rng, 320, 240) for i in range(6)]
    onnx_model = LoadedModel.load(onnx_dir, OrtBackendConfig())
    tflite_model = LoadedModel.load(tflite_dir, LiteRtBackendConfig())
    try:
        for image in images:
            assert onnx_model.preprocessor is not None and tflite_model.preprocessor is not None
            expected = onnx_model.infer(onnx_model.preprocessor(image)[0])[0]
            got = tflite_model.infer(tflite_model.preprocessor(image)[0])[0]
            assert got.argmax() == expected.argmax()
            assert np.abs(got - expected).max() <= 1e-4 * max(1.0, float(np.abs(expected).max()))
    finally:
        onnx_model.close()
        tflite_model.close()


def test_a_graph_with_unsupported_ops_is_refused_by_name() -> None:
    detector = onnx.load(str(REPO / "models" / "demo-hazard-detector" / "1.0.0" / "model.onnx"))
    with pytest.raises(UnsupportedGraph, match="op Reshape is not supported"):
        onnx_to_tflite(detector)


def test_builder_is_deterministic_and_its_bundles_load(tmp_path: Path) -> None:
    """Small data sets, built twice: byte-identical bundles that edgewatch loads."""
    assert TFLITE_CLASSIFIER_NAME in BUILDERS  # `python -m tools.demo_models --only ...`

    def build(root: Path) -> Path:
        return build_demo_tflite_classifier(
            root, seed=5, n_per_class=30, n_heldout_per_class=3, n_calibration_per_class=20
        ).parent

    first, second = build(tmp_path / "a"), build(tmp_path / "b")
    assert sorted(p.name for p in first.iterdir()) == sorted(VERSIONS)
    for version in VERSIONS:
        files = sorted(p.name for p in (first / version).iterdir())
        assert files == sorted(p.name for p in (second / version).iterdir())
        for name in files:
            assert (first / version / name).read_bytes() == (second / version / name).read_bytes()
        model = LoadedModel.load(first / version, backend_for(first / version))
        try:
            assert model.manifest.provenance["seed"] == 5
            assert model.sample_outputs()[0].shape == (1, len(SCENE_KINDS))
        finally:
            model.close()
