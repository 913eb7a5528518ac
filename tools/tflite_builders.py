"""Tiny real .tflite models, built in milliseconds with the LiteRT flatbuffer schema that
ai-edge-litert ships (``ai_edge_litert/schema_py_generated.py``), without TensorFlow.

* :class:`TfliteBuilder`: one subgraph of tensors and builtin (or custom) ops, optional signature.
* :func:`float_classifier`: ``x`` → FULLY_CONNECTED → SOFTMAX → ``probs``; optional dynamic batch.
* :func:`int8_fully_connected`: a fully int8-quantized FULLY_CONNECTED with quantized I/O.
* :func:`add_mul`: two inputs, two outputs (``prod`` listed before ``sum``); optional signature.
* :func:`float16_double`: float16 in, float16 out, ``y = 2 x``.
* :func:`custom_op_model`: a model whose only op is a custom op no resolver knows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import flatbuffers  # type: ignore[import-untyped]
import numpy as np
from ai_edge_litert import schema_py_generated as schema  # type: ignore[import-untyped]
from numpy.typing import NDArray

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3

_TENSOR_TYPES = {
    "float32": schema.TensorType.FLOAT32,
    "float16": schema.TensorType.FLOAT16,
    "int32": schema.TensorType.INT32,
    "uint8": schema.TensorType.UINT8,
    "int64": schema.TensorType.INT64,
    "int8": schema.TensorType.INT8,
}

# builtin op → (builtin code, options union type, options object factory) ; None: no options
_OPS: dict[str, tuple[int, int, Any]] = {
    "ADD": (schema.BuiltinOperator.ADD, schema.BuiltinOptions.AddOptions, schema.AddOptionsT),
    "MUL": (schema.BuiltinOperator.MUL, schema.BuiltinOptions.MulOptions, schema.MulOptionsT),
    "FULLY_CONNECTED": (
        schema.BuiltinOperator.FULLY_CONNECTED,
        schema.BuiltinOptions.FullyConnectedOptions,
        schema.FullyConnectedOptionsT,
    ),
    "SOFTMAX": (
        schema.BuiltinOperator.SOFTMAX,
        schema.BuiltinOptions.SoftmaxOptions,
        schema.SoftmaxOptionsT,
    ),
    "DEQUANTIZE": (schema.BuiltinOperator.DEQUANTIZE, schema.BuiltinOptions.NONE, None),
    "CAST": (schema.BuiltinOperator.CAST, schema.BuiltinOptions.NONE, None),
}

Quant = tuple[float, int]
"""(scale, zero_point) of a per-tensor quantized tensor: real = scale * (q - zero_point)."""


@dataclass(frozen=True, slots=True)
class Signature:
    """A SignatureDef: its key and the signature names of subgraph tensors (by index)."""

    key: str
    inputs: Mapping[str, int]
    outputs: Mapping[str, int]


class TfliteBuilder:
    """Collects tensors and ops of one subgraph; :meth:`build` returns the .tflite bytes."""

    def __init__(self, description: str = "edgewatch test fixture") -> None:
        self._description = description
        self._buffers: list[Any] = [schema.BufferT()]  # buffer 0 is the empty sentinel
        self._tensors: list[Any] = []
        self._ops: list[Any] = []
        self._codes: list[tuple[int, str | None]] = []
        self._versions: dict[int, int] = {}  # opcode index → highest op version used

    def tensor(
        self,
        name: str,
        shape: Sequence[int],
        dtype: str = "float32",
        *,
        data: NDArray[np.generic] | None = None,
        quantization: Quant | None = None,
        shape_signature: Sequence[int] | None = None,
    ) -> int:
        """Add a tensor (a constant when ``data`` is given) and return its index."""
        if dtype not in _TENSOR_TYPES:
            raise ValueError(f"tensor {name!r}: unsupported dtype {dtype}")
        buffer = schema.BufferT()
        if data is not None:
            array = np.ascontiguousarray(data, dtype=np.dtype(dtype))
            if array.shape != tuple(shape):
                raise ValueError(f"tensor {name!r}: data has shape {array.shape}, not {shape}")
            buffer.data = np.frombuffer(array.tobytes(), dtype=np.uint8)
        self._buffers.append(buffer)
        t = schema.TensorT()
        t.name = name
        t.shape = list(shape)
        t.type = _TENSOR_TYPES[dtype]
        t.buffer = len(self._buffers) - 1
        if shape_signature is not None:
            t.shapeSignature = list(shape_signature)
        if quantization is not None:
            q = schema.QuantizationParametersT()
            q.scale = [float(quantization[0])]
            q.zeroPoint = [int(quantization[1])]
            t.quantization = q
        self._tensors.append(t)
        return len(self._tensors) - 1

    def op(
        self,
        name: str,
        inputs: Sequence[int],
        outputs: Sequence[int],
        *,
        custom_code: str | None = None,
        version: int = 1,
    ) -> None:
        """Add a builtin op by name (see ``_OPS``), or a custom op with ``name="CUSTOM"``."""
        if name == "CUSTOM":
            if not custom_code:
                raise ValueError("a CUSTOM op needs custom_code")
            code, options_type, factory = schema.BuiltinOperator.CUSTOM, 0, None
        elif name in _OPS:
            code, options_type, factory = _OPS[name]
        else:
            raise ValueError(f"unsupported op {name}; expected one of {sorted(_OPS)} or CUSTOM")
        key = (code, custom_code)
        if key not in self._codes:
            self._codes.append(key)
        o = schema.OperatorT()
        o.opcodeIndex = self._codes.index(key)
        o.inputs = list(inputs)
        o.outputs = list(outputs)
        if factory is not None:
            o.builtinOptionsType = options_type
            o.builtinOptions = factory()
            if name == "SOFTMAX":
                o.builtinOptions.beta = 1.0
        self._ops.append(o)
        self._versions[o.opcodeIndex] = max(version, self._versions.get(o.opcodeIndex, 1))

    def build(
        self, inputs: Sequence[int], outputs: Sequence[int], signature: Signature | None = None
    ) -> bytes:
        """The model's flatbuffer bytes (deterministic for identical graphs)."""
        model = schema.ModelT()
        model.version = SCHEMA_VERSION
        model.description = self._description
        model.operatorCodes = []
        for i, (code, custom) in enumerate(self._codes):
            oc = schema.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(
                code, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES
            )
            oc.customCode = custom
            oc.version = self._versions.get(i, 1)
            model.operatorCodes.append(oc)
        graph = schema.SubGraphT()
        graph.name = "main"
        graph.tensors = self._tensors
        graph.operators = self._ops
        graph.inputs = list(inputs)
        graph.outputs = list(outputs)
        model.subgraphs = [graph]
        model.buffers = self._buffers
        if signature is not None:
            sd = schema.SignatureDefT()
            sd.signatureKey = signature.key
            sd.subgraphIndex = 0
            sd.inputs = [_tensor_map(n, i) for n, i in signature.inputs.items()]
            sd.outputs = [_tensor_map(n, i) for n, i in signature.outputs.items()]
            model.signatureDefs = [sd]
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
        return bytes(builder.Output())


