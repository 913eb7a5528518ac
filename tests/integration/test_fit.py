"""tools.fit end to end: generated normal/faulty sensor data → fitted models → ONNX (run with
onnxruntime) → thresholds that flag faults and not normal operation → verified bundles → CLI."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from numpy.typing import NDArray

from runtime.manifest import MANIFEST_FILE, manifest_model
from tools.fit import MODEL_KINDS, FitResult, ThresholdSpec, fit_recording
from tools.fit.data import Recording, featurise, make_windows
from tools.fit.pca import PcaModel

pytestmark = pytest.mark.integration

FIELDS = ("vibration", "current", "temperature")
RATE_HZ = 100.0
WINDOW, HOP = 64, 32
FAULTS = ("shifted_mean", "vibration_harmonic", "stuck_sensor")
REPO = Path(__file__).resolve().parents[2]
DETECTS_EVERY_FAULT = ("pca", "autoencoder")


def normal_signals(
    n: int, seed: int, t0: float = 0.0
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(timestamps in s, values (n, 3)): a 5 Hz vibration, a slowly varying motor current and a
    drifting temperature, each with noise."""
    rng = np.random.default_rng(seed)
    t = t0 + np.arange(n) / RATE_HZ
    vibration = np.sin(2 * np.pi * 5 * t) + 0.3 * rng.standard_normal(n)
    current = 2.0 + 0.5 * np.sin(2 * np.pi * 0.5 * t + 1.0) + 0.1 * rng.standard_normal(n)
    temperature = 40.0 + 0.5 * np.sin(2 * np.pi * 0.02 * t) + 0.3 * rng.standard_normal(n)
    return t, np.stack([vibration, current, temperature], axis=1)


def inject(fault: str, t: NDArray[np.float64], values: NDArray[np.float64]) -> NDArray[np.float64]:
    out = values.copy()
    if fault == "shifted_mean":
        out[:, 1] += 2.0
    elif fault == "vibration_harmonic":
        out[:, 0] += 1.5 * np.sin(2 * np.pi * 23 * t)
    elif fault == "stuck_sensor":
        out[:, 2] = out[0, 2]
    else:
        raise AssertionError(fault)
    return out


def windows_features(t: NDArray[np.float64], values: NDArray[np.float64]) -> NDArray[np.float32]:
    rec = Recording("m1", FIELDS, values, np.round(t * 1e9).astype(np.int64))
    return featurise(make_windows([rec], WINDOW, HOP))


def write_csv(path: Path, t: NDArray[np.float64], values: NDArray[np.float64]) -> Path:
    half = len(t) // 2
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ts", "machine", *FIELDS])
        for i, (ti, row) in enumerate(zip(t, values, strict=True)):
            w.writerow([f"{ti:.3f}", "m1" if i < half else "m2", *(f"{v:.6f}" for v in row)])
    return path


def write_jsonl(path: Path, t: NDArray[np.float64], values: NDArray[np.float64]) -> Path:
    with open(path, "w") as f:
        for ti, row in zip(t, values, strict=True):
            f.write(
                json.dumps({"ts": ti, **dict(zip(FIELDS, map(float, row), strict=True))}) + "\n"
            )
    return path


@dataclass(frozen=True)
class Data:
    train_csv: Path
    train_jsonl: Path
    held_out: NDArray[np.float32]
    faulty: dict[str, NDArray[np.float32]]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    root = tmp_path_factory.mktemp("fit-data")
    t, v = normal_signals(32_000, seed=1)  # two keys of 16 000 readings: ~1000 windows
    held_t, held_v = normal_signals(32_000, seed=2, t0=1000.0)
    fault_t, fault_v = normal_signals(8_000, seed=3, t0=5000.0)
    return Data(
        train_csv=write_csv(root / "normal.csv", t, v),
        train_jsonl=write_jsonl(root / "normal.jsonl", t, v),
        held_out=windows_features(held_t, held_v),
        faulty={f: windows_features(fault_t, inject(f, fault_t, fault_v)) for f in FAULTS},
    )


