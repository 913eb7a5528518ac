"""tools.fit end to end: generated normal/faulty sensor data → fitted models → ONNX (run with
onnxruntime) → thresholds that flag faults and not normal operation → verified bundles whose
manifest ``sensor`` section the runtime loads and scores with → CLI; and the committed demo pump
model: quiet on fresh normal data, fast on a fault, reproducible."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from numpy.typing import NDArray

from runtime.backends.onnxruntime import OrtBackendConfig
from runtime.manifest import MANIFEST_FILE, ManifestBase, manifest_model
from runtime.model import LoadedModel
from runtime.processing.features import FeatureSpec
from tools.demo_sensor_model import (
    DEMO_FAULT,
    FEATURES,
    PUMP_NAME,
    TRAIN_KEYS,
    VERSION,
    build_demo_pump_model,
    evaluate,
    fault_windows,
    heldout_windows,
)
from tools.demo_sensor_model import (
    HOP as PUMP_HOP,
)
from tools.demo_sensor_model import (
    WINDOW as PUMP_WINDOW,
)
from tools.fit import MODEL_KINDS, SCORE_OUTPUT, FitResult, ThresholdSpec, fit_recording
from tools.fit.data import DEFAULT_FEATURES, Recording, featurise, make_windows
from tools.fit.pca import PcaModel
from tools.sensor_data import Fault, PumpSimulator, write_recording

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
    assert manifest.postprocess is None and raw.get("postprocess") is None
    sensor = manifest.sensor
    assert sensor is not None
    assert sensor.fields == list(FIELDS)
    assert sensor.window.model_dump() == {"kind": "count", "size": WINDOW, "hop": HOP}
    assert sensor.features == DEFAULT_FEATURES
    assert sensor.feature_names == list(result.feature_names)
    assert len(result.feature_names) == 6 * len(FIELDS)
    assert sensor.score_output == SCORE_OUTPUT == "score"
    assert sensor.threshold == result.model.threshold
    x = result.training_features.astype(np.float64)
    np.testing.assert_allclose(sensor.feature_mean or [], x.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(sensor.feature_std or [], x.std(axis=0), rtol=1e-9)
    prov = manifest.provenance
    assert prov["model_kind"] == kind
    assert prov["threshold"] == {
        "method": "quantile",
        "param": 0.995,
        "value": result.model.threshold,
    }
    assert prov["training"]["n_windows"] == result.training_features.shape[0]
    assert prov["training"]["false_alarm_rate"] <= 0.01


def score_index(manifest: ManifestBase) -> int:
    assert manifest.sensor is not None
    return [o.name for o in manifest.outputs].index(manifest.sensor.score_output)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_runtime_loads_the_bundle_and_scores_like_the_fitted_model(
    kind: str, data: Data, fitted: dict[str, FitResult]
) -> None:
    result = fitted[kind]
    model = LoadedModel.load(result.bundle_dir, OrtBackendConfig(type="onnxruntime"))
    try:
        assert model.preprocessor is None
        i = score_index(model.manifest)
        x = np.concatenate([data.held_out[:100], *(f[:20] for f in data.faulty.values())])
        scores = model.infer(x)[i]
        assert scores.shape in ((len(x),), (len(x), 1))
        expected = result.model.score(x)
        np.testing.assert_allclose(scores.reshape(-1), expected, rtol=1e-4, atol=1e-5)
        one = model.infer(x[7:8])[i]
        assert one.size == 1
        np.testing.assert_allclose(one.reshape(-1), expected[7:8], rtol=1e-4, atol=1e-5)
        # the manifest's threshold applies to that output: normal windows stay below it
        assert model.manifest.sensor is not None
        assert (model.infer(data.held_out)[i] > model.manifest.sensor.threshold).mean() <= 0.015
    finally:
        model.close()


def test_feature_stats_floor_a_constant_feature() -> None:
    from tools.fit.bundle_anomaly import feature_stats

    mean, std = feature_stats(np.array([[5.0, 1.0], [5.0, 3.0]], np.float32))
    assert mean.tolist() == [5.0, 2.0]
    assert std.tolist() == pytest.approx([5e-6, 1.0], rel=1e-12)


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
    limit = manifest["sensor"]["threshold"]
    assert limit == manifest["provenance"]["threshold"]["value"]
    score = run_onnx(bundle, data.held_out)["score"].reshape(-1)
    assert (score > limit).mean() <= 0.02
    for fault in data.faulty.values():
        assert (run_onnx(bundle, fault)["score"].reshape(-1) > limit).mean() >= 0.9


def test_cli_fits_a_generated_recording_with_a_feature_spec(tmp_path: Path) -> None:
    """tools.sensor_data writes what ``edgewatch fit --key-column key --timestamp-column ts``
    reads; ``--features`` takes a FeatureSpec as JSON and lands in the manifest."""
    sim = PumpSimulator(("pump-1", "pump-2"), seed=11)
    recording = write_recording(tmp_path / "pumps.csv", sim, 0.0, 240.0)
    spec = FeatureSpec(time=["rms", "kurtosis"], bands=[(0.0, 7.5), (16.0, 25.0)])
    proc = run_cli(
        "--input", str(recording), "--fields", "vibration,current",
        "--key-column", "key", "--timestamp-column", "ts",
        "--window", "100", "--hop", "50", "--features", spec.model_dump_json(),
        "--model", "pca", "--threshold", "quantile:0.999",
        "--name", "pumps", "--version", "1", "--out", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    model = LoadedModel.load(tmp_path / "pumps" / "1", OrtBackendConfig())
    try:
        sensor = model.manifest.sensor
        assert sensor is not None and sensor.features == spec
        assert sensor.fields == ["vibration", "current"]
        assert sensor.feature_names[:4] == [
            "vibration.rms",
            "vibration.kurtosis",
            "vibration.band_0_7.5hz",
            "vibration.band_16_25hz",
        ]
        faulty = PumpSimulator(("pump-1", "pump-2"), seed=12, fault=Fault("pump-2", 0.0, 0.0))
        batch = make_windows(faulty.recordings(0.0, 60.0), 100, 50)
        scores = model.infer(spec.compute(batch.data, batch.timestamps_ns))[
            score_index(model.manifest)
        ]
        is_faulty = np.asarray(batch.keys) == "pump-2"
        assert (scores[is_faulty] > sensor.threshold).all()
        assert (scores[~is_faulty] > sensor.threshold).mean() < 0.1
    finally:
        model.close()


def test_cli_rejects_an_invalid_feature_spec(data: Data, tmp_path: Path) -> None:
    proc = run_cli(
        "--input", str(data.train_jsonl), "--fields", "vibration",
        "--features", '{"time": ["loudness"]}',
        "--name", "x", "--version", "1", "--out", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--features: time.0:" in proc.stderr


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


# --------------------------------------------------------------------------- demo pump model

PUMP_BUNDLE = REPO / "models" / PUMP_NAME / VERSION


@pytest.fixture(scope="module")
def pump_model() -> Iterator[LoadedModel]:
    model = LoadedModel.load(PUMP_BUNDLE, OrtBackendConfig(type="onnxruntime"))
    yield model
    model.close()


def runtime_scorer(model: LoadedModel) -> Callable[[NDArray[np.float32]], NDArray[np.float64]]:
    i = score_index(model.manifest)
    return lambda features: model.infer(features)[i].astype(np.float64).reshape(-1)


def test_demo_pump_bundle_describes_its_sensor_input(pump_model: LoadedModel) -> None:
    manifest = pump_model.manifest
    sensor = manifest.sensor
    assert sensor is not None and manifest.postprocess is None
    assert sensor.fields == ["vibration", "current"]
    assert sensor.window.model_dump() == {"kind": "count", "size": PUMP_WINDOW, "hop": PUMP_HOP}
    assert sensor.features == FEATURES
    assert sensor.feature_names == FEATURES.names(sensor.fields)
    assert sensor.score_output == "score" and sensor.threshold == 1.0
    assert manifest.provenance["training_data"]["keys"] == list(TRAIN_KEYS)
    heldout = manifest.provenance["heldout"]
    assert heldout["windows_over"] == 0 and heldout["persistent_alarms"] == 0
    assert heldout["fault_min_score"] > 10.0


def test_demo_pump_model_is_quiet_on_fresh_normal_data_and_flags_the_fault_fast(
    pump_model: LoadedModel,
) -> None:
    """Through the runtime's loader and onnxruntime, on data of a seed the build never used."""
    assert pump_model.manifest.sensor is not None
    threshold = pump_model.manifest.sensor.threshold
    result = evaluate(runtime_scorer(pump_model), threshold, seed=4242)
    assert result.pump_hours == 8.0
    assert result.windows_over <= 1 and result.persistent_alarms == 0
    assert result.max_normal_score < 1.5
    # a bearing fault ramping in over 5 s crosses within the third window after onset ...
    assert result.fault_first_alarm_after_s is not None
    assert result.fault_first_alarm_after_s <= 4.0
    # ... and once it has ramped in, every window is far above the threshold; other pumps aren't
    assert result.fault_min_score > 10.0
    assert result.other_keys_max_score < 1.0


