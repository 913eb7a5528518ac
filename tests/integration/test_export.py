"""edgewatch export: torch / scikit-learn → ONNX and Keras → TFLite, verified against the source,
the numbers stored in the manifest, and the bundle loaded by the runtime."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from runtime.backends.litert import LiteRtBackendConfig
from runtime.backends.onnxruntime import OrtBackendConfig
from runtime.model import LoadedModel
from runtime.signature import verify_bundle
from tools.export import cli
from tools.signing import generate_keys

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NETS = """
import torch

def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3), torch.nn.Softmax(-1)
    )

def cnn():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(4, 2),
    )

class _NaN(torch.nn.Module):
    def forward(self, x):
        return torch.log(-x.abs() - 1.0)

def nan_model():
    return _NaN()
"""


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nets") / "nets.py"
    path.write_text(NETS)
    return path


def manifest(bundle: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((bundle / "manifest.json").read_text())
    return loaded


@pytest.mark.parametrize(
    ("factory", "shape", "dynamic"),
    [
        ("mlp", "1x6", False),
        ("mlp", "1x6", True),
        ("cnn", "1x3x16x16", False),
        ("cnn", "1x3x16x16", True),
    ],
)
def test_torch_to_onnx_is_verified_bundled_and_loads(
    nets: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    factory: str,
    shape: str,
    dynamic: bool,
) -> None:
    import torch

    argv = [f"{nets}:{factory}", "--kind", "torch", "--input-shape", shape, "--out", str(tmp_path)]
    argv += ["--name", factory, "--version", "1", *(["--dynamic-batch"] if dynamic else [])]
    assert cli.main(argv) == 0
    assert "top-1 agreement 1.0000" in capsys.readouterr().out

    bundle = tmp_path / factory / "1"
    assert sorted(p.name for p in bundle.iterdir()) == ["manifest.json", "model.onnx"]
    m = manifest(bundle)
    check = m["provenance"]["export_verification"]
    assert check["passed"] is True and check["samples"] == 8
    assert 0 <= check["max_abs_diff"] < 1e-5 and check["top1_agreement"] == 1.0
    assert m["provenance"]["opset"] == 17 and m["provenance"]["dynamic_batch"] == dynamic
    assert m["inputs"][0]["shape"][0] == ("N" if dynamic else 1)

    model = LoadedModel.load(bundle, OrtBackendConfig(type="onnxruntime"))
    try:
        dims = [int(d) for d in shape.split("x")]
        x = np.random.default_rng(5).standard_normal(dims).astype(np.float32)
        expected = getattr(_module(nets), factory)()(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(model.infer(x)[0], expected, atol=1e-5)
        if dynamic:  # a batch of 3 where the export saw 1
            batch = np.concatenate([x, x, x])
            assert model.infer(batch)[0].shape == (3, *expected.shape[1:])
    finally:
        model.close()


def _module(path: Path) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("nets_for_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("estimator", ["logistic", "forest"])
def test_sklearn_to_onnx_compares_probabilities(tmp_path: Path, estimator: str) -> None:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 5)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1)
    model = (
        LogisticRegression(max_iter=500)
        if estimator == "logistic"
        else RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0)
    ).fit(x, y)
    joblib.dump(model, tmp_path / "model.joblib")
    samples = rng.standard_normal((20, 5)).astype(np.float32)
    np.save(tmp_path / "samples.npy", samples)

    argv = [str(tmp_path / "model.joblib"), "--kind", "sklearn", "--out", str(tmp_path)]
    argv += ["--name", estimator, "--version", "1", "--samples", str(tmp_path / "samples.npy")]
    assert cli.main([*argv, "--labels", "a,b,c"]) == 0

    bundle = tmp_path / estimator / "1"
    m = manifest(bundle)
    check = m["provenance"]["export_verification"]
    assert check["samples"] == 20 and check["top1_agreement"] == 1.0
    assert check["per_output"]["label"] == 1.0 and check["per_output"]["probabilities"] < 1e-5
    assert [(o["name"], o["dtype"]) for o in m["outputs"]] == [
        ("label", "int64"),
        ("probabilities", "float32"),
    ]
    assert m["labels"] == ["a", "b", "c"] and m["provenance"]["estimator"] == type(model).__name__
    loaded = LoadedModel.load(bundle, OrtBackendConfig(type="onnxruntime"))
    try:
        labels, probabilities = loaded.infer(samples)
        np.testing.assert_array_equal(labels, model.predict(samples))
        np.testing.assert_allclose(probabilities, model.predict_proba(samples), atol=1e-5)
    finally:
        loaded.close()


def test_keras_to_tflite_is_verified_and_loads_with_litert(tmp_path: Path) -> None:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    with warnings.catch_warnings():  # keras' own numpy-2 copy= deprecation while saving
        warnings.simplefilter("ignore", DeprecationWarning)
        model.save(tmp_path / "tiny.keras")
    argv = [str(tmp_path / "tiny.keras"), "--kind", "keras", "--out", str(tmp_path)]
    assert cli.main([*argv, "--name", "tiny", "--version", "1", "--mean", "0.5,0.5,0.5"]) == 0

    bundle = tmp_path / "tiny" / "1"
    m = manifest(bundle)
    assert m["backend"] == "litert" and m["file"] == "model.tflite"
    assert m["inputs"][0]["layout"] == "NHWC" and m["inputs"][0]["mean"] == [0.5, 0.5, 0.5]
    check = m["provenance"]["export_verification"]
    assert check["passed"] and check["max_abs_diff"] < 1e-5 and check["top1_agreement"] == 1.0
    loaded = LoadedModel.load(bundle, LiteRtBackendConfig(type="litert"))
    try:
        x = np.random.default_rng(1).standard_normal((1, 8, 8, 3)).astype(np.float32)
        np.testing.assert_allclose(loaded.infer(x)[0], model(x).numpy(), atol=1e-5)
    finally:
        loaded.close()


def test_torch_tflite_without_litert_torch_exits_2_naming_the_pip_install(
    nets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tools.export import torch_tflite

    monkeypatch.setattr(torch_tflite, "CONVERTERS", ("edgewatch_no_such_converter",))
    argv = [f"{nets}:mlp", "--kind", "torch-tflite", "--input-shape", "1x6"]
    assert cli.main([*argv, "--out", str(tmp_path), "--name", "m", "--version", "1"]) == 2
    assert "pip install litert-torch" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("factory", "extra", "problem"),
    [
        ("mlp", ["--atol", "1e-12"], "max abs diff"),
        ("nan_model", [], "max abs diff inf"),
    ],
)
def test_a_failed_verification_exits_1_and_writes_no_bundle(
    nets: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    factory: str,
    extra: list[str],
    problem: str,
) -> None:
    argv = [f"{nets}:{factory}", "--kind", "torch", "--input-shape", "1x6", *extra]
    assert cli.main([*argv, "--out", str(tmp_path), "--name", "bad", "--version", "1"]) == 1
    err = capsys.readouterr().err
    assert "verification failed" in err and problem in err and "no bundle written" in err
    assert not (tmp_path / "bad").exists()


def test_a_template_that_contradicts_the_model_is_refused(
    nets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template = tmp_path / "m.json"
    template.write_text(json.dumps({"inputs": [{"shape": [1, 7]}]}))
    argv = [f"{nets}:mlp", "--kind", "torch", "--input-shape", "1x6", "--out", str(tmp_path)]
    argv += ["--name", "t", "--version", "1", "--manifest-template", str(template)]
    assert cli.main(argv) == 1
    assert "shape [1, 7] but the model's is [1, 6]" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_cli_export_via_subprocess_with_template_and_signature(nets: Path, tmp_path: Path) -> None:
    keys = generate_keys(tmp_path / "keys")
    template = tmp_path / "m.json"
    template.write_text(
        json.dumps(
            {
                "name": "ignored",  # derived fields of a copied manifest are dropped
                "inputs": [{"layout": "NCHW", "color": "BGR", "scale": 1.0}],
                "postprocess": {"type": "classify", "top_k": 1},
                "provenance": {"dataset": "colours-v1"},
            }
        )
    )
    args = [f"{nets}:cnn", "--kind", "torch", "--input-shape", "1x3x16x16", "--out", "models"]
    args += ["--name", "cnn", "--version", "2", "--manifest-template", str(template)]
    args += ["--sign-key", str(keys.private), "--labels", "x,y", "--std", "0.2,0.2,0.2"]
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "export", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote models/cnn/2" in done.stdout
    bundle = tmp_path / "models" / "cnn" / "2"
    m = manifest(bundle)
    assert m["name"] == "cnn" and m["inputs"][0]["color"] == "BGR"
    assert m["inputs"][0]["std"] == [0.2, 0.2, 0.2] and m["labels"] == ["x", "y"]
    assert m["provenance"]["dataset"] == "colours-v1"
    assert m["provenance"]["export_verification"]["passed"] is True
    assert verify_bundle(bundle, keys.public) == (bundle / "manifest.json").read_bytes()
