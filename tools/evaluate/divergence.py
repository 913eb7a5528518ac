"""Per-layer divergence of a QDQ model from its float source (onnxruntime's qdq_loss_debug):
SQNR in dB of each quantized activation against the float model's; low = diverges most."""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LayerDivergence:
    tensor: str  # activation tensor name (the output of a node)
    node: str  # the node producing it, with its op type
    sqnr_db: float  # float activation vs. the int8 model's dequantized one; higher is better


def is_qdq(model_bytes: bytes) -> bool:
    model = onnx.load_from_string(model_bytes)
    return any(n.op_type == "QuantizeLinear" for n in model.graph.node)


def layer_divergence(
    float_bytes: bytes, qdq_bytes: bytes, samples: NDArray[np.float32], limit: int = 16
) -> list[LayerDivergence]:
    """Every matched activation, worst (lowest SQNR) first, over up to ``limit`` samples.

    ``float_bytes`` must be the model the QDQ one was made from (after ``quant_pre_process``),
    so activation names match."""
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    float_model = onnx.load_from_string(float_bytes)
    input_name = float_model.graph.input[0].name
    producers = {
        o: f"{n.name or o} ({n.op_type})" for n in float_model.graph.node for o in n.output
    }
    batch = samples[:limit]

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._rest = iter(batch)

        def get_next(self) -> dict[str, NDArray[np.float32]] | None:
            x = next(self._rest, None)
            return None if x is None else {input_name: x[np.newaxis]}

    with tempfile.TemporaryDirectory(prefix="qdq-debug-") as tmp:
        paths = {}
        for kind, data in (("float", float_bytes), ("qdq", qdq_bytes)):
            src, aug = Path(tmp) / f"{kind}.onnx", Path(tmp) / f"{kind}.aug.onnx"
            src.write_bytes(data)
            modify_model_output_intermediate_tensors(src, aug)
            paths[kind] = str(aug)
        float_acts = collect_activations(paths["float"], Reader())
        qdq_acts = collect_activations(paths["qdq"], Reader())
    matched = create_activation_matching(qdq_acts, float_acts)
    errors = compute_activation_error(matched)
    layers = [
        LayerDivergence(name, producers.get(name, name), float(err["xmodel_err"]))
        for name, err in errors.items()
        if "xmodel_err" in err
    ]
    layers.sort(key=lambda layer: math.inf if math.isnan(layer.sqnr_db) else layer.sqnr_db)
    return layers
