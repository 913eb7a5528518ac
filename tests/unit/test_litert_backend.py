"""LiteRT backend on tiny real .tflite files (tools.tflite_builders): config, delegates and their
fallback, bad model files, quantized I/O through LoadedModel (both backends), dynamic shapes,
multi-input/output order, signature runners, the tflite_runtime fallback."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import subprocess
import sys
import textwrap
import types
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from pydantic import ValidationError

from runtime.backends.base import BACKENDS, TensorInfo
from runtime.backends.litert import LiteRtBackend, LiteRtBackendConfig, litert_runtime
from runtime.backends.onnxruntime import OrtBackendConfig
from runtime.config.base import PluginConfig
from runtime.config.loader import ConfigErrors, load_config
from runtime.errors import ConfigError, ModelError
from runtime.model import LoadedModel
from tools import tflite_builders as tb
from tools.bundle import write_bundle
from tools.model_wheels import WheelFile, WheelFileError, cached, fetch

W_FLOAT = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.5, 1.0]], np.float32)
B_FLOAT = np.array([0.1, -0.2, 0.0], np.float32)

# int8 FULLY_CONNECTED, worked by hand (see test_int8_model_quantizes_inputs_and_dequantizes...)
W_Q = np.array([[1, 2, 3, 4], [-4, -3, -2, -1]], np.int8)
B_Q = np.array([9, -7], np.int32)  # bias scale 0.5 * 0.25 = 0.125: reals 1.125, -0.875
IN_Q = (0.5, -1)
W_SCALE = 0.25
OUT_Q = (0.5, 3)


def model_file(tmp_path: Path, data: bytes, name: str = "model.tflite") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def backend(path: Path, **config: Any) -> LiteRtBackend:
    return LiteRtBackend.from_config(LiteRtBackendConfig(**config), path)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def int8_fc() -> bytes:
    return tb.int8_fully_connected(
        W_Q, B_Q, input_shape=[1, 4], input_quant=IN_Q, weight_scale=W_SCALE, output_quant=OUT_Q
    )


def bundle(
    tmp_path: Path,
    data: bytes,
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    *,
    backend_type: str = "litert",
    file_name: str = "model.tflite",
) -> Path:
    fields = {"backend": backend_type, "inputs": inputs, "outputs": outputs}
    return write_bundle(tmp_path / "models", "m", "1", data, fields, file_name=file_name)


# --------------------------------------------------------------------------- config


def test_registered_under_litert() -> None:
    assert BACKENDS.get("litert") is LiteRtBackend


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"num_threads": 0}, "num_threads"),
        ({"xnnpack": "maybe"}, "xnnpack"),
        ({"signature": ""}, "signature"),
        ({"delegates": [{"library": ""}]}, "library"),
        ({"delegates": [{"path": "/usr/lib/libedgetpu.so.1"}]}, "path"),
        ({"delegates": [{"library": "x.so", "options": {"device": [1]}}]}, "device"),
        ({"threads": 2}, "threads"),
    ],
)
def test_bad_config_is_rejected(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError) as info:
        LiteRtBackendConfig(**fields)
    assert problem in str(info.value)


def test_device_config_selects_litert_by_type(tmp_path: Path) -> None:
    text = """\
        device: {id: gw-1}
        models:
          m:
            bundle: bundles/m
            backend:
              type: litert
              num_threads: 2
              delegates: [{library: /usr/lib/libedgetpu.so.1, options: {device: usb}}]
          bad:
            bundle: bundles/bad
            backend: {type: litert, num_threads: 0}
        """
    path = tmp_path / "device.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_config(path, {})
    assert any("models.bad.backend" in p and "num_threads" in p for p in info.value.problems)
    assert not any("models.m." in p for p in info.value.problems)


# --------------------------------------------------------------------------- float, XNNPACK


def test_float_model_runs_and_reports_its_tensors(tmp_path: Path) -> None:
    b = backend(model_file(tmp_path, tb.float_classifier(W_FLOAT, B_FLOAT)))
    assert b.inputs == [TensorInfo("x", (1, 4), "float32")]
    assert b.outputs == [TensorInfo("probs", (1, 3), "float32")]
    x = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    (probs,) = b.run({"x": x})
    np.testing.assert_allclose(probs, softmax(x @ W_FLOAT.T + B_FLOAT), rtol=1e-5)


@pytest.mark.parametrize(
    ("xnnpack", "threads", "partitions", "active"),
    [
        (True, 1, [{"delegate": "XNNPACK", "ops": 2}], ["XNNPACK"]),
        (False, 2, [], ["CPU"]),
    ],
)
def test_details_report_threads_and_partitions(
    tmp_path: Path, xnnpack: bool, threads: int, partitions: list[object], active: list[str]
) -> None:
    b = backend(
        model_file(tmp_path, tb.float_classifier(W_FLOAT, B_FLOAT)),
        xnnpack=xnnpack,
        num_threads=threads,
    )
    details = b.details()
    assert details["runtime"] == f"ai-edge-litert {_litert_version()}"
    assert details["threads"] == threads
    assert details["xnnpack"] is xnnpack
    assert details["ops"] == 2
    assert details["partitions"] == partitions
    assert details["ops_on_cpu"] == (0 if xnnpack else 2)
    assert details["fallback"] is None
    assert b.active_providers == active
    assert b.requested_providers == (["XNNPACK"] if xnnpack else ["CPU"])


def test_partitions_leave_ops_xnnpack_cannot_take_on_the_cpu(tmp_path: Path) -> None:
    """XNNPACK takes the float ADD, not the DEQUANTIZE of a float16 input nor the CAST back."""
    b = backend(model_file(tmp_path, tb.float16_double()))
    details = b.details()
    assert details["ops"] == 3
    assert details["partitions"] == [{"delegate": "XNNPACK", "ops": 1}]
    assert (details["ops_delegated"], details["ops_on_cpu"]) == (1, 2)
    assert b.active_providers == ["XNNPACK", "CPU"]


def _litert_version() -> str:
    from importlib.metadata import version

    return version("ai-edge-litert")


# --------------------------------------------------------------------------- delegates

FAKE_DELEGATE_C = r"""
#include <stdio.h>
#include <stddef.h>
void* tflite_plugin_create_delegate(char** keys, char** values, size_t n,
                                    void (*report)(const char*)) {
  char msg[256];
  snprintf(msg, sizeof msg, "no Edge TPU device found (%s=%s)", n ? keys[0] : "-",
           n ? values[0] : "-");
  report(msg);
  return NULL;
}
void tflite_plugin_destroy_delegate(void* delegate) { (void)delegate; }
"""


@pytest.fixture(scope="module")
def failing_delegate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real external-delegate library whose create call fails the way libedgetpu does when
    no device is attached: it reports an error and returns NULL."""
    gcc = shutil.which("gcc")
    assert gcc is not None, "gcc is needed to build the test delegate library"
    root = tmp_path_factory.mktemp("delegate")
    (root / "fake.c").write_text(FAKE_DELEGATE_C)
    lib = root / "libfake_delegate.so"
    subprocess.run(
        [gcc, "-shared", "-fPIC", "-o", str(lib), str(root / "fake.c")],
        check=True,
        capture_output=True,
    )
    return lib


