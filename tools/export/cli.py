"""``edgewatch export SOURCE --kind torch|sklearn|keras|torch-tflite ...``: export, verify against
the source, and write a bundle only when the outputs agree.

Exit codes: 0 bundle written, 1 verification failed or bad input (no bundle), 2 a converter
this export needs is not installed (the message names the pip install).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runtime.errors import EdgewatchError
from tools.export import ExportOptions, MissingExtra
from tools.export.bundling import io_specs, manifest_fields, read_template
from tools.export.verify import compare
from tools.signing import load_private_key, signature_for

logger = logging.getLogger(__name__)

KINDS = {
    "torch": "tools.export.torch_onnx",
    "sklearn": "tools.export.sklearn_onnx",
    "keras": "tools.export.keras_tflite",
    "torch-tflite": "tools.export.torch_tflite",
}


def shape_arg(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"expected dims like 1x3x64x64, got {text!r}")
    return dims


def names_arg(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def floats3_arg(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}")
    return values


def add_bundle_options(p: argparse.ArgumentParser) -> None:
    """Options shared with ``edgewatch bundle``."""
    p.add_argument("--out", type=Path, default=Path("models"), help="bundle root (default models)")
    p.add_argument("--name", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--manifest-template", type=Path, help="JSON manifest fields (preprocessing...)")
    p.add_argument("--labels", type=names_arg, help="class labels, a,b,c")
    p.add_argument("--layout", choices=("NCHW", "NHWC"), help="first input's layout")
    p.add_argument("--color", choices=("RGB", "BGR"))
    p.add_argument("--resize", choices=("stretch", "letterbox"))
    p.add_argument("--scale", type=float, help="pixel values are multiplied by this first")
    p.add_argument("--mean", type=floats3_arg, help="per channel, r,g,b")
    p.add_argument("--std", type=floats3_arg, help="per channel, r,g,b")
    p.add_argument("--description")
    p.add_argument("--sign-key", type=Path, help="Ed25519 private key (edgewatch bundle keygen)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgewatch export",
        description="Export a trained model to ONNX or TFLite, run source and export on the same "
        "inputs, and write a bundle only if they agree (exit 1 otherwise; exit 2 when a "
        "converter is missing).",
    )
    p.add_argument(
        "source",
        help="torch: module:callable, file.py:callable or a TorchScript .pt; sklearn: "
        ".joblib/.pkl or module:callable; keras: .keras file or SavedModel directory",
    )
    p.add_argument("--kind", required=True, choices=sorted(KINDS))
    p.add_argument("--input-shape", type=shape_arg, help="e.g. 1x3x64x64 (batch first)")
    p.add_argument("--input-name", default="input", help="torch/keras input name")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--dynamic-batch", action="store_true", help="batch dimension left open")
    p.add_argument("--samples", type=Path, help=".npy [N, ...] inputs to verify on")
    p.add_argument("--num-samples", type=int, default=8, help="random inputs (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--atol", type=float, default=1e-4, help="max abs diff allowed (default 1e-4)")
    p.add_argument(
        "--min-top1-agreement", type=float, default=1.0, help="for class outputs (default 1.0)"
    )
    add_bundle_options(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except MissingExtra as exc:
        print(f"edgewatch export: {exc}", file=sys.stderr)
        return 2
    except (EdgewatchError, FileExistsError) as exc:
        print(f"edgewatch export: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    samples = None if args.samples is None else np.load(args.samples).astype(np.float32)
    options = ExportOptions(
        input_shape=args.input_shape,
        opset=args.opset,
        dynamic_batch=args.dynamic_batch,
        input_name=args.input_name,
        samples=samples,
        num_samples=args.num_samples,
        seed=args.seed,
    )
    template = read_template(args.manifest_template)  # bad template: fail before converting
    exporter = importlib.import_module(KINDS[args.kind])
    result = exporter.export(args.source, options)
    verification = compare(
        result.output_names,
        result.reference,
        result.exported,
        atol=args.atol,
        min_top1_agreement=args.min_top1_agreement,
    )
    print(verification.summary())
    for name, value in verification.per_output.items():
        print(f"  {name}: {value:.3g}")
    if not verification.passed:
        print(
            f"edgewatch export: verification failed: {'; '.join(verification.problems())}; "
            "no bundle written",
            file=sys.stderr,
        )
        return 1
    provenance = {
        "tool": "edgewatch export",
        "kind": args.kind,
        "source": str(args.source),
        **result.provenance,
        "export_verification": verification.as_dict(),
    }
    target = write(args, result.model_bytes, result.backend, result.file_name, template, provenance)
    print(f"wrote {target}")
    return 0


def write(
    args: argparse.Namespace,
    model_bytes: bytes,
    backend: str,
    file_name: str,
    template: dict[str, object],
    provenance: dict[str, object],
) -> Path:
    """The bundle (signed with ``--sign-key``) from the model and the shared bundle options."""
    from runtime.signature import SIGNATURE_FILE
    from tools.bundle import build_manifest, manifest_json, write_bundle

    inputs, outputs = io_specs(model_bytes, backend)
    preprocessing = {
        "layout": args.layout,
        "color": args.color,
        "resize": args.resize,
        "scale": args.scale,
        "mean": args.mean,
        "std": args.std,
    }
    fields = manifest_fields(
        template,
        inputs,
        outputs,
        backend=backend,
        preprocessing=preprocessing,
        labels=args.labels,
        provenance=provenance,
    )
    if args.description is not None:
        fields["description"] = args.description
    extra: dict[str, bytes] = {}
    if args.sign_key is not None:
        key = load_private_key(args.sign_key)
        manifest = build_manifest(args.name, args.version, model_bytes, fields, file_name)
        extra[SIGNATURE_FILE] = signature_for(manifest_json(manifest).encode(), key)
    return write_bundle(
        args.out,
        args.name,
        args.version,
        model_bytes,
        fields,
        overwrite=args.overwrite,
        file_name=file_name,
        extra_files=extra,
    )
