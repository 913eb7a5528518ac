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
