"""PyTorch module → one ONNX file (TorchScript exporter, pinned opset, optional dynamic batch).

The TorchScript-based exporter (``dynamo=False``) is used: it needs no onnxscript and is exact
for the CNNs and MLPs edge devices run. A model over protobuf's 2 GB limit would need an
external data file, which a single-file bundle can't hold; that is refused.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tools.export import Exported, ExportError, ExportOptions, chunks, load_callable, sample_inputs

TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript")


def load_module(source: str) -> Any:
    """A TorchScript file, or ``module:callable`` returning an ``nn.Module``; in eval mode."""
    import torch

    path = Path(source)
    if path.suffix in TORCHSCRIPT_SUFFIXES:
        try:
            module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        except (RuntimeError, ValueError, OSError) as exc:
            raise ExportError(f"{path}: not a TorchScript file: {exc}") from exc
    else:
        module = load_callable(source)
    if not isinstance(module, torch.nn.Module):
        raise ExportError(f"source {source!r} gave a {type(module).__name__}, not a torch module")
    return module.eval()


def run_torch(module: Any, batches: list[NDArray[np.float32]]) -> list[NDArray[Any]]:
    """The module's outputs (flattened tuple) for each batch, concatenated."""
    import torch

    per_batch: list[list[NDArray[Any]]] = []
    with torch.no_grad():
        for batch in batches:
            out = module(torch.from_numpy(np.ascontiguousarray(batch)))
            tensors = list(out) if isinstance(out, tuple | list) else [out]
            per_batch.append([t.detach().cpu().numpy() for t in tensors])
    return [np.concatenate(parts) for parts in zip(*per_batch, strict=True)]


def run_onnx(
    model_bytes: bytes, input_name: str, batches: list[NDArray[Any]]
) -> list[NDArray[Any]]:
    import onnxruntime as ort

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    per_batch = [session.run(None, {input_name: batch}) for batch in batches]
    return [np.concatenate(parts) for parts in zip(*per_batch, strict=True)]


def output_names(count: int) -> list[str]:
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def export(source: str, options: ExportOptions) -> Exported:
    import onnx
    import torch
    from onnx.external_data_helper import uses_external_data

    if options.input_shape is None:
        raise ExportError("--input-shape is required for a torch model (e.g. 1x3x64x64)")
    module = load_module(source)
    shape = options.input_shape
    samples = sample_inputs(options, shape[1:])
    batches = chunks(samples, None if options.dynamic_batch else shape[0])
    reference = run_torch(module, batches)
    names = output_names(len(reference))
    dynamic = {n: {0: "N"} for n in [options.input_name, *names]} if options.dynamic_batch else None
    with tempfile.TemporaryDirectory(prefix="edgewatch-export-") as tmp, warnings.catch_warnings():
        path = Path(tmp) / "model.onnx"
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
        try:
            torch.onnx.export(
                module,
                (torch.from_numpy(np.ascontiguousarray(samples[: shape[0]])),),
                str(path),
                opset_version=options.opset,
                input_names=[options.input_name],
                output_names=names,
                dynamic_axes=dynamic,
                do_constant_folding=True,
                dynamo=False,
            )
        except (RuntimeError, ValueError, TypeError) as exc:
            raise ExportError(f"torch.onnx.export failed: {exc}") from exc
        others = sorted(p.name for p in Path(tmp).iterdir() if p != path)
        model = onnx.load(str(path), load_external_data=False)
        if others or any(uses_external_data(t) for t in model.graph.initializer):
            raise ExportError(
                f"the export needs external data files {others}: the model is too large for "
                "one ONNX file (2 GB), which a bundle must be"
            )
        model_bytes = path.read_bytes()
    exported = run_onnx(model_bytes, options.input_name, batches)
    return Exported(
        model_bytes=model_bytes,
        backend="onnxruntime",
        file_name="model.onnx",
        output_names=names,
        inputs=samples,
        reference=reference,
        exported=exported,
        provenance={
            "framework": f"torch {torch.__version__}",
            "exporter": "torch.onnx.export (TorchScript)",
            "opset": options.opset,
            "dynamic_batch": options.dynamic_batch,
        },
    )
