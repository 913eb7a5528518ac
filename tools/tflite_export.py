"""ONNX image models from :mod:`tools.onnx_builders` → TFLite with the very same weights, through
TensorFlow's converter (tensorflow-cpu, in the ``tools`` extra; imported on first use).

The translation covers the ops those builders emit for classifiers: Conv (plain and depthwise),
Relu, Clip, Sigmoid, Add, AveragePool, GlobalAveragePool, Flatten, Gemm and Softmax; anything else
is refused by name. TFLite works in NHWC, so the TFLite model takes [N,H,W,C] where the ONNX one
takes [N,C,H,W]. A Flatten of a feature map runs in NHWC order and the permutation is folded into
the next Gemm's weight rows: the graph keeps no transpose, and computes the same function.

* :func:`onnx_to_tflite`: float32, or full int8 (int8 input and output tensors, activation ranges
  calibrated on representative tensors; weights per channel, as the converter does by default).
* :func:`onnx_int8_qdq`: the ONNX model itself in int8 (onnxruntime's static QDQ quantization),
  the ONNX counterpart of the full-int8 TFLite model, calibrated on the same tensors.
* :func:`tflite_io`: each input's and output's name, shape, dtype and (scale, zero point).
* :func:`run_tflite`: one model over a batch of NCHW tensors, one call per sample as in service.

Input and output tensors are named after the ONNX graph's (the converter's own names, such as
``serving_default_image:0``, are replaced), so one manifest's names fit both models.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flatbuffers  # type: ignore[import-untyped]
import numpy as np
import onnx
from ai_edge_litert import schema_py_generated as schema  # type: ignore[import-untyped]
from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-untyped]
from numpy.typing import NDArray
from onnx import numpy_helper

FILE_IDENTIFIER = b"TFL3"

Quant = tuple[float, int]
"""(scale, zero_point): real = scale * (q - zero_point)."""


class UnsupportedGraph(ValueError):
    """The ONNX graph uses an op or attribute this translation does not handle."""


@dataclass(frozen=True, slots=True)
class TfliteTensor:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name
    quantization: Quant | None  # None for float tensors


@dataclass(frozen=True, slots=True)
class _Value:
    """A TF tensor while translating; ``perm`` is set on a flattened NHWC feature map: NHWC
    position i holds what the ONNX graph has at NCHW position ``perm[i]``."""

    tensor: Any
    perm: NDArray[np.intp] | None = None


# --------------------------------------------------------------------------- public API


def onnx_to_tflite(
    model: onnx.ModelProto, representative: NDArray[np.float32] | None = None
) -> bytes:
    """Convert ``model`` (one 4-D float input, batch fixed or 1) to a ``.tflite`` flatbuffer.

    Without ``representative`` the result is float32. With it ([N,C,H,W] tensors as the ONNX
    model takes them, already normalised), the result is fully int8: every op, and the input
    and output tensors, with the calibrated scales and zero points.
    """
    import tensorflow as tf  # type: ignore[import-untyped]

    graph = model.graph
    if len(graph.input) != 1:
        raise UnsupportedGraph(f"expected one graph input, got {[i.name for i in graph.input]}")
    inp = graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else 1 for d in inp.type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise UnsupportedGraph(f"input {inp.name!r}: expected [N,C,H,W], got {len(dims)} dims")
    n, c, h, w = dims
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    outputs = [o.name for o in graph.output]

    def serve(x: Any) -> dict[str, Any]:
        return _translate(tf, graph.node, inits, inp.name, x, outputs)

    module = tf.Module()
    module.serve = tf.function(
        serve,
        input_signature=[tf.TensorSpec([n, h, w, c], tf.float32, name=inp.name)],
        autograph=False,  # plain Python walks the graph; autograph would only slow tracing
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.serve.get_concrete_function()], module
    )
    if representative is not None:
        samples = np.asarray(representative, np.float32)
        if samples.ndim != 4 or samples.shape[1:] != (c, h, w):
            raise ValueError(
                f"representative: expected [N,{c},{h},{w}] tensors, got {list(samples.shape)}"
            )
        nhwc = np.ascontiguousarray(samples.transpose(0, 2, 3, 1))

        def dataset() -> Iterator[list[NDArray[np.float32]]]:
            for sample in nhwc:
                yield [sample[np.newaxis]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return name_io_tensors(bytes(converter.convert()))


def onnx_int8_qdq(model: onnx.ModelProto, representative: NDArray[np.float32]) -> bytes:
    """``model`` quantized by onnxruntime: QDQ format, int8 weights per channel, uint8
    activations, MinMax ranges over ``representative`` ([N,C,H,W], fed one at a time). Input and
    output stay float32. Weights use the full int8 range, which is exact on CPUs with VNNI; on
    older x86 CPUs onnxruntime's u8s8 kernels may saturate (its docs suggest ``reduce_range``)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    input_name = model.graph.input[0].name
    samples = np.asarray(representative, np.float32)

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._rest = iter(samples)

        def get_next(self) -> dict[str, NDArray[np.float32]] | None:
            sample = next(self._rest, None)
            return None if sample is None else {input_name: sample[np.newaxis]}

    with tempfile.TemporaryDirectory(prefix="qdq-") as tmp:
        source, target = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(model.SerializeToString(deterministic=True))
        quantize_static(
            source,
            target,
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        quantized = onnx.load(str(target))
    data: bytes = quantized.SerializeToString(deterministic=True)
    return data


def name_io_tensors(model_bytes: bytes) -> bytes:
    """Rename each signature's input and output tensors to their signature names."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    for signature in model.signatureDefs or []:
        tensors = model.subgraphs[signature.subgraphIndex].tensors
        for mapping in [*(signature.inputs or []), *(signature.outputs or [])]:
            tensors[mapping.tensorIndex].name = mapping.name
    builder = flatbuffers.Builder(len(model_bytes) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def tflite_io(model_bytes: bytes) -> tuple[list[TfliteTensor], list[TfliteTensor]]:
    """The model's inputs and outputs as the LiteRT interpreter reports them."""
    interpreter = Interpreter(model_content=model_bytes, num_threads=1)
    return (
        [_tensor(d) for d in interpreter.get_input_details()],
        [_tensor(d) for d in interpreter.get_output_details()],
    )


def run_tflite(
    model_bytes: bytes, tensors: NDArray[np.float32], num_threads: int = 1
) -> NDArray[np.float32]:
    """The first output for each [C,H,W] tensor of ``tensors`` [N,C,H,W] (real values: int8
    inputs are quantized and int8 outputs dequantized with the model's own parameters)."""
    interpreter = Interpreter(model_content=model_bytes, num_threads=num_threads)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    out = interpreter.get_output_details()[0]
    q_in, q_out = _tensor(inp).quantization, _tensor(out).quantization
    results = []
    for sample in np.asarray(tensors, np.float32):
        x = sample.transpose(1, 2, 0)[np.newaxis]
        if q_in is not None:
            x = quantize(x, q_in, np.dtype(inp["dtype"]).name)
        interpreter.set_tensor(inp["index"], np.ascontiguousarray(x))
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])[0]
        results.append(y if q_out is None else dequantize(y, q_out))
    return np.asarray(results, np.float32)


