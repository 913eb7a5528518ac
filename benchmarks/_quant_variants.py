"""Encodings of one network for benchmarks/quantization.py, and how each is run and timed.

A :class:`Variant` is one model file on one backend: ONNX on onnxruntime (FP32, or INT8 QDQ from
onnxruntime's static quantizer) or a ``.tflite`` on LiteRT (FP32, or full INT8 from TensorFlow's
converter). Every variant is called the same way: one preprocessed NCHW float32 tensor [1,C,H,W]
per call, 1 thread; LiteRT gets it as NHWC, quantized with the model's own input parameters when
the model takes int8 (outside the timed call, as the runtime's preprocessor would do it).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray

from runtime.backends.onnxruntime import OrtBackendConfig, session_options

Prepared = NDArray[np.generic]
"""A tensor in the form the variant's model takes (float NCHW, or int8/float NHWC)."""


@dataclass(frozen=True, slots=True)
class Runner:
    prepare: Callable[[NDArray[np.float32]], Prepared]  # outside the timed call
    call: Callable[[Prepared], NDArray[np.float32]]  # the timed call: scores [1, classes]


@dataclass(frozen=True, slots=True)
class Variant:
    key: str  # unique, e.g. "convnet/ort-int8"
    model: str  # table label of the network
    backend: str  # "onnxruntime" | "litert"
    precision: str  # "FP32" | "INT8 ..." as printed
    data: bytes
    baseline: str | None  # key of the FP32 variant on the same backend; None for a baseline

    def runner(self) -> Runner:
        return ort_runner(self.data) if self.backend == "onnxruntime" else litert_runner(self.data)


def ort_runner(model_bytes: bytes) -> Runner:
    options = session_options(OrtBackendConfig(intra_op_threads=1, inter_op_threads=1))
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    output = session.get_outputs()[0].name

    def call(x: Prepared) -> NDArray[np.float32]:
        out: NDArray[np.float32] = session.run([output], {name: x})[0]
        return out

    return Runner(prepare=lambda x: np.ascontiguousarray(x, np.float32), call=call)


def litert_runner(model_bytes: bytes) -> Runner:
    from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-untyped]

    from tools.tflite_export import dequantize, quantize

    interpreter = Interpreter(model_content=model_bytes, num_threads=1)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    in_dtype = np.dtype(inp["dtype"]).name

    def prepare(x: NDArray[np.float32]) -> Prepared:
        nhwc = np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 2, 3, 1))
        if in_scale > 0:
            return np.ascontiguousarray(quantize(nhwc, (in_scale, in_zero), in_dtype))
        return nhwc

    def call(x: Prepared) -> NDArray[np.float32]:
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])
        return y if out_scale == 0 else dequantize(y, (out_scale, out_zero))

    return Runner(prepare=prepare, call=call)


# --------------------------------------------------------------------------- quantizing


def ort_qdq(
    model: onnx.ModelProto, representative: NDArray[np.float32], *, activations: str = "uint8"
) -> bytes:
    """onnxruntime static quantization: ``quant_pre_process``, then QDQ with per-channel int8
    weights, ``activations`` ("uint8" or "int8") activations, MinMax over ``representative``
    ([N,C,H,W], one at a time). Float input and output."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if activations not in ("uint8", "int8"):
        raise ValueError(f"activations must be 'uint8' or 'int8', got {activations!r}")
    input_name = model.graph.input[0].name
    samples = np.asarray(representative, np.float32)

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._rest = iter(samples)

        def get_next(self) -> dict[str, NDArray[np.float32]] | None:
            sample = next(self._rest, None)
            return None if sample is None else {input_name: sample[np.newaxis]}

    with tempfile.TemporaryDirectory(prefix="quant-bench-") as tmp:
        source, prepped, target = (Path(tmp) / n for n in ("f.onnx", "p.onnx", "q.onnx"))
        source.write_bytes(model.SerializeToString(deterministic=True))
        quant_pre_process(str(source), str(prepped), skip_symbolic_shape=True)
        quantize_static(
            prepped,
            target,
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        data: bytes = onnx.load(str(target)).SerializeToString(deterministic=True)
    return data


# --------------------------------------------------------------------------- measuring


def top1(variant: Variant, tensors: NDArray[np.float32], labels: NDArray[np.int64]) -> float:
    """Top-1 accuracy, one image per call as in service."""
    run = variant.runner()
    hits = [
        int(run.call(run.prepare(x[None])).argmax()) == int(y)
        for x, y in zip(tensors, labels, strict=True)
    ]
    return float(np.mean(hits))


def latency_runs(
    variants: Sequence[Variant], tensors: NDArray[np.float32], runs: int, calls: int
) -> dict[str, list[float]]:
    """Per variant, the p50 in ms of each run of ``calls`` calls. Within a run the variants take
    turns in blocks of 5 calls (A B C ... C B A ...), so other load on the machine hits all."""
    runners = {v.key: v.runner() for v in variants}
    prepared = {k: [r.prepare(x[None]) for x in tensors] for k, r in runners.items()}
    for key, run in runners.items():  # warm-up
        for x in prepared[key][:3]:
            run.call(x)
    result: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(runs):
        times: dict[str, list[float]] = {k: [] for k in runners}
        keys = list(runners)
        turn = 0
        while any(len(t) < calls for t in times.values()):
            for key in keys if turn % 2 == 0 else keys[::-1]:
                run, xs = runners[key], prepared[key]
                for _ in range(min(5, calls - len(times[key]))):
                    x = xs[len(times[key]) % len(xs)]
                    start = time.perf_counter_ns()
                    run.call(x)
                    times[key].append((time.perf_counter_ns() - start) / 1e6)
            turn += 1
        for key, t in times.items():
            result[key].append(float(np.median(t)))
    return result
