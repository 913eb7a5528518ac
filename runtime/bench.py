"""``edgewatch bench``: inference latency on this device per model, backend and threads.

Each combination loads its own session, is warmed up, then timed with ``perf_counter_ns``
around ``backend.run`` on random inputs of the model's declared shapes and dtypes. A measurement
is ``runs`` calls; it is repeated and the median of each statistic is reported."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.backends.base import BACKENDS, Backend, TensorInfo
from runtime.errors import ConfigError, ModelError
from runtime.inspect_model import ModelTarget, backends_for, format_table, open_backend

THREAD_SETTINGS = ("intra_op_threads", "num_threads", "threads")
"""Config fields that set a backend's compute threads, the first one a backend has wins."""

_QUANTIZED_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")


@dataclass(frozen=True, slots=True)
class BenchResult:
    model: str
    backend: str
    precision: str
    threads: int
    p50_ms: float
    p99_ms: float
    throughput_per_s: float
    runs: int
    accelerator: str
    """Active providers or delegate, from the backend."""


def run_bench(
    targets: Sequence[ModelTarget],
    threads: Sequence[int],
    runs: int,
    warmup: int,
    repeats: int = 3,
    backends: Sequence[str] | None = None,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[list[BenchResult], list[str]]:
    """Results for every combination that can run, and a note for every one that can't.
    ``settings`` holds config settings per backend key (threads come from ``threads``)."""
    results: list[BenchResult] = []
    notes: list[str] = []
    for target in targets:
        problem = target.sha256_problem()
        if problem is not None:
            raise ModelError(problem)
        usable = backends_for(target)
        for key in usable if backends is None else backends:
            if key not in usable:
                BACKENDS.get(key)  # an unknown name is an error listing the valid ones
                notes.append(f"{target.label}: backend {key} cannot load {target.model_file.name}")
                continue
            for n in threads:
                extra = (settings or {}).get(key, {})
                backend = open_backend(target, key, {**extra, thread_setting(key): n})
                try:
                    feeds = random_feeds(target, backend.inputs, shapes or {})
                    p50, p99, rate = measure(backend, feeds, runs, warmup, repeats)
                    results.append(
                        BenchResult(
                            model=target.label,
                            backend=key,
                            precision=precision(backend),
                            threads=n,
                            p50_ms=p50,
                            p99_ms=p99,
                            throughput_per_s=rate,
                            runs=runs * repeats,
                            accelerator=accelerator(backend),
                        )
                    )
                finally:
                    backend.close()
    return results, notes


def measure(
    backend: Backend, feeds: dict[str, NDArray[np.generic]], runs: int, warmup: int, repeats: int
) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, calls/s): the median of each over ``repeats`` measurements."""
    for _ in range(warmup):
        backend.run(feeds)
    p50s, p99s, rates = [], [], []
    for _ in range(repeats):
        times_ns = np.empty(runs, dtype=np.int64)
        for i in range(runs):
            start = time.perf_counter_ns()
            backend.run(feeds)
            times_ns[i] = time.perf_counter_ns() - start
        p50, p99 = np.percentile(times_ns, [50, 99]) / 1e6
        p50s.append(float(p50))
        p99s.append(float(p99))
        rates.append(runs * 1e9 / max(int(times_ns.sum()), 1))
    return statistics.median(p50s), statistics.median(p99s), statistics.median(rates)


def thread_setting(backend: str) -> str:
    fields = BACKENDS.get(backend).config_type.model_fields
    for name in THREAD_SETTINGS:
        if name in fields:
            return name
    raise ConfigError(f"backend {backend} has no thread setting (looked for {THREAD_SETTINGS})")


def random_feeds(
    target: ModelTarget, inputs: list[TensorInfo], shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, NDArray[np.generic]]:
    """Random values of each input's shape and dtype; a bundle's streaming constants as declared,
    its state inputs zeros. Dynamic dimensions are 1 unless ``shapes`` or the manifest fix them."""
    unknown = sorted(set(shapes) - {i.name for i in inputs})
    if unknown:
        raise ConfigError(
            f"--shape names {unknown}, but the model's inputs are {[i.name for i in inputs]}"
        )
    manifest = target.manifest
    declared = {} if manifest is None else {spec.name: spec.shape for spec in manifest.inputs}
    streaming = None if manifest is None else manifest.streaming
    constants = {} if streaming is None else streaming.constants
    states = set() if streaming is None else {s.input for s in streaming.state}
    rng = np.random.default_rng(0)
    feeds: dict[str, NDArray[np.generic]] = {}
    for info in inputs:
        shape = _shape(info, shapes.get(info.name), declared.get(info.name))
        dtype = np.dtype(info.dtype)
        if info.name in constants:
            feeds[info.name] = np.asarray(constants[info.name], dtype=dtype)
        elif info.name in states:
            feeds[info.name] = np.zeros(shape, dtype=dtype)
        else:
            feeds[info.name] = _random(rng, shape, dtype)
    return feeds


def _shape(
    info: TensorInfo, override: tuple[int, ...] | None, declared: list[int | str | None] | None
) -> tuple[int, ...]:
    if override is not None:
        if len(override) != len(info.shape):
            raise ConfigError(
                f"--shape {info.name}: {len(override)} dimensions, the model's input has "
                f"{len(info.shape)} ({list(info.shape)})"
            )
        return override
    fixed = declared if declared is not None and len(declared) == len(info.shape) else None
    return tuple(
        d if isinstance(d, int) else (m if fixed is not None and isinstance(m, int) else 1)
        for d, m in zip(info.shape, fixed or info.shape, strict=True)
    )


def _random(
    rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype[Any]
) -> NDArray[np.generic]:
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype == np.int8:
        return rng.integers(-128, 127, size=shape, endpoint=True).astype(np.int8)
    if dtype == np.uint8:
        return rng.integers(0, 255, size=shape, endpoint=True).astype(np.uint8)
    return np.zeros(shape, dtype=dtype)


def precision(backend: Backend) -> str:
    """int8/uint8 when the model is quantized (quantized I/O or quantize ops), fp16 for half
    floats, else fp32."""
    tensors = [*backend.inputs, *backend.outputs]
    quantized = [t.dtype for t in tensors if t.quantization is not None]
    if quantized:
        return quantized[0]
    op_types = backend.details().get("op_types")
    if isinstance(op_types, Mapping) and any(
        op in _QUANTIZED_OPS or op.startswith("QLinear") or op.endswith("Integer")
        for op in op_types
    ):
        return "int8"
    if any(t.dtype == "float16" for t in tensors):
        return "fp16"
    return "fp32"


def accelerator(backend: Backend) -> str:
    details = backend.details()
    delegate = details.get("delegate")
    if isinstance(delegate, str):
        return delegate
    return ", ".join(p.removesuffix("ExecutionProvider") for p in backend.active_providers)


def format_results(results: Sequence[BenchResult]) -> str:
    headers = ["model", "backend", "precision", "threads", "p50 ms", "p99 ms", "per s", "runs"]
    rows = [
        [
            r.model,
            r.backend,
            r.precision,
            str(r.threads),
            f"{r.p50_ms:.3f}",
            f"{r.p99_ms:.3f}",
            f"{r.throughput_per_s:.1f}",
            str(r.runs),
            r.accelerator,
        ]
        for r in results
    ]
    return format_table([*headers, "on"], rows, right=[False] * 3 + [True] * 5 + [False])
