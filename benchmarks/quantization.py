"""Quantization benchmark: FP32 vs INT8 accuracy and latency, onnxruntime and LiteRT, side by side.

Networks
  convnet  MobileNetV2 (3.5 M parameters' topology, 224x224, 3 classes) trained on generated
           normal / smoke / fire scenes (benchmarks/_quant_convnet.py; cached in
           ``build/bench-quantization/``); INT8 made here: onnxruntime static QDQ
           (``quant_pre_process``, per-channel int8 weights, uint8 activations, MinMax over 96
           training scenes) and LiteRT full int8 (TensorFlow's converter, same scenes).
  demo     ``models/demo-hazard-classifier-tflite``: the committed 1.0.0-onnx / -onnx-int8 /
           -fp32 / -int8 bundles (64x64 pooled-colour MLP).

Accuracy is top-1 on held-out generated scenes no model was trained or calibrated on; latency is
the p50 of one-image calls on 1 thread, median over runs, all variants taking turns within a run;
speed-up is FP32 p50 / INT8 p50 on the same backend in the same run (median over runs).

Targets: the 224-px convnet INT8 >= 2x faster than FP32 at <= 0.5 point top-1 drop (every
convnet INT8 row is judged by it). The demo rows are judged by the ``quantize`` gate's defaults
(>= 1.2x, <= 1 point). Two rows are there to be rejected: INT8 *activations* in onnxruntime
on x86 (its s8s8 kernels keep little of the speed-up that uint8 activations get) and the shipped ``models/demo-hazard-classifier/1.0.0``
quantized the same way (accuracy collapses: its first Gemm folds a 1e-6 standard deviation floor
into weights up to ~600, so one int8 step of a pooled colour feature moves a logit by whole units).
The 64-px demo network runs in ~0.1 ms, where quantize/dequantize overhead outweighs the int8
arithmetic: the gate keeps it in FP32.

Run: ``.venv/bin/python benchmarks/quantization.py [--runs 5] [--calls 40] [--quick] [--rebuild]``
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from _common import fmt, machine_description, markdown_table, progress
from _quant_convnet import HELDOUT_STREAM, TRAIN_STREAM, cached_model, cached_set, render_set
from _quant_variants import Variant, latency_runs, ort_qdq, top1
from numpy.typing import NDArray

import tools.demo_models as dm
from runtime.manifest import InputSpec
from runtime.model import read_manifest

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "build" / "bench-quantization"
DEMO = REPO / "models" / "demo-hazard-classifier-tflite"
SHIPPED = REPO / "models" / "demo-hazard-classifier" / "1.0.0"
PACKAGES = ("onnxruntime", "ai-edge-litert", "tensorflow-cpu", "torch", "numpy")
BENCH_SEED = 7  # held-out demo scenes: the builders draw from seed 0
TRAIN_PER_CLASS, HELDOUT_PER_CLASS, CALIB_PER_CLASS = 200, 100, 32
DEMO_HELDOUT_PER_CLASS, DEMO_CALIB_PER_CLASS = 200, 50


@dataclass(frozen=True, slots=True)
class Gate:
    max_drop_points: float
    min_speedup: float
    label: str


TARGET = Gate(0.5, 2.0, "target ≥2x, ≤0.5 pt")
DEFAULT_GATE = Gate(1.0, 1.2, "gate ≥1.2x, ≤1 pt")


@dataclass(frozen=True, slots=True)
class Row:
    variant: Variant
    accuracy: float
    p50_ms: float
    speedup: float | None  # None for a baseline
    gate: Gate | None
    why: str  # what the row shows

    def verdict(self, baseline_accuracy: float) -> str:
        if self.gate is None or self.speedup is None:
            return "baseline"
        drop = (baseline_accuracy - self.accuracy) * 100
        misses = []
        if drop > self.gate.max_drop_points:
            misses.append(f"drop {drop:.1f} pt")
        if self.speedup < self.gate.min_speedup:
            misses.append(f"{self.speedup:.2f}x")
        return "PASS" if not misses else "MISS (" + ", ".join(misses) + ")"


# --------------------------------------------------------------------------- models and data


def cached_bytes(path: Path, make: Callable[[], bytes], rebuild: bool) -> bytes:
    if path.is_file() and not rebuild:
        return path.read_bytes()
    started = time.perf_counter()
    data = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    progress(f"  built {path.name} in {time.perf_counter() - started:.0f} s")
    return data


def convnet_variants(
    rebuild: bool,
) -> tuple[list[Variant], NDArray[np.float32], NDArray[np.int64]]:
    """The trained convnet's five encodings and its held-out tensors and labels."""
    from tools.tflite_export import onnx_to_tflite

    if rebuild:
        for old in CACHE.glob("convnet*"):
            old.unlink()
    train = cached_set(CACHE / "train.npz", lambda: render_set(TRAIN_PER_CLASS, TRAIN_STREAM))
    heldout = cached_set(
        CACHE / "heldout.npz", lambda: render_set(HELDOUT_PER_CLASS, HELDOUT_STREAM)
    )
    model = cached_model(CACHE / "convnet-fp32.onnx", lambda: train)
    calib = train.tensors(0, CALIB_PER_CLASS * 3)  # scenes are interleaved by class
    fp32 = model.SerializeToString(deterministic=True)

    def cached(name: str, make: Callable[[], bytes]) -> bytes:
        return cached_bytes(CACHE / name, make, rebuild=False)

    ort_u8 = cached("convnet-ort-int8-u8.onnx", lambda: ort_qdq(model, calib))
    ort_s8 = cached("convnet-ort-int8-s8.onnx", lambda: ort_qdq(model, calib, activations="int8"))
    tfl_fp32 = cached("convnet-fp32.tflite", lambda: onnx_to_tflite(model))
    tfl_int8 = cached("convnet-int8.tflite", lambda: onnx_to_tflite(model, calib))
    name = "convnet 224"
    variants = [
        Variant("convnet/ort-fp32", name, "onnxruntime", "FP32", fp32, None),
        Variant(
            "convnet/ort-int8", name, "onnxruntime", "INT8 QDQ u8 act", ort_u8, "convnet/ort-fp32"
        ),
        Variant(
            "convnet/ort-int8s8", name, "onnxruntime", "INT8 QDQ s8 act", ort_s8, "convnet/ort-fp32"
        ),
        Variant("convnet/litert-fp32", name, "litert", "FP32", tfl_fp32, None),
        Variant(
            "convnet/litert-int8", name, "litert", "INT8 full", tfl_int8, "convnet/litert-fp32"
        ),
    ]
    return variants, heldout.tensors(), heldout.labels


