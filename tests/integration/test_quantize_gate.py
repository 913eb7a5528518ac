"""``edgewatch quantize`` / ``evaluate`` end to end with real onnxruntime quantization: the gate
accepts a good int8 model (and records itself in the manifest), rejects one that lost accuracy
(naming the layers that diverge) or speed, and bad input gets a message and exit 2 — and a
rejected or failed run never leaves a bundle behind.

Labels come from tools.scenes (scenes:seed=S,n=N, held-out seeds; the demo models train on 0).
The accuracy gate is tested with ``--min-speedup 0``: the 64-px demo classifier is too small for
int8 to pay off on x86, so its speed is gated separately with an unreachable minimum."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from runtime.cli import main
from tools.bundle import write_bundle

pytestmark = pytest.mark.integration

MODELS = Path(__file__).resolve().parents[2] / "models"
GOOD = MODELS / "demo-hazard-classifier-tflite" / "1.0.0-onnx"  # well-conditioned weights
BAD = MODELS / "demo-hazard-classifier" / "1.0.0"  # first-layer weights up to ~600
FAST = ["--calibration", "scenes:seed=3,n=8", "--eval", "scenes:seed=7,n=12", "--latency-runs", "6"]


def _quantize(bundle: Path, out: Path, *extra: str) -> int:
    return main(["quantize", str(bundle), "--out", str(out), *FAST, *extra])


def test_gate_accepts_good_quantization(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, report = tmp_path / "models", tmp_path / "report"
    code = _quantize(GOOD, out, "--min-speedup", "0", "--report", str(report))
    assert code == 0, capsys.readouterr()
    bundle = out / "demo-hazard-classifier-tflite" / "1.0.0-onnx-int8"
    manifest = json.loads((bundle / "manifest.json").read_text())
    gate = manifest["provenance"]["gate"]
    assert gate["passed"] is True
    assert gate["thresholds"] == {"max_drop_points": 1.0, "min_speedup": 0.0}
    assert gate["drop_points"] <= 1.0 and gate["agreement"] >= 0.95
    assert gate["data"]["n_samples"] == 36 and gate["speedup"] > 0
    quant = manifest["provenance"]["quantization"]
    assert quant["kind"] == "static-qdq" and quant["activations"] == "uint8"
    assert quant["calibration"]["n_samples"] == 24
    model = onnx.load(str(bundle / "model.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    assert main(["models", "verify", str(bundle)]) == 0
    for name in ("report.md", "report.html", "confusion.png", "latency.png"):
        assert (report / name).stat().st_size > 0
    assert "![confusion.png](confusion.png)" in (report / "report.md").read_text()


def test_gate_rejects_accuracy_loss_and_names_layers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "models"
    assert _quantize(BAD, out, "--min-speedup", "0") == 1
    text = capsys.readouterr()
    assert "gate: REJECT" in text.out and "top-1 dropped" in text.out
    worst = text.out.split("diverge most")[1].splitlines()[1]
    assert "(Gemm)" in worst or "(Relu)" in worst  # the Gemm after the ~600-weight layer
    assert "rejected by the gate" in text.err
    assert not out.exists() or not any(out.rglob("*.onnx"))


def test_gate_rejects_too_little_speedup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "models"
    assert _quantize(GOOD, out, "--min-speedup", "1000") == 1
    assert "speed-up" in capsys.readouterr().out.split("\n")[0]
    assert not out.exists() or not any(out.rglob("*"))


def test_tflite_full_int8_through_the_onnx_twin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fp32 = MODELS / "demo-hazard-classifier-tflite" / "1.0.0-fp32"
    assert _quantize(fp32, tmp_path, "--min-speedup", "0") == 0, capsys.readouterr()
    bundle = tmp_path / "demo-hazard-classifier-tflite" / "1.0.0-fp32-int8"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["backend"] == "litert" and manifest["file"] == "model.tflite"
    assert manifest["inputs"][0]["dtype"] == "int8" and manifest["inputs"][0]["quantization"]
    assert manifest["provenance"]["quantization"]["kind"] == "tflite-full-int8"
    assert manifest["provenance"]["gate"]["drop_points"] <= 1.0
    assert main(["models", "verify", str(bundle)]) == 0


def test_evaluate_compares_two_bundles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    twin = MODELS / "demo-hazard-classifier-tflite" / "1.0.0-onnx-int8"
    args = ["evaluate", str(GOOD), str(twin), "--data", "scenes:seed=7,n=6", "--latency-runs", "4"]
    assert main([*args, "--min-speedup", "0"]) == 0
    out = capsys.readouterr().out
    assert "top-1: float" in out and "agreement:" in out and "latency p50" in out


def _dynamic_hw_bundle(root: Path) -> Path:
    w = numpy_helper.from_array(np.ones((3, 3, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "w"], ["c"]),
            helper.make_node("GlobalAveragePool", ["c"], ["g"]),
            helper.make_node("Flatten", ["g"], ["probs"]),
        ],
        "dyn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    fields = {
        "inputs": [{"name": "image", "shape": [1, 3, "h", "w"]}],
        "outputs": [{"name": "probs", "shape": [1, 3]}],
        "labels": ["normal", "smoke", "fire"],
        "postprocess": {"type": "classify"},
    }
    return write_bundle(root, "dyn", "1.0.0", model.SerializeToString(), fields)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty", "no images"),
        ("unknown-label", "is not one of the model's"),
        ("dynamic", "fixed input size"),
        ("no-calibration", "needs --calibration"),
        ("everything-excluded", "nothing was quantized"),
    ],
)
def test_bad_input_exits_2_without_a_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, message: str
) -> None:
    out, data = tmp_path / "models", tmp_path / "data"
    data.mkdir()
    bundle, args = GOOD, ["--calibration", str(data)]
    if case == "unknown-label":
        import cv2

        (data / "forklift").mkdir()
        cv2.imwrite(str(data / "forklift" / "0.png"), np.zeros((48, 64, 3), np.uint8))
    elif case == "dynamic":
        bundle, args = _dynamic_hw_bundle(tmp_path / "src"), ["--calibration", "scenes:seed=1,n=1"]
    elif case == "no-calibration":
        args = []
    elif case == "everything-excluded":
        args = ["--calibration", "scenes:seed=1,n=1", "--exclude-op-types", "Conv,Gemm"]
    assert main(["quantize", str(bundle), "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