def _tensor_map(name: str, index: int) -> Any:
    m = schema.TensorMapT()
    m.name = name
    m.tensorIndex = index
    return m


# --------------------------------------------------------------------------- fixtures


def float_classifier(
    weights: NDArray[np.floating],
    bias: NDArray[np.floating],
    *,
    dynamic_batch: bool = False,
    signature: str | None = None,
) -> bytes:
    """``x`` [1, D] → FULLY_CONNECTED(``weights`` [C, D], ``bias`` [C]) → ``logits`` → SOFTMAX →
    ``probs`` [1, C]. With ``dynamic_batch`` the batch dimension is -1 in the shape signature;
    with ``signature`` the model has a SignatureDef of that key (names ``x`` and ``probs``)."""
    w = np.asarray(weights, dtype=np.float32)
    c, d = w.shape
    batch_sig = -1 if dynamic_batch else 1
    b = TfliteBuilder()
    x = b.tensor("x", [1, d], shape_signature=[batch_sig, d])
    wt = b.tensor("w", [c, d], data=w)
    bt = b.tensor("b", [c], data=np.asarray(bias, dtype=np.float32))
    logits = b.tensor("logits", [1, c], shape_signature=[batch_sig, c])
    probs = b.tensor("probs", [1, c], shape_signature=[batch_sig, c])
    b.op("FULLY_CONNECTED", [x, wt, bt], [logits])
    b.op("SOFTMAX", [logits], [probs])
    sig = None if signature is None else Signature(signature, {"x": x}, {"probs": probs})
    return b.build([x], [probs], sig)