def demo_variants() -> list[Variant]:
    def read(version: str) -> bytes:
        bundle = DEMO / version
        return (bundle / read_manifest(bundle).file).read_bytes()

    name = "demo 64 (tflite twin)"
    return [
        Variant("demo/ort-fp32", name, "onnxruntime", "FP32", read("1.0.0-onnx"), None),
        Variant(
            "demo/ort-int8",
            name,
            "onnxruntime",
            "INT8 QDQ u8 act",
            read("1.0.0-onnx-int8"),
            "demo/ort-fp32",
        ),
        Variant("demo/litert-fp32", name, "litert", "FP32", read("1.0.0-fp32"), None),
        Variant(
            "demo/litert-int8", name, "litert", "INT8 full", read("1.0.0-int8"), "demo/litert-fp32"
        ),
    ]


def shipped_variants(n_calib_per_class: int) -> list[Variant]:
    """The shipped demo classifier and the same QDQ quantization as its TFLite twin's."""
    manifest = read_manifest(SHIPPED)
    fp32 = (SHIPPED / manifest.file).read_bytes()
    spec = manifest.inputs[0]
    mean, std = np.asarray(spec.mean)[:, None, None], np.asarray(spec.std)[:, None, None]
    identity = dm.classifier_input_spec([0.0] * 3, [1.0] * 3)
    calib, _ = dm.render_classifier_set(identity, n_calib_per_class, 0, dm.CALIBRATION_STREAM, 2)
    int8 = ort_qdq(onnx.load_from_string(fp32), ((calib - mean) / std).astype(np.float32))
    name = "shipped demo 1.0.0"
    return [
        Variant("shipped/ort-fp32", name, "onnxruntime", "FP32", fp32, None),
        Variant(
            "shipped/ort-int8", name, "onnxruntime", "INT8 QDQ u8 act", int8, "shipped/ort-fp32"
        ),
    ]


