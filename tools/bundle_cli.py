"""``edgewatch bundle``: a model file + manifest template → a bundle, optionally signed.

    edgewatch bundle MODEL_FILE --manifest-template m.json --out models --name N --version V
                     [--sign-key model-signing.key]
    edgewatch bundle keygen --out keys/           Ed25519 key pair (private key mode 0600)
    edgewatch bundle sign BUNDLE_DIR --key model-signing.key

The signature (``manifest.sig``) covers the manifest's bytes, which hold the model's sha256; a
device whose config names the public key (``security.model_public_key``) loads nothing else.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from runtime.errors import EdgewatchError
from tools.export.bundling import BACKENDS_BY_SUFFIX, read_template
from tools.export.cli import add_bundle_options, write
from tools.signing import generate_keys, sign_bundle

logger = logging.getLogger(__name__)
PROG = "edgewatch bundle"


def _bundle_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Write MODEL_FILE (.onnx or .tflite) and its manifest as a bundle "
        "<out>/<name>/<version>/, atomically. Other actions: `keygen`, `sign` "
        f"({PROG} keygen --help).",
    )
    p.add_argument("model", type=Path, help=".onnx or .tflite file")
    add_bundle_options(p)
    return p


def _keygen_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"{PROG} keygen", description="make an Ed25519 key pair")
    p.add_argument("--out", type=Path, required=True, help="directory for the two PEM files")
    return p


def _sign_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"{PROG} sign", description="sign an existing bundle")
    p.add_argument("bundle", type=Path)
    p.add_argument("--key", type=Path, required=True, help="Ed25519 private key (PEM)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if argv[:1] == ["keygen"]:
            keys = generate_keys(_keygen_parser().parse_args(argv[1:]).out)
            print(f"private key {keys.private} (mode 0600; keep it off devices)")
            print(f"public key  {keys.public} (devices: security.model_public_key)")
        elif argv[:1] == ["sign"]:
            args = _sign_parser().parse_args(argv[1:])
            print(f"wrote {sign_bundle(args.bundle, args.key)}")
        else:
            print(f"wrote {_bundle(_bundle_parser().parse_args(argv))}")
    except (EdgewatchError, FileExistsError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    return 0


def _bundle(args: argparse.Namespace) -> Path:
    from tools.export import ExportError

    known = BACKENDS_BY_SUFFIX.get(args.model.suffix.lower())
    if known is None:
        raise ExportError(f"{args.model}: expected a .onnx or .tflite file")
    backend, file_name = known
    try:
        model_bytes = args.model.read_bytes()
    except OSError as exc:
        raise ExportError(f"{args.model}: cannot read: {exc.strerror or exc}") from exc
    provenance: dict[str, object] = {"tool": PROG, "source": str(args.model)}
    template = read_template(args.manifest_template)
    return write(args, model_bytes, backend, file_name, template, provenance)
