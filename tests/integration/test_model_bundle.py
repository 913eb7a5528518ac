"""Model bundles: sha256 and tensor checks against the manifest, real onnxruntime sessions."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from runtime.backends.onnxruntime import OrtBackendConfig
from runtime.cli import main
from runtime.errors import ModelError
from runtime.model import LoadedModel, sha256_file
from tests.fixture_models import COLOUR_LABELS, build_colour_bundle

pytestmark = pytest.mark.integration


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return build_colour_bundle(tmp_path / "models")


def edit_manifest(bundle: Path, **changes: object) -> None:
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("bgr", "label"), [((0, 0, 255), "red"), ((0, 255, 0), "green"), ((255, 0, 0), "blue")]
)
def test_loaded_model_classifies_real_frames(
    bundle: Path, bgr: tuple[int, int, int], label: str
) -> None:
    model = LoadedModel.load(bundle, OrtBackendConfig())
    frame = np.zeros((120, 160, 3), np.uint8)
    frame[:] = bgr
    tensor, _ = model.preprocessor(frame)
    (probs,) = model.infer(tensor)
    assert COLOUR_LABELS[int(np.argmax(probs))] == label
    assert float(probs.max()) > 0.99
    assert model.info.sha256 == sha256_file(model.path)


def test_tampered_model_is_refused(bundle: Path) -> None:
    model_file = bundle / "model.onnx"
    data = bytearray(model_file.read_bytes())
    data[-5] ^= 0xFF
    model_file.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"does not match the manifest.*refusing"):
        LoadedModel.load(bundle, OrtBackendConfig())


def test_corrupt_model_with_matching_hash_is_a_model_error(bundle: Path) -> None:
    model_file = bundle / "model.onnx"
    model_file.write_bytes(model_file.read_bytes()[:40])
    edit_manifest(bundle, sha256=sha256_file(model_file))
    with pytest.raises(ModelError, match="onnxruntime cannot load"):
        LoadedModel.load(bundle, OrtBackendConfig())


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "inputs",
            [{"name": "image", "shape": [1, 3, 64, 64]}],
            r"shape \[1, 3, 32, 32\] in the model",
        ),
        ("inputs", [{"name": "pixels", "shape": [1, 3, 32, 32]}], r"manifest inputs \['pixels'\]"),
        ("inputs", [{"name": "image", "shape": [1, 3, 32, 32], "dtype": "uint8"}], "is float32 in"),
        ("outputs", [{"name": "probs", "shape": [1, 4]}], "shape \\[1, 3\\] in the model"),
        ("postprocess", {"type": "segment"}, "postprocess"),
        ("sha256", "abc", "sha256"),
    ],
)
def test_manifest_that_disagrees_with_the_model(
    bundle: Path, field: str, value: object, message: str
) -> None:
    edit_manifest(bundle, **{field: value})
    with pytest.raises(ModelError, match=message):
        LoadedModel.load(bundle, OrtBackendConfig())


def test_missing_manifest_and_missing_file(tmp_path: Path, bundle: Path) -> None:
    with pytest.raises(ModelError, match=r"no manifest\.json"):
        LoadedModel.load(tmp_path, OrtBackendConfig())
    (bundle / "model.onnx").unlink()
    with pytest.raises(ModelError, match=r"model file model\.onnx is missing"):
        LoadedModel.load(bundle, OrtBackendConfig())


def test_unknown_provider_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match=r"unknown onnxruntime provider.*CUDAProvider"):
        OrtBackendConfig(providers=["CUDAProvider"])


def test_unavailable_provider_falls_back_to_cpu_and_says_so(
    bundle: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = OrtBackendConfig(providers=["CUDAExecutionProvider", "OpenVINOExecutionProvider"])
    with caplog.at_level(logging.WARNING):
        model = LoadedModel.load(bundle, config)
    assert model.backend.requested_providers == [
        "CUDAExecutionProvider",
        "OpenVINOExecutionProvider",
    ]
    assert model.backend.active_providers == ["CPUExecutionProvider"]
    assert "not available in this onnxruntime build" in caplog.text


def test_models_verify_cli(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "verify", str(bundle)]) == 0
    assert "colour 1.0.0 ok" in capsys.readouterr().out
    (bundle / "model.onnx").write_bytes(b"not a model")
    assert main(["models", "verify", str(bundle)]) == 1
    assert "refusing to load" in capsys.readouterr().err
