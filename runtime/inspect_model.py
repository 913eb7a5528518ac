"""``edgewatch models inspect``: what a model file or bundle holds and how this device runs it.

Works on a bundle directory (its manifest names the file and the backend) or a bare model file
(the backend is chosen by the file's suffix). Everything comes through the ``Backend`` interface
and its ``details()``, so every backend is inspected the same way."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from runtime.backends.base import BACKENDS, Backend, TensorInfo
from runtime.errors import ConfigError, ModelError
from runtime.manifest import MANIFEST_FILE, InputSpec, ManifestBase, OutputSpec
from runtime.model import read_manifest, sha256_file
from runtime.registry import import_submodules

SUFFIX_BACKENDS = {".onnx": "onnxruntime", ".ort": "onnxruntime", ".tflite": "litert"}
"""Which backend loads a bare model file, by suffix."""


@dataclass(frozen=True, slots=True)
class ModelTarget:
    """A model named on the command line: a bundle directory or a bare model file."""

    path: Path
    model_file: Path
    backend: str
    manifest: ManifestBase | None = None
    sha256: str | None = None
    """The file's real sha256 (bundles only; compared with the manifest's)."""

    @property
    def label(self) -> str:
        m = self.manifest
        return self.model_file.name if m is None else f"{m.name} {m.version}"

    @property
    def sha256_ok(self) -> bool | None:
        return None if self.manifest is None else self.sha256 == self.manifest.sha256

    def sha256_problem(self) -> str | None:
        if self.manifest is None or self.sha256_ok:
            return None
        return (
            f"{self.model_file}: sha256 {self.sha256} does not match the manifest's "
            f"{self.manifest.sha256}; the model file is modified or corrupted"
        )


def resolve_target(path: Path) -> ModelTarget:
    """Read a bundle's manifest and hash its file, or pick a bare file's backend by suffix."""
    if path.is_dir():
        manifest = read_manifest(path)
        model_file = path / manifest.file
        if not model_file.is_file():
            raise ModelError(f"model bundle {path}: model file {manifest.file} is missing")
        return ModelTarget(path, model_file, manifest.backend, manifest, sha256_file(model_file))
    if not path.exists():
        raise ModelError(f"{path}: no such file or bundle directory")
    if path.name == MANIFEST_FILE:
        return resolve_target(path.parent)
    backend = SUFFIX_BACKENDS.get(path.suffix.lower())
    if backend is None:
        raise ModelError(
            f"{path}: unknown model file type {path.suffix!r}; expected a bundle directory or "
            f"one of: {', '.join(sorted(SUFFIX_BACKENDS))}"
        )
    return ModelTarget(path, path, backend)


def backends_for(target: ModelTarget) -> list[str]:
    """The registered backends that can load the target's file."""
    import_submodules("runtime.backends")
    registered = BACKENDS.keys()
    return [target.backend] if target.backend in registered else []


def open_backend(
    target: ModelTarget, backend: str | None = None, settings: Mapping[str, Any] | None = None
) -> Backend:
    """Load ``target`` with its backend's default config, updated with ``settings``."""
    import_submodules("runtime.backends")
    key = backend or target.backend
    if key != target.backend:
        raise ConfigError(f"{target.model_file}: backend {key} cannot load this file")
    plugin = BACKENDS.get(key)
    try:
        config = plugin.config_type.model_validate({**(settings or {}), "type": key})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ConfigError(f"{key} settings: {problems}") from None
    return plugin.from_config(config, target.model_file)


def inspect(target: ModelTarget, backend: Backend) -> dict[str, object]:
    """Everything ``models inspect`` prints, as plain JSON-ready data."""
    m = target.manifest
    return {
        "path": str(target.path),
        "model_file": str(target.model_file),
        "backend": target.backend,
        "manifest": None if m is None else _manifest_summary(target, m),
        "inputs": _tensors(backend.inputs, [] if m is None else m.inputs),
        "outputs": _tensors(backend.outputs, [] if m is None else m.outputs),
        "ops": _op_count(backend.details()),
        "details": backend.details(),
    }


def _manifest_summary(target: ModelTarget, m: ManifestBase) -> dict[str, object]:
    sensor = m.sensor
    return {
        "name": m.name,
        "version": m.version,
        "file": m.file,
        "backend": m.backend,
        "sha256": {"manifest": m.sha256, "actual": target.sha256, "ok": target.sha256_ok},
        "description": m.description,
        "labels": m.labels,
        "postprocess": None if m.postprocess is None else m.postprocess.model_dump(mode="json"),
        "sensor": None
        if sensor is None
        else {
            "fields": sensor.fields,
            "window": sensor.window.model_dump(mode="json"),
            "features": len(sensor.feature_names),
            "score_output": sensor.score_output,
            "threshold": sensor.threshold,
        },
        "streaming": None if m.streaming is None else m.streaming.model_dump(mode="json"),
    }


