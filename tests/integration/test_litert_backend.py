"""Models made by TensorFlow's own converter (the tools extra) through LoadedModel + LiteRT:
float32, full int8 (int8 input and output, quantization taken from the model) and float16
weights, all with the converter's ``serving_default`` signature and a dynamic batch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from runtime.backends.litert import LiteRtBackendConfig
from runtime.model import LoadedModel
from tools.bundle import write_bundle

pytestmark = pytest.mark.integration

FEATURES = 8
CLASSES = 3
RNG = np.random.default_rng(7)
W = RNG.normal(size=(FEATURES, CLASSES)).astype(np.float32)
B = RNG.normal(size=CLASSES).astype(np.float32)


def reference(x: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    logits = x @ W + B
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return logits, e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def converted() -> dict[str, bytes]:
    """The same tf.function converted three ways (TensorFlow is imported only here)."""
    import tensorflow as tf

    class Classifier(tf.Module):  # type: ignore[misc]
        @tf.function(input_signature=[tf.TensorSpec([None, FEATURES], tf.float32, name="features")])  # type: ignore[misc]
        def __call__(self, x: Any) -> dict[str, Any]:
            logits = tf.matmul(x, W) + B
            return {"logits": logits, "probs": tf.nn.softmax(logits)}

    module = Classifier()
    function = module.__call__.get_concrete_function()
    calibration = np.random.default_rng(1).normal(size=(200, 1, FEATURES)).astype(np.float32)

    def convert(setup: Callable[[Any], None]) -> bytes:
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function], module)
        setup(converter)
        return bytes(converter.convert())

    def int8(c: Any) -> None:
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = lambda: ([x] for x in calibration)
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        c.inference_input_type = tf.int8
        c.inference_output_type = tf.int8

    def float16(c: Any) -> None:
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.target_spec.supported_types = [tf.float16]

    return {
        "float32": convert(lambda c: None),
        "int8": convert(int8),
        "float16-weights": convert(float16),
    }


# kind → (I/O dtype, tolerance on logits, on probabilities): int8 within a few quantization steps
CASES = {
    "float32": ("float32", 1e-5, 1e-6),
    "int8": ("int8", 0.25, 0.02),
    "float16-weights": ("float32", 5e-3, 1e-3),
}


@pytest.fixture(params=list(CASES))
def loaded(
    request: pytest.FixtureRequest, converted: dict[str, bytes], tmp_path: Path
) -> Iterator[tuple[str, LoadedModel]]:
    kind: str = request.param
    dtype = CASES[kind][0]
    manifest = {  # no quantization here: for int8 it comes from the model
        "backend": "litert",
        "inputs": [{"name": "features", "shape": [None, FEATURES], "dtype": dtype}],
        "outputs": [
            {"name": "logits", "shape": [None, CLASSES], "dtype": dtype},
            {"name": "probs", "shape": [None, CLASSES], "dtype": dtype},
        ],
    }
    bundle = write_bundle(tmp_path, "clf", "1", converted[kind], manifest, file_name="m.tflite")
    model = LoadedModel.load(bundle, LiteRtBackendConfig())
    try:
        yield kind, model
    finally:
        model.close()


def test_converted_model_matches_the_function(loaded: tuple[str, LoadedModel]) -> None:
    kind, model = loaded
    _, logits_tol, probs_tol = CASES[kind]
    assert model.backend.details()["signature"] == "serving_default"
    x = np.random.default_rng(2).normal(size=(6, FEATURES)).astype(np.float32)
    want_logits, want_probs = reference(x)
    for rows in (x[:1], x, x[:2]):  # batch 1 → 6 → 2: the input is resized each time
        logits, probs = model.infer(rows)
        n = len(rows)
        assert logits.dtype == probs.dtype == np.float32
        np.testing.assert_allclose(logits, want_logits[:n], atol=logits_tol, rtol=1e-5)
        np.testing.assert_allclose(probs, want_probs[:n], atol=probs_tol, rtol=1e-5)
        np.testing.assert_array_equal(probs.argmax(axis=1), want_probs[:n].argmax(axis=1))


def test_int8_quantization_comes_from_the_model(loaded: tuple[str, LoadedModel]) -> None:
    kind, model = loaded
    specs = [*model.manifest.inputs, *model.manifest.outputs]
    if kind != "int8":
        assert all(s.quantization is None for s in specs)
        return
    for spec, real in zip(specs, [*model.backend.inputs, *model.backend.outputs], strict=True):
        assert real.quantization is not None
        assert spec.quantization is not None
        assert (spec.quantization.scale, spec.quantization.zero_point) == real.quantization
    probs = model.manifest.outputs[1].quantization
    assert probs is not None and (probs.scale, probs.zero_point) == (1 / 256, -128)


# kind → (ops, ops XNNPACK took): it has no int8 SOFTMAX, so that op stays on the CPU kernels
PARTITIONS = {"float32": (2, 2), "int8": (2, 1), "float16-weights": (4, 4)}


def test_ops_and_partitions_are_reported(loaded: tuple[str, LoadedModel]) -> None:
    """The float16 model dequantizes its two float16 constants (weights, bias) first."""
    kind, model = loaded
    ops, delegated = PARTITIONS[kind]
    details = model.backend.details()
    assert details["ops"] == ops
    assert details["partitions"] == [{"delegate": "XNNPACK", "ops": delegated}]
    assert (details["ops_delegated"], details["ops_on_cpu"]) == (delegated, ops - delegated)
    cpu = ["CPU"] if delegated < ops else []
    assert model.backend.active_providers == ["XNNPACK", *cpu]