def demo_heldout(per_class: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    spec: InputSpec = read_manifest(DEMO / "1.0.0-onnx").inputs[0]
    return dm.render_classifier_set(spec, per_class, BENCH_SEED, dm.HELDOUT_STREAM, 2)


# --------------------------------------------------------------------------- measuring


def measure(
    variants: Sequence[Variant],
    tensors: NDArray[np.float32],
    labels: NDArray[np.int64],
    gates: dict[str, Gate],
    notes: dict[str, str],
    runs: int,
    calls: int,
) -> list[Row]:
    started = time.perf_counter()
    accuracy = {v.key: top1(v, tensors, labels) for v in variants}
    p50s = latency_runs(variants, tensors[:16], runs, calls)
    rows = []
    for v in variants:
        speedup = None
        if v.baseline is not None:
            ratios = np.asarray(p50s[v.baseline]) / np.asarray(p50s[v.key])  # same-run pairs
            speedup = float(np.median(ratios))
        rows.append(
            Row(
                v,
                accuracy[v.key],
                float(np.median(p50s[v.key])),
                speedup,
                gates.get(v.key),
                notes.get(v.key, ""),
            )
        )
    progress(f"  measured {len(variants)} variants in {time.perf_counter() - started:.0f} s")
    return rows


def table(rows: Sequence[Row]) -> str:
    base = {r.variant.key: r for r in rows}
    out = []
    for r in rows:
        b = base[r.variant.baseline] if r.variant.baseline else r
        drop = "" if r.variant.baseline is None else f"{(r.accuracy - b.accuracy) * 100:+.1f}"
        out.append(
            [
                r.variant.model,
                "ORT" if r.variant.backend == "onnxruntime" else "LiteRT",
                r.variant.precision,
                f"{r.accuracy * 100:.1f}",
                drop,
                fmt(r.p50_ms, 2),
                "" if r.speedup is None else f"{r.speedup:.2f}x",
                "" if r.gate is None else r.gate.label,
                r.verdict(b.accuracy),
            ]
        )
    headers = [
        "model",
        "backend",
        "precision",
        "top-1 %",
        "Δ pt",
        "p50 ms",
        "speed-up",
        "judged by",
        "verdict",
    ]
    return markdown_table(headers, out, align="lllrrrrll")


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="quantization.py", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--runs", type=int, default=5, help="latency runs (5)")
    parser.add_argument(
        "--calls", type=int, default=40, help="timed calls per variant per run (40)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 runs x 10 calls, fewer held-out scenes"
    )
    parser.add_argument("--rebuild", action="store_true", help="retrain and requantize the convnet")
    parser.add_argument("--json", type=Path, default=None, help="save the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.calls = 2, 10
    if args.runs < 1 or args.calls < 1:
        parser.error("--runs and --calls must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    machine = machine_description(PACKAGES)
    progress("convnet: data, model and INT8 encodings (cached under build/bench-quantization)")
    convnet, x_conv, y_conv = convnet_variants(args.rebuild)
    if args.quick:  # interleaved by class: a prefix keeps the classes balanced
        x_conv, y_conv = x_conv[:90], y_conv[:90]
    demo_per_class = 30 if args.quick else DEMO_HELDOUT_PER_CLASS
    progress(f"demo: rendering {demo_per_class * 3} held-out scenes; quantizing the shipped model")
    x_demo, y_demo = demo_heldout(demo_per_class)
    shipped = shipped_variants(DEMO_CALIB_PER_CLASS)
    gates = {
        "convnet/ort-int8": TARGET,
        "convnet/litert-int8": TARGET,
        "convnet/ort-int8s8": TARGET,
        "demo/ort-int8": DEFAULT_GATE,
        "demo/litert-int8": DEFAULT_GATE,
        "shipped/ort-int8": DEFAULT_GATE,
    }
    notes = {
        "convnet/ort-int8s8": "rejected: x86's int8 dot product (VNNI) multiplies uint8 by int8; "
        "with int8 activations onnxruntime runs s8s8 kernels and keeps little of the speed-up",
        "demo/ort-int8": "rejected: a ~0.1 ms model, where Q/DQ overhead outweighs int8 maths",
        "demo/litert-int8": "rejected: a ~0.1 ms model, where Q/DQ overhead outweighs int8 maths",
        "shipped/ort-int8": "rejected: first-Gemm weights up to ~600 (1e-6 sd floor); one int8 "
        "step of a pooled colour feature moves a logit by whole units",
    }
    progress("measuring accuracy and latency")
    rows = measure(convnet, x_conv, y_conv, gates, notes, args.runs, args.calls)
    rows += measure(
        demo_variants() + shipped, x_demo, y_demo, gates, notes, args.runs, args.calls * 5
    )
    print(f"# quantization benchmark\n\n{machine}\n")
    print(
        f"top-1 on {len(y_conv)} (convnet) / {len(y_demo)} (demo) held-out generated scenes; p50 of "
        f"one-image calls, 1 thread, median of {args.runs} runs x {args.calls} calls (demo: "
        f"x{args.calls * 5}); speed-up vs FP32 on the same backend, same runs\n"
    )
    print(table(rows))
    for r in rows:
        if r.why:
            print(f"\n- {r.variant.model} {r.variant.backend} {r.variant.precision}: {r.why}")
    progress(f"done in {time.perf_counter() - started:.0f} s")
    if args.json is not None:
        doc = {
            "benchmark": "quantization",
            "machine": machine,
            "settings": {"runs": args.runs, "calls": args.calls, "quick": args.quick},
            "rows": [
                {
                    "key": r.variant.key,
                    "backend": r.variant.backend,
                    "precision": r.variant.precision,
                    "top1": r.accuracy,
                    "p50_ms": r.p50_ms,
                    "speedup": r.speedup,
                    "gate": None if r.gate is None else r.gate.label,
                }
                for r in rows
            ],
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
