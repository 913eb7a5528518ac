"""``edgewatch models inspect`` and ``edgewatch bench`` on the committed demo bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnxruntime.quantization import QuantType, quantize_dynamic

from runtime.cli import main
from tools.bundle import write_bundle

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CLASSIFIER = REPO / "models" / "demo-hazard-classifier" / "1.0.0"
PUMP = REPO / "models" / "demo-pump-anomaly" / "1.0.0"
CPU = "CPUExecutionProvider"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def manifest_of(bundle: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((bundle / "manifest.json").read_text())
    return manifest


def bench_rows(out: str) -> list[dict[str, str]]:
    header, *lines = out.strip().splitlines()
    columns = header.split("  ")
    names = [c.strip() for c in columns if c.strip()]
    rows = []
    for line in lines:
        cells = [c.strip() for c in line.split("  ") if c.strip()]
        assert len(cells) == len(names), f"{line!r} does not fit {names}"
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


@pytest.mark.parametrize("bundle", [CLASSIFIER, PUMP], ids=["classifier", "pump"])
def test_inspect_json_agrees_with_the_manifest(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "models", "inspect", str(bundle), "--json")
    assert code == 0, err
    report = json.loads(out)
    manifest = manifest_of(bundle)
    summary = report["manifest"]
    assert (summary["name"], summary["version"]) == (manifest["name"], manifest["version"])
    assert summary["sha256"] == {
        "manifest": manifest["sha256"],
        "actual": manifest["sha256"],
        "ok": True,
    }
    assert summary["postprocess"] == manifest["postprocess"]
    assert summary["labels"] == manifest["labels"]
    for kind in ("inputs", "outputs"):
        assert [t["name"] for t in report[kind]] == [t["name"] for t in manifest[kind]]
        for tensor, spec in zip(report[kind], manifest[kind], strict=True):
            assert tensor["dtype"] == spec["dtype"]
            assert tensor["quantization"] is None
            assert tensor["manifest"] == {
                "shape": spec["shape"],
                "dtype": spec["dtype"],
                "quantization": spec["quantization"],
            }
            assert len(tensor["shape"]) == len(spec["shape"])
            for real, declared in zip(tensor["shape"], spec["shape"], strict=True):
                assert declared is None or real == declared
    details = report["details"]
    assert details["providers"]["active"] == [CPU]
    assert report["ops"] == sum(details["nodes"].values()) > 0


def test_inspect_summarizes_the_sensor_section(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run_cli(capsys, "models", "inspect", str(PUMP), "--json")
    sensor = manifest_of(PUMP)["sensor"]
    assert json.loads(out)["manifest"]["sensor"] == {
        "fields": sensor["fields"],
        "window": sensor["window"],
        "features": len(sensor["feature_names"]),
        "score_output": sensor["score_output"],
        "threshold": sensor["threshold"],
    }


def test_inspect_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "models", "inspect", str(CLASSIFIER))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("demo-hazard-classifier 1.0.0  (")
    assert lines[1].split() == ["sha256", manifest_of(CLASSIFIER)["sha256"], "ok"]
    assert any(line.split()[:3] == ["image", "float32", "[1,"] for line in lines)
    assert "ops: 8" in lines
    assert f"    active: {CPU}" in lines


def test_inspect_bare_model_file_picks_the_backend_by_suffix(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run_cli(capsys, "models", "inspect", str(PUMP / "model.onnx"), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["manifest"] is None
    assert report["backend"] == "onnxruntime"
    assert [t["name"] for t in report["outputs"]] == ["score", "t2", "q"]
    assert report["inputs"][0]["shape"][1] == 18


def test_inspect_corrupted_copy_exits_1_with_the_sha256_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = Path(shutil.copytree(CLASSIFIER, tmp_path / "copy"))
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the weights: still loads, no longer the shipped model
    (copy / "model.onnx").write_bytes(bytes(data))
    code, out, err = run_cli(capsys, "models", "inspect", str(copy), "--json")
    assert code == 1
    assert "does not match the manifest" in err and "modified or corrupted" in err
    assert json.loads(out)["manifest"]["sha256"]["ok"] is False


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "absent.onnx", "no such file or bundle directory"),
        (
            lambda d: _write(d / "cut.onnx", (CLASSIFIER / "model.onnx").read_bytes()[:50]),
            "cannot load",
        ),
        (lambda d: _write(d / "model.bin", b"\0" * 8), "unknown model file type '.bin'"),
        (lambda d: _write(d / "manifest.json", b"{"), "cannot read manifest"),
    ],
    ids=["missing", "truncated", "suffix", "bad-manifest"],
)
def test_inspect_bad_input_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, message: str
) -> None:
    code, out, err = run_cli(capsys, "models", "inspect", str(make(tmp_path)))
    assert code == 1
    assert out == ""
    assert message in err


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_bench_threads_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(
        capsys, "bench", str(CLASSIFIER), "--runs", "20", "--warmup", "2", "--threads", "1,2"
    )
    assert code == 0, err
    rows = bench_rows(out)
    assert [(r["model"], r["backend"], r["precision"], r["threads"]) for r in rows] == [
        ("demo-hazard-classifier 1.0.0", "onnxruntime", "fp32", "1"),
        ("demo-hazard-classifier 1.0.0", "onnxruntime", "fp32", "2"),
    ]
    for row in rows:
        assert float(row["p50 ms"]) > 0
        assert float(row["p99 ms"]) >= float(row["p50 ms"])
        assert float(row["per s"]) > 0
        assert row["runs"] == "60"
        assert row["on"] == "CPU"


def test_bench_precision_column_for_fp32_and_int8_bundles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    quantized = tmp_path / "int8.onnx"
    quantize_dynamic(CLASSIFIER / "model.onnx", quantized, weight_type=QuantType.QInt8)
    fields = {
        k: v
        for k, v in manifest_of(CLASSIFIER).items()
        if k not in ("name", "version", "file", "sha256")
    }
    int8 = write_bundle(
        tmp_path, "demo-hazard-classifier", "1.0.0-int8", quantized.read_bytes(), fields
    )
    code, out, err = run_cli(capsys, "bench", str(CLASSIFIER), str(int8), "--runs", "5")
    assert code == 0, err
    assert [(r["model"], r["precision"]) for r in bench_rows(out)] == [
        ("demo-hazard-classifier 1.0.0", "fp32"),
        ("demo-hazard-classifier 1.0.0-int8", "int8"),
    ]


def test_bench_dynamic_dimensions(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "bench", str(PUMP), "--runs", "5", "--shape", "features=32x18")
    assert code == 0, err
    assert [r["model"] for r in bench_rows(out)] == ["demo-pump-anomaly 1.0.0"]
    code, _, err = run_cli(capsys, "bench", str(PUMP), "--runs", "5", "--shape", "feature=32x18")
    assert code == 1
    assert "the model's inputs are ['features']" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backends", "onnx-rt"], "unknown backend 'onnx-rt'; expected one of:"),
        (
            ["--backend-config", '{"onnxruntime": {"providers": ["CUDAProvider"]}}'],
            "unknown onnxruntime provider(s) CUDAProvider; valid names:",
        ),
    ],
)
def test_bench_bad_backend_choices_exit_1(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run_cli(capsys, "bench", str(CLASSIFIER), "--runs", "2", *argv)
    assert code == 1
    assert out == ""
    assert message in err


def test_bench_refuses_a_bundle_whose_sha256_does_not_match(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = Path(shutil.copytree(CLASSIFIER, tmp_path / "copy"))
    manifest = manifest_of(copy)
    manifest["sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli(capsys, "bench", str(copy), "--runs", "2")
    assert code == 1
    assert "does not match the manifest" in err


# ----------------------------------------------------------------------- LiteRT (.tflite)

INT8_IN = (0.5, -3)
INT8_OUT = (0.1, 2)


@pytest.fixture
def tflite_models(tmp_path: Path) -> tuple[Path, Path]:
    """A float classifier file and a full-int8 bundle (manifest with quantization)."""
    from tools.tflite_builders import float_classifier, int8_fully_connected

    fp32 = _write(
        tmp_path / "float.tflite",
        float_classifier(np.eye(3, 4), np.zeros(3), dynamic_batch=True),
    )
    int8 = int8_fully_connected(
        np.ones((3, 4), np.int8),
        np.zeros(3, np.int32),
        input_shape=[1, 4],
        input_quant=INT8_IN,
        weight_scale=0.25,
        output_quant=INT8_OUT,
    )
    manifest = {
        "backend": "litert",
        "inputs": [
            {
                "name": "x",
                "shape": [1, 4],
                "dtype": "int8",
                "quantization": {"scale": INT8_IN[0], "zero_point": INT8_IN[1]},
            }
        ],
        "outputs": [
            {
                "name": "y",
                "shape": [1, 3],
                "dtype": "int8",
                "quantization": {"scale": INT8_OUT[0], "zero_point": INT8_OUT[1]},
            }
        ],
    }
    bundle = write_bundle(tmp_path, "tiny-int8", "1.0.0", int8, manifest, file_name="model.tflite")
    return fp32, bundle


def test_inspect_litert_bundle_shows_model_and_manifest_quantization(
    tflite_models: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, bundle = tflite_models
    code, out, err = run_cli(capsys, "models", "inspect", str(bundle), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["backend"] == "litert"
    assert report["manifest"]["sha256"]["ok"] is True
    (x,) = report["inputs"]
    (y,) = report["outputs"]
    assert x["quantization"] == {"scale": INT8_IN[0], "zero_point": INT8_IN[1]}
    assert x["manifest"]["quantization"] == {"scale": INT8_IN[0], "zero_point": INT8_IN[1]}
    # the model stores scales as float32
    assert y["quantization"] == pytest.approx({"scale": INT8_OUT[0], "zero_point": INT8_OUT[1]})
    assert report["ops"] == report["details"]["ops"] == 1
    assert report["details"]["threads"] == 1
    code, out, _ = run_cli(capsys, "models", "inspect", str(bundle))
    assert "scale=0.5 zp=-3" in out
    assert "partitions: delegate=XNNPACK ops=1" in out


def test_bench_litert_float_and_int8_at_two_thread_counts(
    tflite_models: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    fp32, int8 = tflite_models
    code, out, err = run_cli(
        capsys, "bench", str(fp32), str(int8), "--threads", "1,2", "--runs", "10"
    )
    assert code == 0, err
    rows = bench_rows(out)
    assert [(r["model"], r["backend"], r["precision"], r["threads"]) for r in rows] == [
        ("float.tflite", "litert", "fp32", "1"),
        ("float.tflite", "litert", "fp32", "2"),
        ("tiny-int8 1.0.0", "litert", "int8", "1"),
        ("tiny-int8 1.0.0", "litert", "int8", "2"),
    ]
    assert all(float(r["p50 ms"]) > 0 and float(r["per s"]) > 0 for r in rows)


def test_bench_both_backends_runs_each_file_on_the_one_that_loads_it(
    tflite_models: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    fp32, _ = tflite_models
    code, out, err = run_cli(
        capsys,
        "bench",
        str(CLASSIFIER),
        str(fp32),
        "--backends",
        "onnxruntime,litert",
        "--runs",
        "5",
    )
    assert code == 0, err
    assert [(r["model"], r["backend"]) for r in bench_rows(out)] == [
        ("demo-hazard-classifier 1.0.0", "onnxruntime"),
        ("float.tflite", "litert"),
    ]
    assert "demo-hazard-classifier 1.0.0: backend litert cannot load model.onnx" in err
    assert "float.tflite: backend onnxruntime cannot load float.tflite" in err