def quantize(x: NDArray[np.floating], q: Quant, dtype: str) -> NDArray[np.generic]:
    """Real values → int8/uint8, rounding as the runtime's preprocessor does."""
    info = np.iinfo(np.dtype(dtype))
    scaled = np.rint(np.asarray(x, np.float32) / np.float32(q[0])) + np.float32(q[1])
    out: NDArray[np.generic] = np.clip(scaled, info.min, info.max).astype(dtype)
    return out


def dequantize(q_values: NDArray[np.generic], q: Quant) -> NDArray[np.float32]:
    return ((q_values.astype(np.float32) - np.float32(q[1])) * np.float32(q[0])).astype(np.float32)


def _tensor(detail: Mapping[str, Any]) -> TfliteTensor:
    scale, zero_point = detail["quantization"]
    return TfliteTensor(
        name=str(detail["name"]),
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=np.dtype(detail["dtype"]).name,
        quantization=(float(scale), int(zero_point)) if scale > 0 else None,
    )


# --------------------------------------------------------------------------- translation


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _translate(
    tf: Any,
    nodes: Sequence[onnx.NodeProto],
    inits: Mapping[str, NDArray[Any]],
    input_name: str,
    x: Any,
    outputs: Sequence[str],
) -> dict[str, Any]:
    values: dict[str, _Value] = {input_name: _Value(x)}
    for node in nodes:
        op = _OPS.get(node.op_type)
        if op is None:
            raise UnsupportedGraph(
                f"node {node.name or node.output[0]!r}: op {node.op_type} is not supported; "
                f"supported: {', '.join(sorted(_OPS))}"
            )
        args = [values.get(name) if name else None for name in node.input]
        consts = [inits.get(name) if name else None for name in node.input]
        values[node.output[0]] = op(tf, node, args, consts, _attrs(node))
    result = {}
    for name in outputs:
        if values[name].perm is not None:
            raise UnsupportedGraph(f"output {name!r} is a flattened feature map; add a Gemm")
        result[name] = values[name].tensor
    return result


