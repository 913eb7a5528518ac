"""TFLite full-integer quantization of a LiteRT bundle with a representative dataset.

A ``.tflite`` file can't be re-converted, so the float bundle must name its ONNX twin
(``provenance.onnx_twin.version``, a sibling bundle with the same weights, as
:mod:`tools.demo_tflite_models` writes): the twin goes through TF's converter
(:func:`tools.tflite_export.onnx_to_tflite`) with the calibration tensors as representative data.
Inputs and outputs become int8; their scales and zero points go into the manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray

from runtime.manifest import ManifestBase
from runtime.model import read_manifest, sha256_file
from tools.evaluate.data import DataError


def quantize_tflite_int8(
    bundle: Path, manifest: ManifestBase, samples: NDArray[np.float32]
) -> tuple[bytes, dict[str, Any], dict[str, Any]]:
    """(model bytes, manifest inputs/outputs fields, quantization record)."""
    from tools.tflite_export import UnsupportedGraph, onnx_to_tflite, tflite_io

    twin_version = (manifest.provenance.get("onnx_twin") or {}).get("version")
    if not twin_version:
        raise DataError(
            f"{bundle}: a TFLite bundle can't be re-converted; its manifest must name the ONNX "
            "twin it was converted from (provenance.onnx_twin.version)"
        )
    twin_dir = bundle.parent / str(twin_version)
    twin = read_manifest(twin_dir)
    twin_path = twin_dir / twin.file
    if sha256_file(twin_path) != twin.sha256:
        raise DataError(f"{twin_path}: sha256 does not match its manifest")
    if samples.shape[0] == 0:
        raise DataError("calibration set is empty")
    spec = manifest.inputs[0]
    nchw = samples.transpose(0, 3, 1, 2) if spec.layout == "NHWC" else samples
    try:
        model_bytes = onnx_to_tflite(onnx.load(str(twin_path)), np.ascontiguousarray(nchw))
    except (UnsupportedGraph, ValueError) as exc:
        raise DataError(f"TFLite int8 conversion of {twin_path} failed: {exc}") from exc
    (inp,), outputs = tflite_io(model_bytes)
    fields = {
        "inputs": [
            {
                **spec.model_dump(mode="json"),
                "dtype": inp.dtype,
                "quantization": _q(inp.quantization),
            }
        ],
        "outputs": [
            {
                "name": o.name,
                "shape": list(o.shape),
                "dtype": o.dtype,
                "quantization": _q(o.quantization),
            }
            for o in outputs
        ],
    }
    record = {
        "kind": "tflite-full-int8",
        "converted_from": {"version": twin.version, "sha256": twin.sha256},
    }
    return model_bytes, fields, record


def _q(q: tuple[float, int] | None) -> dict[str, float | int] | None:
    return None if q is None else {"scale": q[0], "zero_point": q[1]}
