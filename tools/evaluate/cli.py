"""``edgewatch evaluate FP32_BUNDLE INT8_BUNDLE --data SRC [--report DIR]``: both models side by
side on a labelled set, and the gate's verdict (exit 0 pass, 1 reject, 2 bad input)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from runtime.errors import EdgewatchError
from tools.evaluate.data import DataError
from tools.evaluate.gate import GateThresholds, compare_bundles, decide
from tools.evaluate.report import summary_lines, write_report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgewatch evaluate", description=__doc__)
    p.add_argument("reference", type=Path, help="the float bundle")
    p.add_argument("candidate", type=Path, help="the quantized bundle")
    p.add_argument(
        "--data",
        required=True,
        help="labelled set: image folder (one subfolder per label), video with .labels.json, "
        "scenes:seed=S,n=N, or a sensor recording with a 'label' column",
    )
    p.add_argument("--max-drop", type=float, default=1.0, help="accuracy points (default 1.0)")
    p.add_argument("--min-speedup", type=float, default=1.2, help="p50 ratio (default 1.2)")
    p.add_argument("--latency-runs", type=int, default=50)
    p.add_argument("--report", type=Path, default=None, help="write report.md/.html here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        comparison = compare_bundles(
            args.reference, args.candidate, args.data, latency_runs=args.latency_runs
        )
    except (DataError, EdgewatchError) as exc:
        print(f"edgewatch evaluate: {exc}", file=sys.stderr)
        return 2
    result = decide(comparison, GateThresholds(args.max_drop, args.min_speedup))
    print("\n".join(summary_lines(result)))
    if args.report is not None:
        print(f"report: {write_report(result, args.report)}")
    return 0 if result.passed else 1