def _fallback_case(tmp_path: Path, library: str, caplog: pytest.LogCaptureFixture) -> Any:
    path = model_file(tmp_path, tb.float_classifier(W_FLOAT, B_FLOAT))
    delegates = [{"library": library, "options": {"device": "usb"}}]
    with caplog.at_level(logging.WARNING, logger="runtime.backends.litert"):
        b = backend(path, delegates=delegates)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "model.tflite" in message
    assert library in message
    details = b.details()
    assert details["delegates_requested"] == [library]
    assert details["delegates_active"] == []
    assert details["fallback"] is not None and library in str(details["fallback"])
    assert b.requested_providers == [library, "XNNPACK"]
    assert b.active_providers == ["XNNPACK"]
    (probs,) = b.run({"x": np.ones((1, 4), np.float32)})  # still runs, on the CPU
    assert probs.shape == (1, 3)
    return message, details


def test_missing_delegate_library_falls_back_to_cpu(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    library = str(tmp_path / "libedgetpu.so.1")
    message, details = _fallback_case(tmp_path, library, caplog)
    assert "cannot open shared object file" in message
    assert "running on the CPU with XNNPACK" in str(details["fallback"])


def test_library_that_is_no_delegate_falls_back_to_cpu(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    message, _ = _fallback_case(tmp_path, "libm.so.6", caplog)
    assert "not a TFLite external delegate" in message


def test_delegate_that_fails_to_start_falls_back_with_its_own_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, failing_delegate: Path
) -> None:
    message, details = _fallback_case(tmp_path, str(failing_delegate), caplog)
    assert "no Edge TPU device found (device=usb)" in message  # options reached the library
    assert "no Edge TPU device found" in str(details["fallback"])


# --------------------------------------------------------------------------- bad model files


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: tb.float_classifier(W_FLOAT, B_FLOAT)[:300], "not a valid Flatbuffer"),
        (lambda: b"\x00" * 64, "not a valid Flatbuffer"),
        (
            lambda: tb.custom_op_model("EdgewatchMissingOp"),
            "unresolved custom op: EdgewatchMissingOp",
        ),
    ],
    ids=["truncated", "garbage", "missing-custom-op"],
)
def test_bad_model_is_a_model_error_naming_it(tmp_path: Path, make: Any, expected: str) -> None:
    path = model_file(tmp_path, make(), "broken.tflite")
    with pytest.raises(ModelError) as info:
        backend(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_missing_model_file_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"absent\.tflite"):
        backend(tmp_path / "absent.tflite")


