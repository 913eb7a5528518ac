"""Latency of two models on this machine, interleaved so both see the same CPU noise."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from runtime.model import LoadedModel


@dataclass(frozen=True, slots=True)
class Latency:
    """Per-call times in milliseconds of one model, and their median."""

    samples_ms: tuple[float, ...]

    @property
    def p50_ms(self) -> float:
        return float(np.median(self.samples_ms))

    @property
    def p90_ms(self) -> float:
        return float(np.percentile(self.samples_ms, 90))


def interleaved_latency(
    reference: LoadedModel,
    candidate: LoadedModel,
    tensors: NDArray[np.float32],
    runs: int = 50,
    warmup: int = 5,
) -> tuple[Latency, Latency]:
    """``runs`` calls of each model through :meth:`LoadedModel.infer` (the device's backend and
    input conversion), alternating reference/candidate (and which goes first) on the same
    inputs, after ``warmup`` calls each."""
    inputs = [t[np.newaxis] for t in tensors[: max(1, min(len(tensors), runs))]]
    for i in range(warmup):
        reference.infer(inputs[i % len(inputs)])
        candidate.infer(inputs[i % len(inputs)])
    times: tuple[list[float], list[float]] = ([], [])
    models = (reference, candidate)
    for i in range(runs):
        x = inputs[i % len(inputs)]
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for which in order:
            start = time.perf_counter_ns()
            models[which].infer(x)
            times[which].append((time.perf_counter_ns() - start) / 1e6)
    return Latency(tuple(times[0])), Latency(tuple(times[1]))
