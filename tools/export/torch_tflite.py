"""PyTorch module → TFLite with litert-torch (formerly ai-edge-torch), when it is installed.

The converted model keeps PyTorch's layout (NCHW) and its one input and outputs."""

from __future__ import annotations

import importlib
import importlib.util
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tools.export import (
    Exported,
    ExportError,
    ExportOptions,
    MissingExtra,
    chunks,
    sample_inputs,
)
from tools.export.keras_tflite import run_tflite
from tools.export.torch_onnx import load_module, run_torch

CONVERTERS = ("litert_torch", "ai_edge_torch")
INSTALL_HINT = "pip install litert-torch"


def converter_module() -> Any:
    for name in CONVERTERS:
        if importlib.util.find_spec(name) is not None:
            return importlib.import_module(name)
    raise MissingExtra(
        "--kind torch-tflite needs litert-torch (ai-edge-torch), which is not installed: "
        f"{INSTALL_HINT}; or export to ONNX with --kind torch"
    )


def export(source: str, options: ExportOptions) -> Exported:
    import torch

    converter = converter_module()
    if options.input_shape is None:
        raise ExportError("--input-shape is required for a torch model (e.g. 1x3x64x64)")
    module = load_module(source)
    shape = options.input_shape
    samples = sample_inputs(options, shape[1:])
    example = (torch.from_numpy(np.ascontiguousarray(samples[: shape[0]])),)
    with tempfile.TemporaryDirectory(prefix="edgewatch-export-") as tmp:
        path = Path(tmp) / "model.tflite"
        try:
            converter.convert(module, example).export(str(path))
        except (RuntimeError, ValueError, TypeError) as exc:
            raise ExportError(f"{converter.__name__}.convert failed: {exc}") from exc
        model_bytes = path.read_bytes()
    names, exported = run_tflite(model_bytes, samples)
    batches = chunks(samples, shape[0])
    return Exported(
        model_bytes=model_bytes,
        backend="litert",
        file_name="model.tflite",
        output_names=names,
        inputs=samples,
        reference=run_torch(module, batches),
        exported=exported,
        provenance={"framework": f"torch {torch.__version__}", "exporter": converter.__name__},
    )
