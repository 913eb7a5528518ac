"""Demo model bundles: built from generated scenes, loaded and run the way the runtime runs them
(LoadedModel + onnxruntime + the manifest's postprocessor) on freshly rendered held-out scenes."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from numpy.typing import NDArray

import tools.bundle
from runtime.backends.onnxruntime import OrtBackendConfig
from runtime.errors import ModelError
from runtime.manifest import MANIFEST_FILE, manifest_model
from runtime.messages import Classification, Detection
from runtime.model import LoadedModel
from runtime.processing.nms import box_iou
from runtime.processing.postprocess.base import POSTPROCESSORS, Postprocessor
from tools.bundle import write_bundle
from tools.demo_models import (
    BENCHMARK_NAME,
    CLASSIFIER_NAME,
    DETECTOR_NAME,
    VERSION,
    MlpWeights,
    bank_weights,
    build_benchmark_model,
    build_demo_classifier,
    build_demo_detector,
    main,
)
from tools.onnx_builders import (
    grid_anchor_boxes,
    grid_detector_onnx,
    mlp_classifier_onnx,
    mobilenet_v2_onnx,
    parameter_count,
    pooled_features,
    serialize,
)
from tools.scenes import SCENE_KINDS, render_detection_scene, render_scene

pytestmark = pytest.mark.integration

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"
FRESH_SEED = 2024  # never used by the builders (they draw from seed 0/1 streams)


# --------------------------------------------------------------------------- helpers


@dataclass
class RuntimeModel:
    """A bundle as the runtime serves it: sha-checked load, preprocessing, inference, decoding."""

    model: LoadedModel
    decoder: Postprocessor

    @classmethod
    def load(cls, bundle: Path) -> RuntimeModel:
        model = LoadedModel.load(bundle, OrtBackendConfig())
        pp = model.manifest.postprocess
        decoder = POSTPROCESSORS.get(pp.type).from_config(pp, model.manifest.labels)
        return cls(model, decoder)

    def __call__(
        self, image: NDArray[np.uint8]
    ) -> tuple[tuple[Classification, ...], tuple[Detection, ...]]:
        tensor, geometry = self.model.preprocessor(image)
        return self.decoder.decode(list(self.model.infer(tensor)), geometry)


@dataclass(frozen=True)
class DetectionFrames:
    images: list[NDArray[np.uint8]]
    boxes: list[list[tuple[float, float, float, float]]]


def classifier_accuracy(bundle: Path, frames: list[tuple[NDArray[np.uint8], str]]) -> float:
    run = RuntimeModel.load(bundle)
    try:
        hits = [run(image)[0][0].label == kind for image, kind in frames]
    finally:
        run.model.close()
    return float(np.mean(hits))


def detector_scores(bundle: Path, frames: DetectionFrames) -> tuple[float, float]:
    """(share of hazards found with IoU >= 0.3, share of empty scenes with no detection)."""
    run = RuntimeModel.load(bundle)
    found = total = clean = empty = 0
    try:
        for image, truth in zip(frames.images, frames.boxes, strict=True):
            _, dets = run(image)
            pred = np.asarray([d.bbox for d in dets], np.float64).reshape(-1, 4)
            if not truth:
                empty += 1
                clean += int(len(dets) == 0)
                continue
            total += len(truth)
            if len(pred):
                found += int((box_iou(pred, np.asarray(truth)).max(axis=0) >= 0.3).sum())
    finally:
        run.model.close()
    return found / total, clean / empty


def read_bundle(bundle: Path) -> tuple[dict[str, object], bytes]:
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    return manifest, (bundle / str(manifest["file"])).read_bytes()


def tiny_model_bytes() -> bytes:
    rng = np.random.default_rng(0)
    return serialize(
        mlp_classifier_onnx(
            rng.normal(size=(3 * 4 * 4, 4)),
            np.zeros(4),
            rng.normal(size=(4, 2)),
            np.zeros(2),
            input_hw=(8, 8),
            pool=2,
        )
    )


def manifest_fields(**extra: object) -> dict[str, object]:
    return {
        "inputs": [{"name": "image", "shape": [1, 3, 8, 8]}],
        "outputs": [{"name": "probs", "shape": [1, 2]}],
        "labels": ["a", "b"],
        "postprocess": {"type": "classify", "top_k": 2},
        **extra,
    }


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def fresh_classifier_frames() -> list[tuple[NDArray[np.uint8], str]]:
    frames: list[tuple[NDArray[np.uint8], str]] = []
    for i in range(20):
        for c, kind in enumerate(SCENE_KINDS):
            rng = np.random.default_rng([FRESH_SEED, c, i])
            frames.append((render_scene(kind, rng, t=float(rng.uniform(0, 60))), kind))
    return frames


@pytest.fixture(scope="module")
def fresh_detector_frames() -> DetectionFrames:
    images, boxes = [], []
    for i in range(60):
        n_objects = 0 if i % 3 == 0 else 1 + (i // 3) % 3  # 20 empty, 40 with 1 to 3 hazards
        image, truth = render_detection_scene(np.random.default_rng([FRESH_SEED, 7, i]), n_objects)
        images.append(image)
        boxes.append(truth)
    return DetectionFrames(images, boxes)


@pytest.fixture(scope="module")
def small_bundles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """The demo models built with small data sets, as a developer would in a hurry."""
    root = tmp_path_factory.mktemp("models")
    yield {
        CLASSIFIER_NAME: build_demo_classifier(
            root, seed=1, n_per_class=200, n_heldout_per_class=5, n_calibration_per_class=5
        ),
        DETECTOR_NAME: build_demo_detector(root, seed=1, n_train=200, n_heldout=8),
    }


# --------------------------------------------------------------------------- the real bundles


@pytest.mark.parametrize("name", [CLASSIFIER_NAME, DETECTOR_NAME])
def test_real_bundle_is_valid_and_hash_matches(name: str) -> None:
    bundle = REPO_MODELS / name / VERSION
    manifest, data = read_bundle(bundle)
    parsed = manifest_model().model_validate(manifest)
    assert parsed.name == name and parsed.version == VERSION
    assert hashlib.sha256(data).hexdigest() == parsed.sha256
    assert parsed.provenance["generator"] == "tools.demo_models"
    text = (bundle / MANIFEST_FILE).read_text()
    assert text == json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def test_real_classifier_recorded_heldout_accuracy() -> None:
    manifest, _ = read_bundle(REPO_MODELS / CLASSIFIER_NAME / VERSION)
    provenance = manifest["provenance"]
    assert isinstance(provenance, dict)
    assert provenance["n_train"] == 1800 and provenance["seed"] == 0
    assert provenance["heldout_accuracy"] >= 0.95
    assert manifest["labels"] == ["normal", "smoke", "fire"]


def test_real_detector_recorded_heldout_quality() -> None:
    manifest, _ = read_bundle(REPO_MODELS / DETECTOR_NAME / VERSION)
    provenance = manifest["provenance"]
    assert isinstance(provenance, dict)
    assert provenance["heldout_recall_iou30"] >= 0.8
    assert provenance["heldout_empty_clean"] >= 0.9
    assert manifest["postprocess"] == {
        "type": "yolo",
        "conf_threshold": 0.5,
        "iou_threshold": 0.45,
        "max_detections": 100,
        "class_agnostic_nms": False,
        "output": 0,
    }


def test_benchmark_model_runs_at_mobilenet_size(tmp_path: Path) -> None:
    # random weights, rebuilt in 0.1 s: not committed (see .gitignore), built where needed
    run = RuntimeModel.load(build_benchmark_model(tmp_path))
    try:
        image = render_scene("normal", np.random.default_rng(0))
        classes, _ = run(image)
    finally:
        run.model.close()
    assert len(classes) == 5
    assert 3_400_000 < run.model.manifest.provenance["parameters"] < 3_600_000


@pytest.mark.parametrize("which", ["real", "small"])
def test_classifier_accuracy_on_fresh_scenes(
    which: str,
    small_bundles: dict[str, Path],
    fresh_classifier_frames: list[tuple[NDArray[np.uint8], str]],
) -> None:
    bundle = (
        REPO_MODELS / CLASSIFIER_NAME / VERSION
        if which == "real"
        else small_bundles[CLASSIFIER_NAME]
    )
    assert classifier_accuracy(bundle, fresh_classifier_frames) >= 0.9


@pytest.mark.parametrize("which", ["real", "small"])
def test_detector_on_fresh_scenes(
    which: str, small_bundles: dict[str, Path], fresh_detector_frames: DetectionFrames
) -> None:
    bundle = (
        REPO_MODELS / DETECTOR_NAME / VERSION if which == "real" else small_bundles[DETECTOR_NAME]
    )
    recall, empty_clean = detector_scores(bundle, fresh_detector_frames)
    assert recall >= 0.8
    assert empty_clean >= 0.9


# --------------------------------------------------------------------------- determinism


def test_same_seed_builds_identical_bytes(tmp_path: Path) -> None:
    def tiny(out: Path, seed: int) -> Path:
        return build_demo_classifier(
            out, seed, n_per_class=4, n_heldout_per_class=1, n_calibration_per_class=1
        )

    a, b, c = tiny(tmp_path / "a", 3), tiny(tmp_path / "b", 3), tiny(tmp_path / "c", 4)
    assert read_bundle(a) == read_bundle(b)
    assert read_bundle(a)[1] != read_bundle(c)[1]
    d1 = build_demo_detector(tmp_path / "a", seed=3, n_train=12, n_heldout=1)
    d2 = build_demo_detector(tmp_path / "b", seed=3, n_train=12, n_heldout=1)
    assert read_bundle(d1) == read_bundle(d2)


# --------------------------------------------------------------------------- bundle writer


def test_bundle_layout_hash_and_manifest_format(tmp_path: Path) -> None:
    data = tiny_model_bytes()
    bundle = write_bundle(tmp_path, "tiny", "0.1.0", data, manifest_fields())
    assert bundle == tmp_path / "tiny" / "0.1.0"
    assert sorted(p.name for p in bundle.iterdir()) == ["manifest.json", "model.onnx"]
    manifest, written = read_bundle(bundle)
    assert written == data
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["file"] == "model.onnx"
    text = (bundle / MANIFEST_FILE).read_text()
    assert text == json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["0.1.0"]  # no temp dirs


def test_failure_mid_write_leaves_no_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = tools.bundle._write_file
    calls: list[Path] = []

    def failing_write(path: Path, data: bytes) -> None:
        calls.append(path)
        if path.name == MANIFEST_FILE:  # the model file is already on disk by now
            raise OSError(28, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(tools.bundle, "_write_file", failing_write)
    with pytest.raises(OSError, match="No space left"):
        write_bundle(tmp_path, "tiny", "0.1.0", tiny_model_bytes(), manifest_fields())
    assert [p.name for p in calls] == ["model.onnx", "manifest.json"]
    assert not (tmp_path / "tiny" / "0.1.0").exists()
    assert list((tmp_path / "tiny").iterdir()) == []


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_overwrite_replaces_and_failed_overwrite_keeps_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    if not exchange:
        monkeypatch.setattr(tools.bundle, "_rename_exchange", lambda a, b: False)
    old = write_bundle(tmp_path, "tiny", "0.1.0", b"old model", manifest_fields())
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_bundle(tmp_path, "tiny", "0.1.0", b"new model", manifest_fields())
    assert read_bundle(old)[1] == b"old model"

    new = write_bundle(
        tmp_path, "tiny", "0.1.0", b"new model", manifest_fields(description="v2"), overwrite=True
    )
    manifest, data = read_bundle(new)
    assert new == old and data == b"new model" and manifest["description"] == "v2"
    assert manifest["sha256"] == hashlib.sha256(b"new model").hexdigest()
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["0.1.0"]

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        write_bundle(tmp_path, "tiny", "0.1.0", b"third", manifest_fields(), overwrite=True)
    assert read_bundle(new) == (manifest, b"new model")
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["0.1.0"]


def test_invalid_manifest_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"(?s)tiny/0.1.0 is invalid.*postprocess.*'bogus'"):
        write_bundle(
            tmp_path, "tiny", "0.1.0", b"x", manifest_fields(postprocess={"type": "bogus"})
        )
    with pytest.raises(ValueError, match="must not set sha256"):
        write_bundle(tmp_path, "tiny", "0.1.0", b"x", manifest_fields(sha256="0" * 64))
    with pytest.raises(ModelError, match="name"):
        write_bundle(tmp_path, "../escape", "0.1.0", b"x", manifest_fields())
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- ONNX builders


def test_mobilenet_v2_topology_and_dynamic_batch() -> None:
    model = mobilenet_v2_onnx(batch=None)
    assert 3_400_000 < parameter_count(model) < 3_600_000
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    depthwise = [n for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)]
    assert len(convs) == 52 and len(depthwise) == 17
    assert sum(n.op_type == "Add" for n in model.graph.node) == 10  # residual connections
    session = ort.InferenceSession(serialize(model), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
    (logits,) = session.run(["logits"], {"image": x})
    assert logits.shape == (2, 1000) and np.isfinite(logits).all()
    assert not np.allclose(logits[0], logits[1])
    assert serialize(mobilenet_v2_onnx(batch=None)) == serialize(model)


@pytest.mark.parametrize("colour", [False, True], ids=["plain", "colour-bank"])
def test_mlp_graph_matches_numpy_forward(colour: bool) -> None:
    rng = np.random.default_rng(5)
    colour_w, colour_b = bank_weights((((1.0, -1.0, 0.0), (0.1, 0.3)), ((0.0, 0.0, 1.0), (0.0,))))
    channels = len(colour_b) if colour else 3
    weights = MlpWeights(
        rng.normal(size=(channels * 4 * 4, 6)),
        rng.normal(size=6),
        rng.normal(size=(6, 3)),
        rng.normal(size=3),
    )
    model = mlp_classifier_onnx(
        weights.w1,
        weights.b1,
        weights.w2,
        weights.b2,
        input_hw=(16, 16),
        pool=4,
        colour_w=colour_w if colour else None,
        colour_b=colour_b if colour else None,
    )
    x = rng.uniform(0, 1, size=(5, 3, 16, 16)).astype(np.float32)
    session = ort.InferenceSession(serialize(model), providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run(["probs"], {"image": xi[None]})[0] for xi in x])
    feats = pooled_features(x, 4, colour_w, colour_b) if colour else pooled_features(x, 4)
    logits = weights.logits(feats)
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_grid_detector_output_layout() -> None:
    anchors = [(8.0, 12.0), (20.0, 30.0)]
    head_w = np.zeros((2, 1, 3, 3))
    model = grid_detector_onnx(
        np.array([[1.0, 0.0, 0.0]]),
        np.zeros(1),
        head_w,
        np.array([-1.0, 2.0]),
        anchors=anchors,
        input_hw=32,
        stride=8,
    )
    onnx.checker.check_model(model)
    session = ort.InferenceSession(serialize(model), providers=["CPUExecutionProvider"])
    (out,) = session.run(["output0"], {"image": np.zeros((1, 3, 32, 32), np.float32)})
    assert out.shape == (1, 5, 2 * 16)
    np.testing.assert_array_equal(out[0, :4], grid_anchor_boxes(32, 8, anchors))
    assert out[0, :4, 0].tolist() == [4.0, 4.0, 8.0, 12.0]  # cx, cy, w, h of the first cell
    np.testing.assert_allclose(out[0, 4, :16], 1 / (1 + np.exp(1.0)), rtol=1e-6)
    np.testing.assert_allclose(out[0, 4, 16:], 1 / (1 + np.exp(-2.0)), rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pool": 3}, "pool 3 must be >= 1 and divide"),
        ({"w1": np.zeros((10, 4))}, r"w1: expected shape \(48, 4\)"),
        ({"b2": np.zeros(3)}, r"b2: expected shape \(2,\)"),
        ({"w2": np.full((4, 2), np.nan)}, "w2: weights must be finite"),
    ],
)
def test_mlp_builder_names_bad_weights(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "w1": np.zeros((48, 4)),
        "b1": np.zeros(4),
        "w2": np.zeros((4, 2)),
        "b2": np.zeros(2),
        "input_hw": (8, 8),
        "pool": 2,
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        mlp_classifier_onnx(**args)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- CLI


def test_cli_builds_one_bundle_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--out", str(tmp_path), "--only", BENCHMARK_NAME]) == 0
    assert BENCHMARK_NAME in capsys.readouterr().out
    bundle = tmp_path / BENCHMARK_NAME / VERSION
    assert read_bundle(bundle) == read_bundle(build_benchmark_model(tmp_path / "again"))
    assert main(["--out", str(tmp_path), "--only", BENCHMARK_NAME]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["--out", str(tmp_path), "--only", BENCHMARK_NAME, "--overwrite"]) == 0
