"""Tiny real ONNX models for tests, built with onnx.helper in milliseconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tools.bundle import write_bundle

COLOUR_LABELS = ["red", "green", "blue"]


def colour_classifier_bytes(size: int = 32, sharpness: float = 20.0) -> bytes:
    """Classifies an RGB image by its dominant colour: softmax(sharpness * (channel mean - mean))."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3])
    k = numpy_helper.from_array(np.array([sharpness], dtype=np.float32), "k")
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["m"], axes=[2, 3], keepdims=0),
        helper.make_node("Mul", ["m", "k"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(nodes, "colour", [x], [y], [k])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def colour_manifest(size: int = 32) -> dict[str, object]:
    return {
        "backend": "onnxruntime",
        "inputs": [
            {
                "name": "image",
                "shape": [1, 3, size, size],
                "layout": "NCHW",
                "dtype": "float32",
                "color": "RGB",
                "resize": "stretch",
                "scale": 1 / 255,
            }
        ],
        "outputs": [{"name": "probs", "shape": [1, 3], "dtype": "float32"}],
        "labels": COLOUR_LABELS,
        "postprocess": {"type": "classify", "softmax": False, "top_k": 3},
        "description": "test fixture: dominant colour",
    }


def build_colour_bundle(root: Path, name: str = "colour", version: str = "1.0.0") -> Path:
    return write_bundle(root, name, version, colour_classifier_bytes(), colour_manifest())


SENSOR_FIELDS = ["vib", "cur"]
SENSOR_TIME_FEATURES = ["mean", "std", "rms", "peak"]


def zscore_model_bytes(mean: np.ndarray, std: np.ndarray, batch: int | None = None) -> bytes:
    """score = mean over features of ((x - mean) / std)²: an honest anomaly score, one per row."""
    d = int(mean.shape[0])
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, [batch, d])
    y = helper.make_tensor_value_info("score", TensorProto.FLOAT, [batch])
    inits = [
        numpy_helper.from_array(mean.astype(np.float32), "mu"),
        numpy_helper.from_array((1.0 / std).astype(np.float32), "inv_sd"),
        numpy_helper.from_array(np.array([1], np.int64), "axis"),
    ]
    nodes = [
        helper.make_node("Sub", ["features", "mu"], ["c"]),
        helper.make_node("Mul", ["c", "inv_sd"], ["z"]),
        helper.make_node("Mul", ["z", "z"], ["z2"]),
        helper.make_node("ReduceMean", ["z2", "axis"], ["score"], keepdims=0),
    ]
    graph = helper.make_graph(nodes, "zscore", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def sensor_feature_names(fields: list[str] = SENSOR_FIELDS) -> list[str]:
    return [f"{f}.{t}" for f in fields for t in SENSOR_TIME_FEATURES]


def build_sensor_bundle(
    root: Path,
    *,
    mean: np.ndarray,
    std: np.ndarray,
    threshold: float,
    window: int = 16,
    hop: int = 8,
    batch: int | None = None,
    name: str = "zscore",
    sensor: bool = True,
) -> Path:
    """A sensor bundle whose manifest ``sensor`` section matches ``zscore_model_bytes``."""
    names = sensor_feature_names()
    assert mean.shape == (len(names),)
    manifest: dict[str, object] = {
        "backend": "onnxruntime",
        "inputs": [{"name": "features", "shape": [batch, len(names)], "dtype": "float32"}],
        "outputs": [{"name": "score", "shape": [batch], "dtype": "float32"}],
        "description": "test fixture: mean squared z-score",
    }
    if sensor:
        manifest["sensor"] = {
            "fields": SENSOR_FIELDS,
            "window": {"kind": "count", "size": window, "hop": hop},
            "features": {"time": SENSOR_TIME_FEATURES},
            "feature_names": names,
            "score_output": "score",
            "threshold": threshold,
            "feature_mean": mean.tolist(),
            "feature_std": std.tolist(),
        }
    return write_bundle(root, name, "1.0.0", zscore_model_bytes(mean, std, batch), manifest)
