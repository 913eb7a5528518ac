"""ONNX static INT8 quantization: ``quant_pre_process`` first, then QDQ with calibrated ranges.

:func:`tools.tflite_export.onnx_int8_qdq` is the fixed-settings special case (MinMax, per
channel, uint8 activations) used to build the demo twins; this one exposes every setting."""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from numpy.typing import NDArray

from tools.evaluate.data import DataError
from tools.quantize.calibration import check_samples, make_reader

Method = Literal["minmax", "entropy", "percentile"]


@dataclass(frozen=True, slots=True)
class StaticSettings:
    method: Method = "minmax"
    per_channel: bool = True
    activations: Literal["uint8", "int8"] = "uint8"  # int8 activations run slower on x86
    exclude_nodes: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()

    def record(self) -> dict[str, Any]:
        return {"kind": "static-qdq", "weights": "int8", **asdict(self)}


@dataclass(frozen=True, slots=True)
class Quantized:
    model: bytes  # the int8 model
    float_source: bytes  # the pre-processed float model it was made from (same tensor names)
    excluded_nodes: tuple[str, ...] = field(default_factory=tuple)


def preprocess(model_bytes: bytes) -> bytes:
    """onnxruntime's ``quant_pre_process``: symbolic shape inference + graph optimisation."""
    from onnxruntime.quantization import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="quant-pre-") as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        src.write_bytes(model_bytes)
        quant_pre_process(src, dst)
        return dst.read_bytes()


def check_static_shape(model: onnx.ModelProto) -> None:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dynamic = [i for i, d in enumerate(dims) if i > 0 and not d.HasField("dim_value")]
    if dynamic:
        raise DataError(
            f"input {model.graph.input[0].name!r} has dynamic dimension(s) {dynamic} besides "
            "the batch; static quantization needs a fixed calibration shape — re-export with "
            "fixed sizes (or use --dynamic)"
        )


def quantize_static_qdq(
    model_bytes: bytes, samples: NDArray[np.float32], settings: StaticSettings
) -> Quantized:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    check_static_shape(onnx.load_from_string(model_bytes))
    prepared = preprocess(model_bytes)
    model = onnx.load_from_string(prepared)
    input_name = check_samples(model, samples)
    excluded = tuple(
        dict.fromkeys(
            [
                *settings.exclude_nodes,
                *(n.name for n in model.graph.node if n.op_type in settings.exclude_op_types),
            ]
        )
    )
    names = {n.name for n in model.graph.node}
    unknown = [n for n in settings.exclude_nodes if n not in names]
    if unknown:
        raise DataError(f"--exclude-nodes: no node named {unknown}; nodes: {sorted(names)}")
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    activation = QuantType.QUInt8 if settings.activations == "uint8" else QuantType.QInt8
    with tempfile.TemporaryDirectory(prefix="quant-static-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(prepared)
        quantize_static(
            src,
            dst,
            make_reader(input_name, samples),
            quant_format=QuantFormat.QDQ,
            per_channel=settings.per_channel,
            activation_type=activation,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(excluded),
            calibrate_method=methods[settings.method],
        )
        out = onnx.load(str(dst))
    if not any(n.op_type == "QuantizeLinear" for n in out.graph.node):
        raise DataError(
            f"nothing was quantized (excluded nodes: {list(excluded)}); the model would stay "
            "float — exclude fewer nodes"
        )
    return Quantized(out.SerializeToString(deterministic=True), prepared, excluded)