def _tensors(
    real: list[TensorInfo], declared: Sequence[InputSpec | OutputSpec]
) -> list[dict[str, object]]:
    specs = {spec.name: spec for spec in declared}
    rows: list[dict[str, object]] = []
    for info in real:
        spec = specs.get(info.name)
        q = info.quantization
        rows.append(
            {
                "name": info.name,
                "shape": list(info.shape),
                "dtype": info.dtype,
                "quantization": None if q is None else {"scale": q[0], "zero_point": q[1]},
                "manifest": None
                if spec is None
                else {
                    "shape": spec.shape,
                    "dtype": spec.dtype,
                    "quantization": None
                    if spec.quantization is None
                    else spec.quantization.model_dump(mode="json"),
                },
            }
        )
    return rows


def _op_count(details: Mapping[str, object]) -> int | None:
    """Ops the backend runs: summed from its per-provider/delegate ``nodes``, or its ``ops``."""
    ops = details.get("ops")
    if isinstance(ops, int):
        return ops
    nodes = details.get("nodes")
    if isinstance(nodes, Mapping) and all(isinstance(n, int) for n in nodes.values()):
        return sum(nodes.values())
    return None


def format_report(report: Mapping[str, Any]) -> str:
    """The report as aligned plain text."""
    lines: list[str] = []
    m = report["manifest"]
    if m is None:
        lines.append(f"{report['model_file']}  (bare model file, backend {report['backend']})")
    else:
        sha = m["sha256"]
        lines += [
            f"{m['name']} {m['version']}  ({report['model_file']}, backend {m['backend']})",
            f"  sha256      {sha['actual']}  {'ok' if sha['ok'] else 'MISMATCH'}",
        ]
        if not sha["ok"]:
            lines.append(f"  manifest    {sha['manifest']}")
        if m["labels"]:
            lines.append(f"  labels      {', '.join(m['labels'])}")
        for section in ("postprocess", "sensor", "streaming"):
            if m[section] is not None:
                lines.append(f"  {section:<11} {_inline(m[section])}")
    for kind in ("inputs", "outputs"):
        lines.append(f"{kind}:")
        rows = [
            [
                str(t["name"]),
                str(t["dtype"]),
                _shape(t["shape"]),
                _quant(t["quantization"]),
                "-" if t["manifest"] is None else _manifest_tensor(t),
            ]
            for t in report[kind]
        ]
        table = format_table(["name", "dtype", "shape", "quant (model)", "manifest"], rows)
        lines += [f"  {line}" for line in table.splitlines()]
    ops = report["ops"]
    lines.append(f"ops: {'unknown' if ops is None else ops}")
    lines.append("backend details:")
    lines += _nested(report["details"], indent=2)
    return "\n".join(lines)


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] | None = None
) -> str:
    """Aligned plain-text columns; ``right`` says which ones are right-aligned (numbers)."""
    cells = [list(headers), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    flags = right or [False] * len(headers)
    return "\n".join(
        "  ".join(
            cell.rjust(width) if flag else cell.ljust(width)
            for cell, width, flag in zip(row, widths, flags, strict=True)
        ).rstrip()
        for row in cells
    )


def _shape(shape: Sequence[object]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _quant(q: Mapping[str, object] | None) -> str:
    return "-" if q is None else f"scale={q['scale']:.6g} zp={q['zero_point']}"


def _manifest_tensor(t: Mapping[str, Any]) -> str:
    spec = t["manifest"]
    parts = []
    if spec["dtype"] != t["dtype"]:
        parts.append(spec["dtype"])
    if not _same_shape(spec["shape"], t["shape"]):
        parts.append(_shape(spec["shape"]))
    if spec["quantization"] is not None:
        parts.append(_quant(spec["quantization"]))
    return " ".join(parts) or "same"


def _same_shape(declared: Sequence[object], real: Sequence[object]) -> bool:
    """Equal where both are numbers; a symbolic or unknown dimension matches anything."""
    return len(declared) == len(real) and all(
        d == r or not isinstance(d, int) or not isinstance(r, int)
        for d, r in zip(declared, real, strict=True)
    )


def _inline(value: object) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_inline(v)}" for k, v in value.items())
    return json.dumps(value)


def _inline_item(item: object) -> str:
    if isinstance(item, Mapping):
        return " ".join(f"{k}={v}" for k, v in item.items())
    return str(item)


def _nested(value: Mapping[str, Any], indent: int) -> list[str]:
    pad = " " * indent
    lines = []
    for key, item in value.items():
        if isinstance(item, Mapping) and any(isinstance(v, Mapping | list) for v in item.values()):
            lines.append(f"{pad}{key}:")
            lines += _nested(item, indent + 2)
        elif isinstance(item, Mapping):
            lines.append(f"{pad}{key}: {', '.join(f'{k}={v}' for k, v in item.items()) or '-'}")
        elif isinstance(item, list):
            lines.append(f"{pad}{key}: {'; '.join(_inline_item(i) for i in item) or '-'}")
        else:
            lines.append(f"{pad}{key}: {'-' if item is None else item}")
    return lines
