"""ONNX dynamic INT8 quantization (weights int8, activations quantized per call): the usual
choice for transformer-like models (MatMul/Gemm/Attention heavy); needs no calibration set."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import onnx

from tools.quantize.onnx_static import Quantized, preprocess


def dynamic_record(per_channel: bool, exclude_nodes: tuple[str, ...]) -> dict[str, Any]:
    return {
        "kind": "dynamic",
        "weights": "int8",
        "per_channel": per_channel,
        "exclude_nodes": list(exclude_nodes),
    }


def quantize_dynamic_int8(
    model_bytes: bytes, per_channel: bool = False, exclude_nodes: tuple[str, ...] = ()
) -> Quantized:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    prepared = preprocess(model_bytes)
    with tempfile.TemporaryDirectory(prefix="quant-dyn-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(prepared)
        quantize_dynamic(
            src,
            dst,
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude_nodes),
        )
        out = onnx.load(str(dst))
    return Quantized(out.SerializeToString(deterministic=True), prepared, exclude_nodes)
