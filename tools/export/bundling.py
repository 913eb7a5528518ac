"""An exported model's I/O read from the model file, merged with a manifest template and CLI
preprocessing options into the manifest fields of :func:`tools.bundle.write_bundle`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tools.export import ExportError

BACKENDS_BY_SUFFIX = {".onnx": ("onnxruntime", "model.onnx"), ".tflite": ("litert", "model.tflite")}
_DERIVED = ("name", "version", "file", "sha256", "backend")
_ONNX_DTYPES = {1: "float32", 10: "float16", 2: "uint8", 3: "int8", 7: "int64", 6: "int32"}
Spec = dict[str, Any]


def io_specs(model_bytes: bytes, backend: str) -> tuple[list[Spec], list[Spec]]:
    """Inputs and outputs as the manifest describes them: name, shape, dtype."""
    if backend == "onnxruntime":
        return _onnx_io(model_bytes)
    from tools.tflite_export import tflite_io

    inputs, outputs = tflite_io(model_bytes)
    return (
        [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in inputs],
        [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in outputs],
    )


def _onnx_io(model_bytes: bytes) -> tuple[list[Spec], list[Spec]]:
    import onnx
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

    try:
        graph = onnx.load_from_string(model_bytes).graph
    except DecodeError as exc:
        raise ExportError(f"not an ONNX model: {exc}") from exc
    weights = {t.name for t in graph.initializer}

    def spec(value: Any) -> Spec:
        tensor = value.type.tensor_type
        dtype = _ONNX_DTYPES.get(tensor.elem_type)
        if dtype is None:
            kind = onnx.TensorProto.DataType.Name(tensor.elem_type) if tensor.elem_type else "?"
            raise ExportError(
                f"tensor {value.name!r} is {kind}; bundles hold {', '.join(_ONNX_DTYPES.values())} "
                "tensors (for scikit-learn classifiers: integer class labels)"
            )
        shape: list[int | str | None] = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in tensor.shape.dim
        ]
        return {"name": value.name, "shape": shape, "dtype": dtype}

    inputs = [spec(v) for v in graph.input if v.name not in weights]
    return inputs, [spec(v) for v in graph.output]


def read_template(path: Path | None) -> dict[str, Any]:
    """A manifest (or part of one) as JSON; fields the tools derive are dropped."""
    if path is None:
        return {}
    try:
        template = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"manifest template {path}: {exc}") from exc
    if not isinstance(template, dict):
        raise ExportError(f"manifest template {path}: expected a JSON object")
    return {k: v for k, v in template.items() if k not in _DERIVED}


def manifest_fields(
    template: Mapping[str, Any],
    inputs: list[Spec],
    outputs: list[Spec],
    *,
    backend: str,
    preprocessing: Mapping[str, Any],
    labels: list[str] | None,
    provenance: Mapping[str, Any],
) -> dict[str, Any]:
    """The template with the model's I/O (template entries by position add preprocessing and
    quantization; a name, dtype or fixed dim that contradicts the model is an error), the CLI's
    preprocessing on the first input, labels and provenance."""
    fields = dict(template)
    fields["backend"] = backend
    fields["inputs"] = _merge(inputs, template.get("inputs"), "input")
    fields["outputs"] = _merge(outputs, template.get("outputs"), "output")
    fields["inputs"][0].update({k: v for k, v in preprocessing.items() if v is not None})
    if len(fields["inputs"][0]["shape"]) == 4 and "layout" not in fields["inputs"][0]:
        fields["inputs"][0]["layout"] = _guess_layout(fields["inputs"][0]["shape"])
    if labels is not None:
        fields["labels"] = labels
    fields["provenance"] = {**dict(template.get("provenance") or {}), **provenance}
    return fields


def _guess_layout(shape: list[int | str | None]) -> str:
    return "NHWC" if shape[3] in (1, 3) and shape[1] not in (1, 3) else "NCHW"


def _merge(real: list[Spec], declared: Any, kind: str) -> list[Spec]:
    declared = declared or []
    if not isinstance(declared, list) or len(declared) > len(real):
        raise ExportError(
            f"manifest template: {kind}s must be a list of at most {len(real)} entries "
            f"(the model has {[s['name'] for s in real]})"
        )
    merged = []
    for i, spec in enumerate(real):
        extra = dict(declared[i]) if i < len(declared) else {}
        for key in ("name", "dtype"):
            if key in extra and extra[key] != spec[key]:
                raise ExportError(
                    f"manifest template: {kind} {i} {key} is {extra[key]!r} but the model's "
                    f"is {spec[key]!r}"
                )
        shape = list(spec["shape"])
        given = extra.get("shape", shape)
        if len(given) != len(shape):
            raise ExportError(
                f"manifest template: {kind} {spec['name']!r} shape {given} vs {shape}"
            )
        for d, (model_dim, template_dim) in enumerate(zip(shape, given, strict=True)):
            if isinstance(model_dim, int):
                if isinstance(template_dim, int) and template_dim != model_dim:
                    raise ExportError(
                        f"manifest template: {kind} {spec['name']!r} shape {given} but the "
                        f"model's is {shape}"
                    )
            elif isinstance(template_dim, int):
                shape[d] = template_dim  # a dynamic dim the template fixes (image height...)
        merged.append({**extra, **spec, "shape": shape})
    return merged
