"""Backend benchmark: one MobileNetV2-size model in ORT FP32/INT8 and LiteRT FP32/INT8 at 1 and 2
threads, through edgewatch (``LoadedModel.infer``) against raw runtime calls, in one run.

The four encodings share their weights: ``tools.onnx_builders.mobilenet_v2_onnx`` (3.5 M
parameters, 224x224, seeded random weights; the graph of ``models/mobilenetv2-bench``), the
same graph converted to TFLite by ``tools.tflite_export``, and both quantized to int8 on the same
generated scenes (onnxruntime static QDQ: per-channel int8 weights, uint8 activations, float I/O;
TFLite: full int8 with int8 I/O). They are built once and cached in ``build/bench-backends/``
(``--rebuild`` replaces them; building needs the ``tools`` extra, about a minute).

For every (backend, precision, threads), each run times ``--calls`` calls of

  raw        onnxruntime: ``InferenceSession.run`` with the session options edgewatch builds
             from the same config; LiteRT: ``set_tensor`` / ``invoke`` / ``get_tensor`` on an
             ``Interpreter`` with the same threads (XNNPACK applied by default, as edgewatch does);
  edgewatch  ``LoadedModel.infer`` on a bundle loaded with that backend config (feeds, backend
             call, dequantized outputs),

on the same preprocessed frames, in blocks of 5 calls taking turns (raw, edgewatch, edgewatch,
raw, ...) so that load from other processes hits both alike. The overhead per call is the median
over runs of (edgewatch p50 - raw p50) / raw p50; target <= 5 %.

Run: ``.venv/bin/python benchmarks/backends.py [--runs 7] [--calls 60] [--threads 1 2] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from _common import (
    Summary,
    fmt,
    machine_description,
    markdown_table,
    p50,
    p99,
    progress,
)
from numpy.typing import NDArray

from runtime.backends.litert import LiteRtBackendConfig
from runtime.backends.onnxruntime import OrtBackendConfig, session_options
from runtime.config.base import PluginConfig
from runtime.model import LoadedModel, read_manifest
from tools.bundle import write_bundle
from tools.demo_models import IMAGENET_MEAN, IMAGENET_STD
from tools.scenes import SCENE_KINDS, render_scene

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "build" / "bench-backends"
NAME = "mobilenetv2-backends"
SEED = 0
INPUT = 224
FRAMES = 8
CALIBRATION_FRAMES = 32
TARGET_OVERHEAD = 0.05
BLOCK = 5
TFLITE_FILE = "model.tflite"
PACKAGES = ("onnxruntime", "ai-edge-litert", "numpy", "tensorflow-cpu")


@dataclass(frozen=True, slots=True)
class Variant:
    backend: str  # "onnxruntime" | "litert"
    precision: str  # "fp32" | "int8"

    @property
    def version(self) -> str:
        return f"{'ort' if self.backend == 'onnxruntime' else 'litert'}-{self.precision}"

    def config(self, threads: int) -> PluginConfig:
        if self.backend == "onnxruntime":
            return OrtBackendConfig(intra_op_threads=threads, inter_op_threads=1)
        return LiteRtBackendConfig(num_threads=threads)


VARIANTS = tuple(Variant(b, p) for b in ("onnxruntime", "litert") for p in ("fp32", "int8"))
TFLITE_DEMO = "models/demo-hazard-classifier-tflite"
DEMO_BUNDLES = {
    variant: REPO / TFLITE_DEMO / version
    for variant, version in zip(
        VARIANTS, ("1.0.0-onnx", "1.0.0-onnx-int8", "1.0.0-fp32", "1.0.0-int8"), strict=True
    )
}
SMALL_CALLS_FACTOR = 5


class BenchmarkError(RuntimeError):
    """The benchmark could not set itself up or a variant misbehaved."""


# --------------------------------------------------------------------------- models


def scenes(n: int, seed: int) -> list[NDArray[np.uint8]]:
    rng = np.random.default_rng(seed)
    return [render_scene(SCENE_KINDS[i % 3], rng, 640, 480, t=float(i)) for i in range(n)]


def input_spec(layout: str) -> dict[str, Any]:
    shape = [1, 3, INPUT, INPUT] if layout == "NCHW" else [1, INPUT, INPUT, 3]
    return {
        "name": "image",
        "shape": shape,
        "layout": layout,
        "dtype": "float32",
        "color": "RGB",
        "resize": "stretch",
        "scale": 1.0 / 255.0,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
    }


def build_bundles(root: Path, overwrite: bool) -> None:
    """The four bundles under ``root/NAME/<version>`` (needs onnx and tensorflow: ``tools``)."""
    from runtime.manifest import InputSpec
    from runtime.processing.preprocess import Preprocessor
    from tools.onnx_builders import mobilenet_v2_onnx, serialize
    from tools.tflite_export import onnx_int8_qdq, onnx_to_tflite, tflite_io

    started = time.perf_counter()
    model = mobilenet_v2_onnx(num_classes=1000, input_hw=INPUT, seed=SEED, batch=1)
    preprocess = Preprocessor(InputSpec.model_validate(input_spec("NCHW")))
    calibration = np.concatenate(
        [preprocess(image)[0] for image in scenes(CALIBRATION_FRAMES, seed=SEED + 1)]
    )
    common: dict[str, Any] = {
        "description": "MobileNetV2 topology with seeded random weights, for backend "
        "benchmarks (benchmarks/backends.py); its predictions mean nothing.",
        "labels": [],
        "postprocess": {"type": "classify", "softmax": True, "top_k": 5},
        "provenance": {"generator": "benchmarks/backends.py", "seed": SEED},
    }
    logits = {"name": "logits", "shape": [1, 1000], "dtype": "float32"}
    onnx_fields = {**common, "inputs": [input_spec("NCHW")], "outputs": [logits]}
    encodings: list[tuple[str, bytes, dict[str, Any], str]] = [
        ("ort-fp32", serialize(model), onnx_fields, "model.onnx"),
        ("ort-int8", onnx_int8_qdq(model, calibration), onnx_fields, "model.onnx"),
    ]
    for version, data in (
        ("litert-fp32", onnx_to_tflite(model)),
        ("litert-int8", onnx_to_tflite(model, calibration)),
    ):
        (inp,), outputs = tflite_io(data)
        spec = {**input_spec("NHWC"), "dtype": inp.dtype}
        if inp.quantization is not None:
            spec["quantization"] = {"scale": inp.quantization[0], "zero_point": inp.quantization[1]}
        outs = [
            {
                "name": o.name,
                "shape": list(o.shape),
                "dtype": o.dtype,
                **(
                    {}
                    if o.quantization is None
                    else {
                        "quantization": {
                            "scale": o.quantization[0],
                            "zero_point": o.quantization[1],
                        }
                    }
                ),
            }
            for o in outputs
        ]
        fields = {**common, "backend": "litert", "inputs": [spec], "outputs": outs}
        encodings.append((version, data, fields, TFLITE_FILE))
    for version, data, fields, file_name in encodings:
        write_bundle(root, NAME, version, data, fields, overwrite=overwrite, file_name=file_name)
    progress(f"built the four encodings in {time.perf_counter() - started:.0f} s under {root}")


def ensure_bundles(root: Path, rebuild: bool) -> dict[Variant, Path]:
    bundles = {v: root / NAME / v.version for v in VARIANTS}
    if rebuild or not all((b / "manifest.json").is_file() for b in bundles.values()):
        progress(f"building the benchmark models into {root / NAME} (cached for next time)")
        build_bundles(root, overwrite=True)
    return bundles


# --------------------------------------------------------------------------- raw calls


def raw_ort(bundle: Path, config: OrtBackendConfig) -> Callable[[NDArray[np.generic]], object]:
    manifest = read_manifest(bundle)
    session = ort.InferenceSession(
        str(bundle / manifest.file), session_options(config), providers=config.providers
    )
    input_name = session.get_inputs()[0].name
    output_names = [o.name for o in session.get_outputs()]

    def call(tensor: NDArray[np.generic]) -> object:
        return session.run(output_names, {input_name: tensor})

    return call


def raw_litert(
    bundle: Path, config: LiteRtBackendConfig
) -> Callable[[NDArray[np.generic]], object]:
    from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-untyped]

    manifest = read_manifest(bundle)
    interpreter = Interpreter(
        model_path=str(bundle / manifest.file), num_threads=config.num_threads
    )
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]

    def call(tensor: NDArray[np.generic]) -> object:
        interpreter.set_tensor(input_index, tensor)
        interpreter.invoke()
        return interpreter.get_tensor(output_index)

    return call


# --------------------------------------------------------------------------- measuring


def time_calls(
    call: Callable[[NDArray[np.generic]], object], tensors: Sequence[NDArray[np.generic]], n: int
) -> list[float]:
    """Milliseconds per call, cycling through ``tensors``."""
    times = []
    for i in range(n):
        tensor = tensors[i % len(tensors)]
        start = time.perf_counter_ns()
        call(tensor)
        times.append((time.perf_counter_ns() - start) / 1e6)
    return times


def interleaved(
    calls: dict[str, Callable[[NDArray[np.generic]], object]],
    tensors: Sequence[NDArray[np.generic]],
    n: int,
) -> dict[str, list[float]]:
    """``n`` timed calls of each, in blocks of :data:`BLOCK` taking turns (A B B A ...), so a
    load spike from other processes lands on both about equally."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    turn = 0
    while any(len(t) < n for t in times.values()):
        order = names if turn % 2 == 0 else names[::-1]
        for name in order:
            k = min(BLOCK, n - len(times[name]))
            times[name] += time_calls(calls[name], tensors, k)
        turn += 1
    return times