def int8_fully_connected(
    weights_q: NDArray[np.integer],
    bias_q: NDArray[np.integer],
    *,
    input_shape: Sequence[int],
    input_quant: Quant,
    weight_scale: float,
    output_quant: Quant,
    dynamic_batch: bool = False,
) -> bytes:
    """A fully int8 model: ``x`` int8 ``input_shape`` → FULLY_CONNECTED(int8 ``weights_q``
    [C, D] with ``weight_scale``, zero point 0; int32 ``bias_q`` [C] with scale
    ``input_scale * weight_scale``) → ``y`` int8 [N, C]. The input is flattened to [N, D].

    Reference maths: ``y = clip(round((sum((x - zp_in) * w) + bias) * s_in * s_w / s_out) +
    zp_out)``; rounding of exact halves differs between kernels, so tests avoid them."""
    w = np.asarray(weights_q, dtype=np.int8)
    c, d = w.shape
    n = int(np.prod(input_shape)) // d
    if n * d != int(np.prod(input_shape)):
        raise ValueError(f"input shape {list(input_shape)} does not flatten to rows of {d}")
    in_sig = [-1, *input_shape[1:]] if dynamic_batch else list(input_shape)
    b = TfliteBuilder()
    x = b.tensor("x", input_shape, "int8", quantization=input_quant, shape_signature=in_sig)
    wt = b.tensor("w", [c, d], "int8", data=w, quantization=(weight_scale, 0))
    bt = b.tensor(
        "b",
        [c],
        "int32",
        data=np.asarray(bias_q, dtype=np.int32),
        quantization=(input_quant[0] * weight_scale, 0),
    )
    y = b.tensor(
        "y",
        [n, c],
        "int8",
        quantization=output_quant,
        shape_signature=[-1 if dynamic_batch else n, c],
    )
    b.op("FULLY_CONNECTED", [x, wt, bt], [y], version=4)
    return b.build([x], [y])


def add_mul(*, signature: str | None = None, width: int = 3) -> bytes:
    """Inputs ``a``, ``b`` [1, width] float32; outputs ``prod`` = a * b, then ``sum`` = a + b
    (subgraph order: inputs b, a; outputs prod, sum). The signature names them ``left`` (a),
    ``right`` (b), ``product`` and ``total``."""
    b = TfliteBuilder()
    a = b.tensor("a", [1, width])
    bb = b.tensor("b", [1, width])
    total = b.tensor("sum", [1, width])
    prod = b.tensor("prod", [1, width])
    b.op("ADD", [a, bb], [total])
    b.op("MUL", [a, bb], [prod])
    sig = (
        None
        if signature is None
        else Signature(signature, {"left": a, "right": bb}, {"product": prod, "total": total})
    )
    return b.build([bb, a], [prod, total], sig)


def float16_double(width: int = 3) -> bytes:
    """``x`` float16 [1, width] → DEQUANTIZE → ADD(x, x) → CAST → ``y`` float16: y = 2 x."""
    b = TfliteBuilder()
    x16 = b.tensor("x", [1, width], "float16")
    x32 = b.tensor("x32", [1, width])
    y32 = b.tensor("y32", [1, width])
    y16 = b.tensor("y", [1, width], "float16")
    b.op("DEQUANTIZE", [x16], [x32], version=3)
    b.op("ADD", [x32, x32], [y32])
    b.op("CAST", [y32], [y16])
    return b.build([x16], [y16])


def custom_op_model(op_name: str = "EdgewatchMissingOp") -> bytes:
    """``x`` [1, 4] → custom op ``op_name`` → ``y``: loads, but no resolver has the op."""
    b = TfliteBuilder()
    x = b.tensor("x", [1, 4])
    y = b.tensor("y", [1, 4])
    b.op("CUSTOM", [x], [y], custom_code=op_name)
    return b.build([x], [y])