_Op = Callable[
    [Any, onnx.NodeProto, list[_Value | None], list[NDArray[Any] | None], dict[str, Any]], _Value
]


def _arg(node: onnx.NodeProto, args: list[_Value | None], i: int = 0) -> _Value:
    value = args[i] if i < len(args) else None
    if value is None:
        raise UnsupportedGraph(
            f"{node.op_type} {node.output[0]!r}: input {i} must be a computed tensor, "
            "not an initializer"
        )
    return value


def _const(node: onnx.NodeProto, consts: list[NDArray[Any] | None], i: int) -> NDArray[Any]:
    value = consts[i] if i < len(consts) else None
    if value is None:
        raise UnsupportedGraph(f"{node.op_type} {node.output[0]!r}: input {i} must be a weight")
    return value


def _scalar(node: onnx.NodeProto, consts: list[NDArray[Any] | None], i: int) -> float:
    value = _const(node, consts, i)
    if value.size != 1:
        raise UnsupportedGraph(f"{node.op_type} {node.output[0]!r}: input {i} must be a scalar")
    return float(value.reshape(-1)[0])


def _spatial(tensor: Any) -> tuple[int, int]:
    return int(tensor.shape[1]), int(tensor.shape[2])


def _pad(
    tf: Any,
    node: onnx.NodeProto,
    x: Any,
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
) -> tuple[Any, str]:
    """ONNX explicit pads as TF's "VALID"/"SAME" where they agree, else an explicit tf.pad."""
    if len(pads) != 4:
        raise UnsupportedGraph(f"{node.op_type} {node.output[0]!r}: pads {list(pads)}")
    explicit = [(pads[0], pads[2]), (pads[1], pads[3])]
    if all(p == (0, 0) for p in explicit):
        return x, "VALID"
    same = []
    for size, k, s in zip(_spatial(x), kernel, strides, strict=True):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        same.append((total // 2, total - total // 2))
    if explicit == same:
        return x, "SAME"
    return tf.pad(x, [[0, 0], list(explicit[0]), list(explicit[1]), [0, 0]]), "VALID"


def _conv(
    tf: Any,
    node: onnx.NodeProto,
    args: list[_Value | None],
    consts: list[NDArray[Any] | None],
    attrs: dict[str, Any],
) -> _Value:
    x = _arg(node, args).tensor
    weight = _const(node, consts, 1).astype(np.float32)
    c_out, c_in_per_group, kh, kw = weight.shape
    group = int(attrs.get("group", 1))
    strides = list(attrs.get("strides", [1, 1]))
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or any(
        d != 1 for d in attrs.get("dilations", [1, 1])
    ):
        raise UnsupportedGraph(f"Conv {node.output[0]!r}: auto_pad and dilations are not handled")
    x, padding = _pad(tf, node, x, (kh, kw), strides, list(attrs.get("pads", [0, 0, 0, 0])))
    c_in = int(x.shape[3])
    if group == 1:
        y = tf.nn.conv2d(x, weight.transpose(2, 3, 1, 0), strides, padding)
    elif group == c_in and c_in_per_group == 1:
        multiplier = c_out // group
        kernel = weight.reshape(group, multiplier, kh, kw).transpose(2, 3, 0, 1)
        y = tf.nn.depthwise_conv2d(x, kernel, [1, *strides, 1], padding)
    else:
        raise UnsupportedGraph(f"Conv {node.output[0]!r}: grouped conv with group {group}")
    if len(node.input) > 2 and node.input[2]:
        y = tf.nn.bias_add(y, _const(node, consts, 2).astype(np.float32))
    return _Value(y)


def _elementwise(fn: Callable[[Any, Any], Any]) -> _Op:
    """A per-element op: a flattened map keeps its permutation."""

    def op(
        tf: Any,
        node: onnx.NodeProto,
        args: list[_Value | None],
        consts: list[NDArray[Any] | None],
        attrs: dict[str, Any],
    ) -> _Value:
        x = _arg(node, args)
        return _Value(fn(tf, x.tensor), x.perm)

    return op


def _clip(
    tf: Any,
    node: onnx.NodeProto,
    args: list[_Value | None],
    consts: list[NDArray[Any] | None],
    attrs: dict[str, Any],
) -> _Value:
    x = _arg(node, args)
    lo = _scalar(node, consts, 1) if len(node.input) > 1 and node.input[1] else -math.inf
    hi = _scalar(node, consts, 2) if len(node.input) > 2 and node.input[2] else math.inf
    lo, hi = float(attrs.get("min", lo)), float(attrs.get("max", hi))
    if (lo, hi) == (0.0, 6.0):
        return _Value(tf.nn.relu6(x.tensor), x.perm)
    return _Value(tf.clip_by_value(x.tensor, lo, hi), x.perm)


def _add(
    tf: Any,
    node: onnx.NodeProto,
    args: list[_Value | None],
    consts: list[NDArray[Any] | None],
    attrs: dict[str, Any],
) -> _Value:
    a, b = _arg(node, args, 0), _arg(node, args, 1)
    same_perm = (a.perm is None and b.perm is None) or (
        a.perm is not None and b.perm is not None and np.array_equal(a.perm, b.perm)
    )
    if not same_perm:
        raise UnsupportedGraph(f"Add {node.output[0]!r}: operands laid out differently")
    return _Value(a.tensor + b.tensor, a.perm)


def _average_pool(
    tf: Any,
    node: onnx.NodeProto,
    args: list[_Value | None],
    consts: list[NDArray[Any] | None],
    attrs: dict[str, Any],
) -> _Value:
    kernel = list(attrs["kernel_shape"])
    strides = list(attrs.get("strides", [1, 1]))
    if any(attrs.get("pads", [0, 0, 0, 0])) or attrs.get("ceil_mode", 0):
        raise UnsupportedGraph(f"AveragePool {node.output[0]!r}: pads and ceil_mode")
    return _Value(tf.nn.avg_pool2d(_arg(node, args).tensor, kernel, strides, "VALID"))


def _global_average_pool(
    tf: Any,
    node: onnx.NodeProto,
    args: list[_Value | None],
    consts: list[NDArray[Any] | None],
    attrs: dict[str, Any],
) -> _Value:
    return _Value(tf.reduce_mean(_arg(node, args).tensor, axis=[1, 2], keepdims=True))


def _flatten(
    tf: Any,
    node: onnx.NodeProto,
    args: list[_Value | None],
    consts: list[NDArray[Any] | None],
    attrs: dict[str, Any],
) -> _Value:
    x = _arg(node, args)
    if int(attrs.get("axis", 1)) != 1:
        raise UnsupportedGraph(f"Flatten {node.output[0]!r}: only axis 1")
    if x.tensor.shape.rank != 4:
        return x
    n, h, w, c = (int(d) for d in x.tensor.shape)
    flat = tf.reshape(x.tensor, [n, h * w * c])
    if h * w == 1:
        return _Value(flat)
    return _Value(flat, np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).ravel())


def _gemm(
    tf: Any,
    node: onnx.NodeProto,
    args: list[_Value | None],
    consts: list[NDArray[Any] | None],
    attrs: dict[str, Any],
) -> _Value:
    x = _arg(node, args)
    if attrs.get("transA", 0):
        raise UnsupportedGraph(f"Gemm {node.output[0]!r}: transA")
    weight = _const(node, consts, 1).astype(np.float32)
    if attrs.get("transB", 0):
        weight = weight.T
    if x.perm is not None:
        weight = weight[x.perm]
    weight = np.ascontiguousarray(weight * np.float32(attrs.get("alpha", 1.0)))
    y = tf.matmul(x.tensor, weight)
    if len(node.input) > 2 and node.input[2]:
        y = y + _const(node, consts, 2).astype(np.float32) * np.float32(attrs.get("beta", 1.0))
    return _Value(y)


def _softmax(
    tf: Any,
    node: onnx.NodeProto,
    args: list[_Value | None],
    consts: list[NDArray[Any] | None],
    attrs: dict[str, Any],
) -> _Value:
    x = _arg(node, args)
    if x.perm is not None or x.tensor.shape.rank != 2 or int(attrs.get("axis", -1)) not in (-1, 1):
        raise UnsupportedGraph(f"Softmax {node.output[0]!r}: only over the last axis of [N, C]")
    return _Value(tf.nn.softmax(x.tensor, axis=-1))


_OPS: dict[str, _Op] = {
    "Conv": _conv,
    "Relu": _elementwise(lambda tf, t: tf.nn.relu(t)),
    "Sigmoid": _elementwise(lambda tf, t: tf.sigmoid(t)),
    "Clip": _clip,
    "Add": _add,
    "AveragePool": _average_pool,
    "GlobalAveragePool": _global_average_pool,
    "Flatten": _flatten,
    "Gemm": _gemm,
    "Softmax": _softmax,
}