@dataclass(frozen=True, slots=True)
class Cell:
    variant: Variant
    threads: int
    raw_p50: Summary
    ew_p50: Summary
    ew_p99: Summary
    overhead: Summary  # fraction of raw p50, per run
    overhead_us: Summary  # edgewatch p50 - raw p50, per run

    def row(self) -> list[object]:
        ok = self.overhead.median <= TARGET_OVERHEAD
        return [
            self.variant.backend,
            self.variant.precision.upper(),
            self.threads,
            fmt(self.raw_p50.median, 2),
            fmt(self.ew_p50.median, 2),
            fmt(self.ew_p99.median, 2),
            fmt(1000.0 / self.ew_p50.median if self.ew_p50.median > 0 else math.nan, 0),
            f"{self.overhead_us.median:+.0f}",
            f"{self.overhead.median * 100:+.1f} % ({self.overhead.minimum * 100:+.1f}…"
            f"{self.overhead.maximum * 100:+.1f})",
            "✔" if ok else "✘",
        ]


def bench_cell(
    variant: Variant,
    bundle: Path,
    threads: int,
    images: Sequence[NDArray[np.uint8]],
    runs: int,
    calls: int,
) -> Cell:
    config = variant.config(threads)
    model = LoadedModel.load(bundle, config)
    try:
        if model.preprocessor is None:
            raise BenchmarkError(f"{bundle}: expected an image model")
        tensors = [model.preprocessor(image)[0] for image in images]
        if isinstance(config, OrtBackendConfig):
            raw = raw_ort(bundle, config)
        else:
            assert isinstance(config, LiteRtBackendConfig)
            raw = raw_litert(bundle, config)
        time_calls(raw, tensors, 3)  # warm-up; LoadedModel.load warmed its own session
        raw_p50s, ew_p50s, ew_p99s, overheads, overheads_us = [], [], [], [], []
        for _ in range(runs):
            blocks = interleaved({"raw": raw, "ew": model.infer}, tensors, calls)
            raw_p50s.append(p50(blocks["raw"]))
            ew_p50s.append(p50(blocks["ew"]))
            ew_p99s.append(p99(blocks["ew"]))
            overheads.append(ew_p50s[-1] / raw_p50s[-1] - 1.0)
            overheads_us.append((ew_p50s[-1] - raw_p50s[-1]) * 1000.0)
    finally:
        model.close()
    cell = Cell(
        variant,
        threads,
        Summary.of(raw_p50s),
        Summary.of(ew_p50s),
        Summary.of(ew_p99s),
        Summary.of(overheads),
        Summary.of(overheads_us),
    )
    progress(
        f"{variant.version} x{threads}: raw p50 {cell.raw_p50.median:.2f} ms, edgewatch p50 "
        f"{cell.ew_p50.median:.2f} ms, overhead {cell.overhead.median * 100:+.1f} %"
    )
    return cell