def test_run_errors_are_model_errors(tmp_path: Path) -> None:
    b = backend(model_file(tmp_path, tb.float_classifier(W_FLOAT, B_FLOAT)))
    with pytest.raises(ModelError, match=r"no value for input 'x'; the model takes \['x'\]"):
        b.run({"y": np.ones((1, 4), np.float32)})
    with pytest.raises(ModelError, match="INT8"):
        b.run({"x": np.ones((1, 4), np.int8)})
    with pytest.raises(ModelError, match=r"input 'x' takes shape \[1, 4\], got \[2, 4\]"):
        b.run({"x": np.ones((2, 4), np.float32)})
    b.close()
    with pytest.raises(ModelError, match="after close"):
        b.run({"x": np.ones((1, 4), np.float32)})


# --------------------------------------------------------------------------- shapes, I/O order


def test_dynamic_batch_resizes_the_input(tmp_path: Path) -> None:
    b = backend(model_file(tmp_path, tb.float_classifier(W_FLOAT, B_FLOAT, dynamic_batch=True)))
    assert b.inputs[0].shape == (None, 4)
    rng = np.random.default_rng(0)
    for n in (1, 3, 3, 1, 5):
        x = rng.normal(size=(n, 4)).astype(np.float32)
        (probs,) = b.run({"x": x})
        np.testing.assert_allclose(probs, softmax(x @ W_FLOAT.T + B_FLOAT), rtol=1e-5)
    with pytest.raises(ModelError, match=r"takes shape \[None, 4\], got \[2, 5\]"):
        b.run({"x": np.ones((2, 5), np.float32)})


def test_multi_input_multi_output_in_model_order(tmp_path: Path) -> None:
    b = backend(model_file(tmp_path, tb.add_mul()))
    assert [t.name for t in b.inputs] == ["b", "a"]
    assert [t.name for t in b.outputs] == ["prod", "sum"]
    a = np.array([[1.0, 2.0, 3.0]], np.float32)
    c = np.array([[4.0, 5.0, -6.0]], np.float32)
    prod, total = b.run({"a": a, "b": c})
    np.testing.assert_array_equal(prod, a * c)
    np.testing.assert_array_equal(total, a + c)


@pytest.mark.parametrize("signature", [None, "combine"])
def test_signature_runner_uses_the_signature_names(tmp_path: Path, signature: str | None) -> None:
    """The model's only signature is used by default; its names are sorted by the runtime."""
    b = backend(model_file(tmp_path, tb.add_mul(signature="combine")), signature=signature)
    assert [t.name for t in b.inputs] == ["left", "right"]
    assert [t.name for t in b.outputs] == ["product", "total"]
    assert b.details()["signature"] == "combine"
    a = np.array([[1.0, 2.0, 3.0]], np.float32)
    c = np.array([[4.0, 5.0, -6.0]], np.float32)
    product, total = b.run({"left": a, "right": c})
    np.testing.assert_array_equal(product, a * c)
    np.testing.assert_array_equal(total, a + c)


