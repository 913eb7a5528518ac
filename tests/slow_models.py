"""A real ONNX model that hangs on demand, for watchdog tests: the colour classifier of
``fixture_models`` plus an ONNX ``Loop`` whose trip count grows with the frame's green.

Frames that are mostly red or blue (and the all-zero warm-up input) run no iteration and take
microseconds; a green frame runs ``iterations_at_full_green`` matrix products (about a minute on a laptop core at
the default), long enough to count as stuck, and onnxruntime checks its terminate flag between
them, so a cancelled run ends within milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.fixture_models import colour_manifest
from tools.bundle import write_bundle

SIZE = 32
STATE = 64  # the Loop's matrix: one iteration is a 64x64 matmul and a tanh


def slow_colour_classifier_bytes(iterations_at_full_green: int = 8_000_000) -> bytes:
    """probs = softmax(20 * channel means) + 0 * (a Loop of max(0, green - 0.5) * 2 * N
    iterations), so outputs equal the colour classifier's while the cost follows the green."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, SIZE, SIZE])
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3])
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["v_in", "w"], ["mm"]),
            helper.make_node("Tanh", ["mm"], ["v_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "spin",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [STATE, STATE]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [STATE, STATE]),
        ],
        [numpy_helper.from_array(np.eye(STATE, dtype=np.float32) * 0.5, "w")],
    )
    inits = [
        numpy_helper.from_array(np.array([20.0], np.float32), "k"),
        numpy_helper.from_array(np.array([1], np.int64), "green_index"),
        numpy_helper.from_array(np.array([0.5], np.float32), "half"),
        numpy_helper.from_array(np.array([2.0 * iterations_at_full_green], np.float32), "n"),
        numpy_helper.from_array(np.array([], np.int64), "scalar_shape"),
        numpy_helper.from_array(np.array(True), "true"),
        numpy_helper.from_array(np.ones((STATE, STATE), np.float32), "v0"),
        numpy_helper.from_array(np.array([0.0], np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["m"], axes=[2, 3], keepdims=0),
        helper.make_node("Mul", ["m", "k"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["p"], axis=1),
        helper.make_node("Gather", ["m", "green_index"], ["green"], axis=1),  # [1, 1]
        helper.make_node("Sub", ["green", "half"], ["above"]),
        helper.make_node("Relu", ["above"], ["excess"]),
        helper.make_node("Mul", ["excess", "n"], ["trips_f"]),
        helper.make_node("Cast", ["trips_f"], ["trips_1"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["trips_1", "scalar_shape"], ["trips"]),
        helper.make_node("Loop", ["trips", "true", "v0"], ["v"], body=body),
        helper.make_node("ReduceSum", ["v"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["p", "nothing"], ["probs"]),
    ]
    graph = helper.make_graph(nodes, "slow_colour", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def build_slow_colour_bundle(root: Path, iterations_at_full_green: int = 8_000_000) -> Path:
    manifest = colour_manifest(SIZE) | {"description": "test fixture: hangs on green frames"}
    return write_bundle(
        root,
        "slow-colour",
        "1.0.0",
        slow_colour_classifier_bytes(iterations_at_full_green),
        manifest,
    )
