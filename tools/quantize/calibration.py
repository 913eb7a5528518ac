"""Calibration tensors for onnxruntime's quantizer, checked against the model's input."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from numpy.typing import NDArray

from tools.evaluate.data import DataError


def check_samples(model: onnx.ModelProto, samples: NDArray[np.float32]) -> str:
    """The input name; raises DataError for an empty set or one whose tensors don't fit."""
    if samples.shape[0] == 0:
        raise DataError("calibration set is empty")
    inp = model.graph.input[0]
    dims: Sequence[onnx.TensorShapeProto.Dimension] = inp.type.tensor_type.shape.dim
    expected = [d.dim_value if d.HasField("dim_value") else None for d in dims][1:]
    actual = list(samples.shape[1:])
    if len(expected) != len(actual) or any(
        e is not None and e != a for e, a in zip(expected, actual, strict=False)
    ):
        raise DataError(
            f"calibration tensors have shape {actual} but input {inp.name!r} takes "
            f"{['?' if e is None else e for e in expected]} (after the batch axis)"
        )
    return str(inp.name)


def make_reader(input_name: str, samples: NDArray[np.float32]) -> object:
    """A CalibrationDataReader feeding one sample per call (batch 1)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._rest = iter(samples)

        def get_next(self) -> dict[str, NDArray[np.float32]] | None:
            x = next(self._rest, None)
            return None if x is None else {input_name: x[np.newaxis]}

        def rewind(self) -> None:
            self._rest = iter(samples)

    return Reader()