def parity(bundles: dict[Variant, Path], images: Sequence[NDArray[np.uint8]]) -> str:
    """How close the encodings' logits are on the benchmark frames, through edgewatch."""
    outputs: dict[Variant, NDArray[np.float32]] = {}
    for variant, bundle in bundles.items():
        model = LoadedModel.load(bundle, variant.config(1))
        try:
            assert model.preprocessor is not None
            preprocess = model.preprocessor
            outputs[variant] = np.concatenate(
                [model.infer(preprocess(image)[0])[0] for image in images]
            )
        finally:
            model.close()
    base = outputs[VARIANTS[0]]
    parts = []
    for variant, out in outputs.items():
        if variant == VARIANTS[0]:
            continue
        same = int(np.sum(out.argmax(axis=1) == base.argmax(axis=1)))
        parts.append(
            f"{variant.version}: max |Δ| {np.abs(out - base).max():.2g}, top-1 {same}/{len(images)}"
        )
    scale = float(np.abs(base).max())
    return f"logits vs ort-fp32 (|logit| up to {scale:.1f}) — " + "; ".join(parts)


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="backends.py", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per cell (7)")
    parser.add_argument("--calls", type=int, default=60, help="timed calls of each per run (60)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="(1 2)")
    parser.add_argument("--quick", action="store_true", help="2 runs of 10 calls: a smoke test")
    parser.add_argument("--cache", type=Path, default=CACHE, help="model cache (build/...)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached models")
    parser.add_argument("--json", type=Path, default=None, help="save the results here")
    parser.add_argument("--log-level", default="WARNING", help="runtime log level (WARNING)")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.calls = 2, 10
    if args.runs < 1 or args.calls < 1 or min(args.threads) < 1:
        parser.error("--runs, --calls and --threads must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    started = time.perf_counter()
    bundles = ensure_bundles(args.cache, args.rebuild)
    machine = machine_description(PACKAGES)
    images = scenes(FRAMES, seed=SEED + 2)
    cells = [
        bench_cell(variant, bundles[variant], threads, images, args.runs, args.calls)
        for threads in args.threads
        for variant in VARIANTS
    ]
    progress("fixed cost per call, on the small demo classifier in the same four encodings")
    small = [
        bench_cell(variant, bundle, 1, images, args.runs, args.calls * SMALL_CALLS_FACTOR)
        for variant, bundle in DEMO_BUNDLES.items()
    ]
    agreement = parity(bundles, images)
    headers = [
        "backend",
        "precision",
        "threads",
        "raw p50 ms",
        "edgewatch p50 ms",
        "edgewatch p99 ms",
        "inferences/s",
        "overhead µs",
        "overhead (min…max over runs)",
        "≤ 5 %",
    ]
    print(f"# backend benchmark\n\n{machine}\n")
    print(
        f"MobileNetV2 224x224, 3.5 M parameters, seeded random weights; {args.runs} runs x "
        f"{args.calls} calls per cell on {FRAMES} generated frames; medians over runs\n"
    )
    print(markdown_table(headers, [c.row() for c in cells], align="llrrrrrrrc"))
    print(f"\n{agreement}")
    print(
        f"\nedgewatch's fixed cost per call, measured where it is not lost in the noise: the "
        f"64x64 demo classifier ({TFLITE_DEMO}) in the same four encodings, 1 thread, "
        f"{args.runs} runs x {args.calls * SMALL_CALLS_FACTOR} calls\n"
    )
    print(
        markdown_table(
            ["backend", "precision", "raw p50 µs", "edgewatch p50 µs", "overhead µs"],
            [
                [
                    c.variant.backend,
                    c.variant.precision.upper(),
                    fmt(c.raw_p50.median * 1000, 0),
                    fmt(c.ew_p50.median * 1000, 0),
                    f"{c.overhead_us.median:+.0f}",
                ]
                for c in small
            ],
            align="llrrr",
        )
    )
    worst = max(c.overhead.median for c in cells)
    verdict = "PASS" if worst <= TARGET_OVERHEAD else "MISS"
    print(f"\ntarget edgewatch overhead <= 5 % per call: {verdict} (worst {worst * 100:+.1f} %)")
    progress(f"done in {time.perf_counter() - started:.0f} s")
    if args.json is not None:
        doc = {
            "benchmark": "backends",
            "machine": machine,
            "settings": {"runs": args.runs, "calls": args.calls, "threads": args.threads},
            "cells": [
                {
                    "backend": c.variant.backend,
                    "precision": c.variant.precision,
                    "threads": c.threads,
                    "raw_p50_ms": c.raw_p50.as_dict(),
                    "edgewatch_p50_ms": c.ew_p50.as_dict(),
                    "edgewatch_p99_ms": c.ew_p99.as_dict(),
                    "overhead": c.overhead.as_dict(),
                    "overhead_us": c.overhead_us.as_dict(),
                }
                for c in cells
            ],
            "parity": agreement,
            "fixed_cost_us": {
                c.variant.version: {
                    "raw_p50_us": c.raw_p50.median * 1000,
                    "edgewatch_p50_us": c.ew_p50.median * 1000,
                    "overhead_us": c.overhead_us.as_dict(),
                }
                for c in small
            },
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        progress(f"results saved to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
