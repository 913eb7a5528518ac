"""``python -m tools.fit``: fit an anomaly model on a normal-operation recording, write a bundle."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from runtime.errors import EdgewatchError
from runtime.processing.features import FeatureSpec
from tools.fit.bundle_anomaly import MODEL_KINDS, fit_recording
from tools.fit.data import DEFAULT_FEATURES
from tools.fit.thresholds import ThresholdSpec

logger = logging.getLogger(__name__)


def _fields(text: str) -> list[str]:
    fields = [f.strip() for f in text.split(",") if f.strip()]
    if not fields:
        raise argparse.ArgumentTypeError(f"--fields {text!r}: expected a comma-separated list")
    return fields


def _threshold(text: str) -> ThresholdSpec:
    try:
        return ThresholdSpec.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _features(text: str) -> FeatureSpec:
    try:
        return FeatureSpec.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(spec)'}: {e['msg']}" for e in exc.errors()
        )
        raise argparse.ArgumentTypeError(f"--features: {problems}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tools.fit",
        description="Fit an anomaly model on normal-operation readings (CSV or JSONL) and write "
        "an ONNX bundle whose manifest's `sensor` section holds the fields, window, feature spec and "
        "threshold the runtime needs.",
    )
    p.add_argument("--input", required=True, type=Path, help="recording, .csv or .jsonl")
    p.add_argument("--fields", required=True, type=_fields, help="numeric fields, a,b,c")
    p.add_argument("--key-column", help="column naming the sensor key (one model for all keys)")
    p.add_argument("--timestamp-column", help="seconds since the epoch or ISO 8601")
    p.add_argument("--window", type=int, default=64, help="readings per window")
    p.add_argument("--hop", type=int, default=32, help="readings between window starts")
    p.add_argument(
        "--features",
        type=_features,
        default=DEFAULT_FEATURES,
        help="feature spec as JSON, e.g. "
        '\'{"time": ["rms", "kurtosis"], "bands": [[0, 10]], "sample_rate_hz": 50}\' '
        f"(default {DEFAULT_FEATURES.model_dump_json(exclude_defaults=True)})",
    )
    p.add_argument("--model", choices=MODEL_KINDS, default="pca")
    p.add_argument(
        "--threshold",
        type=_threshold,
        default=ThresholdSpec("quantile", 0.995),
        help="quantile:<level> or pot:<false-alarm rate> (default quantile:0.995)",
    )
    p.add_argument("--name", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--out", type=Path, default=Path("models"), help="bundle root (default models)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = fit_recording(
            args.input,
            args.fields,
            kind=args.model,
            threshold=args.threshold,
            name=args.name,
            version=args.version,
            out=args.out,
            window=args.window,
            hop=args.hop,
            key_column=args.key_column,
            timestamp_column=args.timestamp_column,
            feature_spec=args.features,
            seed=args.seed,
            overwrite=args.overwrite,
        )
    except (OSError, ValueError, EdgewatchError) as exc:
        print(f"fit: {exc}", file=sys.stderr)
        return 2
    print(result.bundle_dir)
    return 0