@pytest.fixture(scope="module")
def fitted(data: Data, tmp_path_factory: pytest.TempPathFactory) -> dict[str, FitResult]:
    out = tmp_path_factory.mktemp("fit-models")
    return {
        kind: fit_recording(
            data.train_csv,
            FIELDS,
            kind=kind,
            threshold=ThresholdSpec("quantile", 0.995),
            name=f"motor-{kind}",
            version="1",
            out=out,
            window=WINDOW,
            hop=HOP,
            key_column="machine",
            timestamp_column="ts",
        )
        for kind in MODEL_KINDS
    }


def run_onnx(bundle_dir: Path, features: NDArray[np.float32]) -> dict[str, NDArray[np.float32]]:
    session = ort.InferenceSession(
        str(bundle_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    assert [i.name for i in session.get_inputs()] == ["features"]
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"features": features}), strict=True))


def pca_reference(model: PcaModel, x: NDArray[np.float32]) -> tuple[NDArray[Any], NDArray[Any]]:
    """T² and Q straight from the definitions, independent of PcaModel.statistics."""
    z = (x.astype(np.float64) - model.mean) / model.std
    t2 = np.zeros(len(z))
    for i in range(model.components.shape[1]):
        t2 += (z @ model.components[:, i]) ** 2 / model.eigenvalues[i]
    x_hat = z @ model.components @ model.components.T
    return t2, ((z - x_hat) ** 2).sum(axis=1)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_onnx_equals_training_library(kind: str, data: Data, fitted: dict[str, FitResult]) -> None:
    result = fitted[kind]
    x = np.concatenate([data.held_out[:200], *(f[:50] for f in data.faulty.values())])
    got = run_onnx(result.bundle_dir, x)
    assert got["score"].shape in ((len(x),), (len(x), 1))
    score = got["score"].reshape(-1)
    np.testing.assert_allclose(score, result.model.score(x), rtol=1e-4, atol=1e-5)
    if kind == "pca":
        assert isinstance(result.model, PcaModel)
        t2, q = pca_reference(result.model, x)
        np.testing.assert_allclose(got["t2"], t2, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(got["q"], q, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(
            score,
            np.maximum(t2 / result.model.t2_threshold, q / result.model.q_threshold),
            rtol=1e-3,
            atol=1e-4,
        )
    # the batch axis is dynamic: one row gives the same score as in the batch
    np.testing.assert_allclose(
        run_onnx(result.bundle_dir, x[3:4])["score"].reshape(-1), score[3:4], rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_threshold_separates_normal_from_faulty(
    kind: str, data: Data, fitted: dict[str, FitResult]
) -> None:
    result = fitted[kind]
    threshold = result.model.threshold
    normal_alarms = run_onnx(result.bundle_dir, data.held_out)["score"].reshape(-1) > threshold
    assert normal_alarms.mean() <= 0.015, (
        f"{kind}: {normal_alarms.mean():.2%} of normal windows flagged"
    )
    normal_scores = run_onnx(result.bundle_dir, data.held_out)["score"].reshape(-1)
    tp = fn = 0
    for fault, features in data.faulty.items():
        scores = run_onnx(result.bundle_dir, features)["score"].reshape(-1)
        flagged = scores > threshold
        if kind in DETECTS_EVERY_FAULT:
            assert flagged.mean() >= 0.9, f"{kind}/{fault}: only {flagged.mean():.1%} flagged"
        else:
            # IsolationForest on 18 per-field features isolates a fault confined to 3 of them
            # poorly (it flags 1-30% here); its scores must still rank faulty above normal
            assert np.median(scores) > np.median(normal_scores), f"{kind}/{fault}"
        tp += int(flagged.sum())
        fn += int((~flagged).sum())
    fp = int(normal_alarms.sum())
    f1 = 2 * tp / (2 * tp + fp + fn)
    print(f"{kind}: F1 {f1:.3f} (tp {tp}, fp {fp}, fn {fn})")
    if kind in DETECTS_EVERY_FAULT:
        assert f1 >= 0.95


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_bundle_manifest_records_features_and_threshold(
    kind: str, fitted: dict[str, FitResult]
) -> None:
    result = fitted[kind]
    raw = json.loads((result.bundle_dir / MANIFEST_FILE).read_text())
    manifest = manifest_model().model_validate(raw)
    assert (
        hashlib.sha256((result.bundle_dir / manifest.file).read_bytes()).hexdigest()
        == manifest.sha256
    )
    assert manifest.inputs[0].name == "features"
    assert manifest.inputs[0].shape == [None, len(result.feature_names)]
    assert manifest.outputs[0].name == "score"
    prov = manifest.provenance
    assert prov["model_kind"] == kind
    assert prov["fields"] == list(FIELDS)
    assert prov["window"] == {"type": "count", "size": WINDOW, "hop": HOP}
    assert prov["feature_names"] == list(result.feature_names)
    assert len(result.feature_names) == 6 * len(FIELDS)
    assert prov["feature_spec"]["time"] == ["mean", "std", "rms", "peak", "kurtosis", "skewness"]
    assert prov["threshold"] == {
        "method": "quantile",
        "param": 0.995,
        "value": result.model.threshold,
    }
    assert prov["training"]["n_windows"] == result.training_features.shape[0]
    assert prov["training"]["false_alarm_rate"] <= 0.01


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.fit", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("source", "model", "threshold", "extra"),
    [
        ("train_csv", "autoencoder", "quantile:0.995", ["--key-column", "machine"]),
        ("train_jsonl", "pca", "pot:1e-3", []),
    ],
)
def test_cli_end_to_end(
    source: str, model: str, threshold: str, extra: list[str], data: Data, tmp_path: Path
) -> None:
    proc = run_cli(
        "--input",
        str(getattr(data, source)),
        "--fields",
        ",".join(FIELDS),
        "--timestamp-column",
        "ts",
        "--window",
        str(WINDOW),
        "--hop",
        str(HOP),
        "--model",
        model,
        "--threshold",
        threshold,
        "--name",
        "cli-model",
        "--version",
        "2",
        "--out",
        str(tmp_path),
        *extra,
    )
    assert proc.returncode == 0, proc.stderr
    bundle = tmp_path / "cli-model" / "2"
    assert Path(proc.stdout.strip()) == bundle
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    assert hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest() == manifest["sha256"]
    method, _, param = threshold.partition(":")
    assert manifest["provenance"]["threshold"]["method"] == method
    assert manifest["provenance"]["threshold"]["param"] == float(param)
    score = run_onnx(bundle, data.held_out)["score"].reshape(-1)
    assert (score > manifest["provenance"]["threshold"]["value"]).mean() <= 0.02
    for fault in data.faulty.values():
        assert (
            run_onnx(bundle, fault)["score"].reshape(-1)
            > manifest["provenance"]["threshold"]["value"]
        ).mean() >= 0.9


def test_cli_names_missing_field(data: Data, tmp_path: Path) -> None:
    proc = run_cli(
        "--input",
        str(data.train_jsonl),
        "--fields",
        "vibration,pressure",
        "--model",
        "pca",
        "--name",
        "x",
        "--version",
        "1",
        "--out",
        str(tmp_path),
    )
    assert proc.returncode == 2
    assert "missing column(s) pressure" in proc.stderr
    assert "normal.jsonl:1" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_non_numeric_value_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("ts,a\n0,1.0\n1,oops\n")
    with pytest.raises(ValueError, match=r"bad.csv:3: field 'a' is 'oops'; expected a number"):
        fit_recording(
            path,
            ["a"],
            kind="pca",
            threshold=ThresholdSpec("quantile", 0.99),
            name="x",
            version="1",
            out=tmp_path,
            window=2,
            hop=1,
        )


def test_edgewatch_fit_dispatches_to_the_desktop_tool(capsys: pytest.CaptureFixture[str]) -> None:
    from runtime.cli import main as edgewatch

    with pytest.raises(SystemExit) as exit_info:
        edgewatch(["fit", "--help"])
    assert exit_info.value.code == 0
    assert "--model" in capsys.readouterr().out