def test_signature_runner_with_dynamic_batch(tmp_path: Path) -> None:
    data = tb.float_classifier(W_FLOAT, B_FLOAT, dynamic_batch=True, signature="serving_default")
    b = backend(model_file(tmp_path, data))
    for n in (2, 1, 4):
        x = np.full((n, 4), 0.5, np.float32)
        (probs,) = b.run({"x": x})
        np.testing.assert_allclose(probs, softmax(x @ W_FLOAT.T + B_FLOAT), rtol=1e-5)


def test_unknown_signature_is_a_config_error(tmp_path: Path) -> None:
    path = model_file(tmp_path, tb.add_mul(signature="combine"))
    with pytest.raises(ConfigError, match=r"'serving'.*signatures \['combine'\]"):
        backend(path, signature="serving")
    with pytest.raises(ConfigError, match="no signatures"):
        backend(model_file(tmp_path, tb.add_mul(), "plain.tflite"), signature="combine")


# --------------------------------------------------------------------------- quantized I/O


def int8_fc_onnx() -> bytes:
    """The same int8 layer as :func:`int8_fc` in ONNX: DequantizeLinear → MatMul + bias →
    QuantizeLinear. onnxruntime doesn't report the I/O quantization; the manifest gives it."""
    inits = [
        numpy_helper.from_array(np.array(IN_Q[0], np.float32), "x_scale"),
        numpy_helper.from_array(np.array(IN_Q[1], np.int8), "x_zp"),
        numpy_helper.from_array((W_Q.astype(np.float32) * W_SCALE).T.copy(), "w"),
        numpy_helper.from_array(B_Q.astype(np.float32) * IN_Q[0] * W_SCALE, "bias"),
        numpy_helper.from_array(np.array(OUT_Q[0], np.float32), "y_scale"),
        numpy_helper.from_array(np.array(OUT_Q[1], np.int8), "y_zp"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "x_scale", "x_zp"], ["xf"]),
        helper.make_node("MatMul", ["xf", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "bias"], ["yf"]),
        helper.make_node("QuantizeLinear", ["yf", "y_scale", "y_zp"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "int8_fc",
        [helper.make_tensor_value_info("x", TensorProto.INT8, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.INT8, [1, 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _q(scale: float, zero_point: int) -> dict[str, object]:
    return {"scale": scale, "zero_point": zero_point}


@pytest.mark.parametrize(
    ("backend_type", "make", "file_name", "manifest_quant"),
    [
        ("litert", int8_fc, "model.tflite", False),  # from the model
        ("litert", int8_fc, "model.tflite", True),  # both, agreeing
        ("onnxruntime", int8_fc_onnx, "model.onnx", True),  # from the manifest
    ],
)
def test_int8_model_quantizes_inputs_and_dequantizes_outputs(
    tmp_path: Path, backend_type: str, make: Any, file_name: str, manifest_quant: bool
) -> None:
    """By hand: x = [1.0, -2.5, 3.0, 0.5] → q = x / 0.5 - 1 = [1, -6, 5, 0]; with
    q - zp = [2, -5, 6, 1], acc = (q - zp)·W + bias = [23, -13]; y_q = round(acc * 0.5 * 0.25
    / 0.5) + 3 = round([5.75, -3.25]) + 3 = [9, 0]; y = 0.5 * (y_q - 3) = [3.0, -1.5]."""
    inputs: list[dict[str, Any]] = [{"name": "x", "shape": [1, 4], "dtype": "int8"}]
    outputs: list[dict[str, Any]] = [{"name": "y", "shape": [1, 2], "dtype": "int8"}]
    if manifest_quant:
        inputs[0]["quantization"] = _q(*IN_Q)
        outputs[0]["quantization"] = _q(*OUT_Q)
    path = bundle(tmp_path, make(), inputs, outputs, backend_type=backend_type, file_name=file_name)
    config: PluginConfig = LiteRtBackendConfig() if backend_type == "litert" else OrtBackendConfig()
    model = LoadedModel.load(path, config)
    try:
        q_in, q_out = model.manifest.inputs[0].quantization, model.manifest.outputs[0].quantization
        assert q_in is not None and (q_in.scale, q_in.zero_point) == IN_Q
        assert q_out is not None and (q_out.scale, q_out.zero_point) == OUT_Q
        x = np.array([[1.0, -2.5, 3.0, 0.5]], np.float32)
        raw = model.backend.run({"x": np.array([[1, -6, 5, 0]], np.int8)})
        np.testing.assert_array_equal(raw[0], np.array([[9, 0]], np.int8))
        (y,) = model.infer(x)
        assert y.dtype == np.float32
        np.testing.assert_array_equal(y, np.array([[3.0, -1.5]], np.float32))
    finally:
        model.close()


def test_int8_image_input_is_quantized_with_the_models_parameters(tmp_path: Path) -> None:
    """NHWC int8 image, model quantization (1/255, -128): pixel p → q = p - 128. FC weights
    (scale 1/4): row 0 sums all 12 values, row 1 the R values; output (1/64, -128).
    Solid BGR (50, 100, 200) → RGB (200, 100, 50): y0 = 4 * 350 / 255 / 4 = 1.3725 → 88/64 =
    1.375; y1 = 4 * 200 / 255 / 4 = 0.7843 → 50/64 = 0.78125."""
    w = np.zeros((2, 12), np.int8)
    w[0, :] = 1
    w[1, 0::3] = 1
    data = tb.int8_fully_connected(
        w,
        np.zeros(2, np.int32),
        input_shape=[1, 2, 2, 3],
        input_quant=(1 / 255, -128),
        weight_scale=0.25,
        output_quant=(1 / 64, -128),
    )
    inputs = [{"name": "x", "shape": [1, 2, 2, 3], "layout": "NHWC", "dtype": "int8"}]
    outputs = [{"name": "y", "shape": [1, 2], "dtype": "int8"}]
    model = LoadedModel.load(bundle(tmp_path, data, inputs, outputs), LiteRtBackendConfig())
    try:
        assert model.preprocessor is not None
        image = np.empty((8, 8, 3), np.uint8)
        image[:] = (50, 100, 200)
        tensor, _ = model.preprocessor(image)
        assert tensor.dtype == np.int8
        np.testing.assert_array_equal(tensor[0, 0, 0], [200 - 128, 100 - 128, 50 - 128])
        (y,) = model.infer(tensor)
        np.testing.assert_array_equal(y, np.array([[1.375, 0.78125]], np.float32))
    finally:
        model.close()


@pytest.mark.parametrize(
    ("where", "quant", "expected"),
    [
        (
            "inputs",
            _q(0.25, -1),
            "input 'x': manifest says scale=0.25, zero_point=-1 but the model has scale=0.5, zero_point=-1",
        ),
        (
            "outputs",
            _q(0.5, 4),
            "output 'y': manifest says scale=0.5, zero_point=4 but the model has scale=0.5, zero_point=3",
        ),
    ],
)
def test_manifest_disagreeing_with_model_quantization_is_a_model_error(
    tmp_path: Path, where: str, quant: dict[str, object], expected: str
) -> None:
    tensors: dict[str, list[dict[str, Any]]] = {
        "inputs": [{"name": "x", "shape": [1, 4], "dtype": "int8"}],
        "outputs": [{"name": "y", "shape": [1, 2], "dtype": "int8"}],
    }
    tensors[where][0]["quantization"] = quant
    path = bundle(tmp_path, int8_fc(), tensors["inputs"], tensors["outputs"])
    with pytest.raises(ModelError) as info:
        LoadedModel.load(path, LiteRtBackendConfig())
    assert "model.tflite" in str(info.value)
    assert expected in str(info.value)


def test_float_rounding_of_scales_is_not_a_disagreement(tmp_path: Path) -> None:
    """The manifest's 1/255 (float64) and the model's float32(1/255) are the same scale."""
    data = tb.int8_fully_connected(
        W_Q,
        B_Q,
        input_shape=[1, 4],
        input_quant=(1 / 255, 0),
        weight_scale=W_SCALE,
        output_quant=OUT_Q,
    )
    inputs = [{"name": "x", "shape": [1, 4], "dtype": "int8", "quantization": _q(1 / 255, 0)}]
    outputs = [{"name": "y", "shape": [1, 2], "dtype": "int8"}]
    LoadedModel.load(bundle(tmp_path, data, inputs, outputs), LiteRtBackendConfig()).close()


def test_int8_input_without_any_quantization_is_a_model_error(tmp_path: Path) -> None:
    b = tb.TfliteBuilder()
    x = b.tensor("x", [1, 4], "int8")
    y = b.tensor("y", [1, 4])
    b.op("CAST", [x], [y])
    inputs = [{"name": "x", "shape": [1, 4], "dtype": "int8"}]
    outputs = [{"name": "y", "shape": [1, 4], "dtype": "float32"}]
    with pytest.raises(
        ModelError, match="input 'x' is int8 but neither the manifest nor the model"
    ):
        LoadedModel.load(
            bundle(tmp_path, b.build([x], [y]), inputs, outputs), LiteRtBackendConfig()
        )


def test_float16_model_takes_float32_and_gives_float32(tmp_path: Path) -> None:
    inputs = [{"name": "x", "shape": [1, 3], "dtype": "float16"}]
    outputs = [{"name": "y", "shape": [1, 3], "dtype": "float16"}]
    model = LoadedModel.load(
        bundle(tmp_path, tb.float16_double(), inputs, outputs), LiteRtBackendConfig()
    )
    try:
        (y,) = model.infer(np.array([[1.5, -2.25, 1000.0]], np.float32))
        assert y.dtype == np.float32
        np.testing.assert_array_equal(y, np.array([[3.0, -4.5, 2000.0]], np.float32))
    finally:
        model.close()


# --------------------------------------------------------------------------- runtime fallback


@pytest.fixture
def fresh_runtime() -> Any:
    litert_runtime.cache_clear()
    yield
    litert_runtime.cache_clear()


def test_tflite_runtime_is_used_when_ai_edge_litert_is_absent(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fresh_runtime: None,
) -> None:
    """A stand-in tflite_runtime package (whose interpreter is LiteRT's own module, since the
    real tflite_runtime has no wheel for numpy 2) shows the fallback is taken and reported."""
    import ai_edge_litert.interpreter as litert_interpreter

    fake = types.ModuleType("tflite_runtime")
    fake.__version__ = "2.14.0"  # type: ignore[attr-defined]
    fake.interpreter = litert_interpreter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", fake)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", litert_interpreter)
    with caplog.at_level(logging.WARNING, logger="runtime.backends.litert"):
        b = backend(model_file(tmp_path, tb.float_classifier(W_FLOAT, B_FLOAT)))
    assert b.details()["runtime"] == "tflite_runtime 2.14.0 (ai-edge-litert not installed)"
    assert "ai-edge-litert is not installed" in caplog.text
    (probs,) = b.run({"x": np.ones((1, 4), np.float32)})
    assert probs.shape == (1, 3)


def test_no_tflite_runtime_at_all_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_runtime: None
) -> None:
    for name in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ConfigError, match="needs ai-edge-litert"):
        backend(model_file(tmp_path, tb.float_classifier(W_FLOAT, B_FLOAT)))


# --------------------------------------------------------------------------- wheel file cache


def test_missing_wheel_file_names_the_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(WheelFileError, match=r"run: python -m tools\.model_wheels"):
        cached("mediapipe-face-detection-short-range", cache=tmp_path)


def test_fetch_takes_the_file_from_a_wheel_and_checks_its_sha256(tmp_path: Path) -> None:
    """The wheel is already in the cache's wheels/ folder, so nothing is downloaded."""
    data = tb.float_classifier(W_FLOAT, B_FLOAT)
    (tmp_path / "wheels").mkdir()
    with zipfile.ZipFile(tmp_path / "wheels" / "demo_pkg-1.0-py3-none-any.whl", "w") as whl:
        whl.writestr("demo_pkg/models/m.tflite", data)
    spec = WheelFile(
        key="demo",
        package="demo-pkg",
        version="1.0",
        member="demo_pkg/models/m.tflite",
        sha256=hashlib.sha256(data).hexdigest(),
        license="test",
    )
    path = fetch(spec, tmp_path)
    assert path == tmp_path / "demo-pkg" / "1.0" / "m.tflite"
    assert path.read_bytes() == data
    bad = dataclasses.replace(spec, sha256="0" * 64)
    path.unlink()
    with pytest.raises(WheelFileError, match=r"has sha256 [0-9a-f]{64}, pinned 0{64}"):
        fetch(bad, tmp_path)
    assert not path.exists()
