"""``edgewatch quantize BUNDLE --calibration SRC --out models``: quantize a float ONNX bundle
(static QDQ or dynamic) or LiteRT bundle (full int8 via TF's converter) to INT8, evaluate it against the float one, and write the new bundle only if the gate passes.

Exit codes: 0 written, 1 rejected by the gate (report printed, nothing written), 2 bad input."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtime.errors import EdgewatchError
from runtime.manifest import ManifestBase
from runtime.model import read_manifest
from tools.bundle import write_bundle
from tools.evaluate.data import DataError, LabelledSet, load_set
from tools.evaluate.gate import GateThresholds, compare_bundles, decide, gate_record
from tools.evaluate.progress import progress_bar
from tools.evaluate.report import summary_lines, write_report
from tools.quantize.onnx_dynamic import dynamic_record, quantize_dynamic_int8
from tools.quantize.onnx_static import Quantized, StaticSettings, quantize_static_qdq
from tools.quantize.tflite_int8 import quantize_tflite_int8

logger = logging.getLogger(__name__)
_FILLED = ("name", "version", "file", "sha256")


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgewatch quantize", description=__doc__)
    p.add_argument("bundle", type=Path, help="the float ONNX bundle")
    p.add_argument(
        "--calibration",
        help="image folder, video file, scenes:seed=S,n=N or sensor recording (.csv/.jsonl)",
    )
    p.add_argument("--calibration-limit", type=int, default=200, help="samples at most")
    p.add_argument("--out", type=Path, default=Path("models"), help="bundle root")
    p.add_argument("--name", default=None, help="default: the float bundle's name")
    p.add_argument("--version", default=None, help="default: <float version>-int8")
    p.add_argument("--method", choices=("minmax", "entropy", "percentile"), default="minmax")
    p.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--activations",
        choices=("uint8", "int8"),
        default="uint8",
        help="uint8 (default): int8 activations run 1.0-0.4x float speed on x86",
    )
    p.add_argument("--exclude-nodes", type=_names, default=(), help="keep these nodes float")
    p.add_argument("--exclude-op-types", type=_names, default=(), help="e.g. Softmax,Sigmoid")
    p.add_argument("--dynamic", action="store_true", help="dynamic quantization (transformers)")
    p.add_argument("--max-drop", type=float, default=1.0, help="accuracy points (default 1.0)")
    p.add_argument("--min-speedup", type=float, default=1.2, help="p50 ratio (default 1.2)")
    p.add_argument("--eval", default=None, help="labelled set (default: the calibration set)")
    p.add_argument("--latency-runs", type=int, default=50)
    p.add_argument("--report", type=Path, default=None, help="write report.md/.html here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        return _run(args)
    except (DataError, EdgewatchError, FileExistsError) as exc:
        print(f"edgewatch quantize: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(
            f"edgewatch quantize: {exc.name or exc} is missing: pip install 'edgewatch[tools]'",
            file=sys.stderr,
        )
        return 2


def _load(source: str, manifest: ManifestBase, limit: int | None, what: str) -> LabelledSet:
    with progress_bar(f"{what} {source}", limit) as advance:
        return load_set(source, manifest, limit, advance)


def _run(args: argparse.Namespace) -> int:
    manifest = read_manifest(args.bundle)
    if manifest.backend not in ("onnxruntime", "litert"):
        raise DataError(f"{args.bundle}: backend {manifest.backend!r} can't be quantized here")
    if manifest.backend == "litert" and args.dynamic:
        raise DataError("--dynamic is for ONNX bundles; TFLite bundles get full int8")
    if args.calibration is None and not args.dynamic:
        raise DataError("static quantization needs --calibration SRC (or pass --dynamic)")
    model_bytes = (args.bundle / manifest.file).read_bytes()
    calibration = None
    if args.calibration is not None:
        calibration = _load(args.calibration, manifest, args.calibration_limit, "calibrating on")
    quantized, record, io_fields = _quantize(args, manifest, model_bytes, calibration)
    eval_source = args.eval or args.calibration
    if eval_source is None:
        raise DataError("--dynamic without --calibration needs --eval SRC (a labelled set)")
    data = calibration if eval_source == args.calibration and calibration else None
    data = data or _load(eval_source, manifest, None, "loading")
    name = args.name or manifest.name
    version = args.version or f"{manifest.version}-int8"
    fields = {**_fields(manifest, record, args.bundle), **io_fields}
    with tempfile.TemporaryDirectory(prefix="edgewatch-quantize-") as tmp:
        staged = write_bundle(
            Path(tmp), name, version, quantized.model, fields, file_name=manifest.file
        )
        comparison = compare_bundles(
            args.bundle,
            staged,
            data,
            float_source=quantized.float_source,
            latency_runs=args.latency_runs,
        )
    result = decide(comparison, GateThresholds(args.max_drop, args.min_speedup))
    print("\n".join(summary_lines(result)))
    if args.report is not None:
        print(f"report: {write_report(result, args.report)}")
    if not result.passed:
        print(f"not written: {name}/{version} was rejected by the gate", file=sys.stderr)
        return 1
    fields["provenance"]["gate"] = gate_record(result)
    target = write_bundle(
        args.out,
        name,
        version,
        quantized.model,
        fields,
        overwrite=args.overwrite,
        file_name=manifest.file,
    )
    print(f"wrote {target}")
    return 0


def _quantize(
    args: argparse.Namespace,
    manifest: ManifestBase,
    model_bytes: bytes,
    calibration: LabelledSet | None,
) -> tuple[Quantized, dict[str, Any], dict[str, Any]]:
    """The quantized model, its quantization record, and manifest fields it changes."""
    if args.dynamic:
        quantized = quantize_dynamic_int8(model_bytes, args.per_channel, args.exclude_nodes)
        return quantized, dynamic_record(args.per_channel, args.exclude_nodes), {}
    assert calibration is not None
    if manifest.backend == "litert":
        with progress_bar("converting to full int8 TFLite", None):
            tfl, io_fields, tfl_record = quantize_tflite_int8(
                args.bundle, manifest, calibration.inputs
            )
        record = {**tfl_record, "calibration": _calibration_record(calibration)}
        return Quantized(tfl, model_bytes), record, io_fields
    settings = StaticSettings(
        method=args.method,
        per_channel=args.per_channel,
        activations=args.activations,
        exclude_nodes=args.exclude_nodes,
        exclude_op_types=args.exclude_op_types,
    )
    with progress_bar("quantizing (calibration pass)", None):
        quantized = quantize_static_qdq(model_bytes, calibration.inputs, settings)
    record = {
        **settings.record(),
        "excluded_nodes": list(quantized.excluded_nodes),
        "calibration": _calibration_record(calibration),
    }
    return quantized, record, {}


def _calibration_record(calibration: LabelledSet) -> dict[str, Any]:
    return {"source": calibration.source, "n_samples": len(calibration)}


def _fields(manifest: ManifestBase, record: dict[str, Any], source: Path) -> dict[str, Any]:
    fields = manifest.model_dump(mode="json")
    for key in _FILLED:
        fields.pop(key)
    fields["description"] = f"INT8 quantization of {manifest.name}/{manifest.version}. " + (
        manifest.description
    )
    fields["provenance"] = {
        "generator": "tools.quantize",
        "quantization": record,
        "source": {"name": manifest.name, "version": manifest.version, "sha256": manifest.sha256},
        "source_provenance": manifest.provenance,
    }
    return fields