def test_demo_pump_model_flags_a_milder_fault_on_a_pump_it_never_saw(
    pump_model: LoadedModel,
) -> None:
    score = runtime_scorer(pump_model)
    sim = PumpSimulator(("pump-42", "pump-43"), seed=7, fault=Fault("pump-43", 60.0, bearing=0.5))
    batch = make_windows(sim.recordings(0.0, 180.0), PUMP_WINDOW, PUMP_HOP)
    scores = score(FEATURES.compute(batch.data, batch.timestamps_ns))
    start_s = (batch.timestamps_ns[:, 0] - sim.epoch_s * 1_000_000_000) / 1e9
    keys = np.asarray(batch.keys)
    assert (scores[(keys == "pump-43") & (start_s >= 65.0)] > 1.0).all()
    assert (scores[(keys == "pump-42") | (start_s + 2.0 < 60.0)] < 1.0).all()


def test_demo_pump_rebuild_reproduces_the_committed_bundle(
    pump_model: LoadedModel, tmp_path: Path
) -> None:
    rebuilt_dir = build_demo_pump_model(tmp_path)
    rebuilt = LoadedModel.load(rebuilt_dir, OrtBackendConfig())
    try:
        committed, fresh = pump_model.manifest.sensor, rebuilt.manifest.sensor
        assert committed is not None and fresh is not None
        assert fresh.feature_names == committed.feature_names
        assert fresh.threshold == committed.threshold
        assert (fresh.fields, fresh.window, fresh.features) == (
            committed.fields,
            committed.window,
            committed.features,
        )
        assert fresh.feature_mean == pytest.approx(committed.feature_mean, rel=1e-9)
        assert fresh.feature_std == pytest.approx(committed.feature_std, rel=1e-9)
        assert rebuilt.manifest.provenance["model"] == pytest.approx(
            pump_model.manifest.provenance["model"], rel=1e-6
        )
        _, features = heldout_windows(seed=31, seconds=120.0)
        _, faulty, _ = fault_windows(DEMO_FAULT, seed=31)
        x = np.concatenate([features, faulty])
        np.testing.assert_allclose(
            runtime_scorer(rebuilt)(x), runtime_scorer(pump_model)(x), rtol=1e-4, atol=1e-5
        )
    finally:
        rebuilt.close()
