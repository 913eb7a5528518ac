"""Source vs exported outputs on the same inputs: max abs diff per output and top-1 agreement."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tools.export import ExportError


@dataclass(frozen=True, slots=True)
class Verification:
    samples: int
    max_abs_diff: float  # over every float output
    per_output: dict[str, float]  # float outputs: max abs diff; integer ones: agreement
    top1_agreement: float | None  # first class-score or label output, else None
    atol: float
    min_top1_agreement: float

    @property
    def passed(self) -> bool:
        top1_ok = self.top1_agreement is None or self.top1_agreement >= self.min_top1_agreement
        return self.max_abs_diff <= self.atol and top1_ok

    def problems(self) -> list[str]:
        found = []
        if self.max_abs_diff > self.atol:
            found.append(f"max abs diff {self.max_abs_diff:.3g} > tolerance {self.atol:.3g}")
        if self.top1_agreement is not None and self.top1_agreement < self.min_top1_agreement:
            found.append(
                f"top-1 agreement {self.top1_agreement:.4f} < {self.min_top1_agreement:.4f}"
            )
        return found

    def as_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "max_abs_diff": self.max_abs_diff,
            "per_output": self.per_output,
            "top1_agreement": self.top1_agreement,
            "atol": self.atol,
            "min_top1_agreement": self.min_top1_agreement,
            "passed": self.passed,
        }

    def summary(self) -> str:
        top1 = "n/a" if self.top1_agreement is None else f"{self.top1_agreement:.4f}"
        return (
            f"verified on {self.samples} samples: max abs diff {self.max_abs_diff:.3g} "
            f"(tolerance {self.atol:.3g}), top-1 agreement {top1}"
        )


def compare(
    names: Sequence[str],
    reference: Sequence[NDArray[Any]],
    exported: Sequence[NDArray[Any]],
    *,
    atol: float,
    min_top1_agreement: float,
) -> Verification:
    if not (len(names) == len(reference) == len(exported)):
        raise ExportError(
            f"source has {len(reference)} outputs, exported model {len(exported)} ({list(names)})"
        )
    per_output: dict[str, float] = {}
    max_diff = 0.0
    top1: float | None = None
    samples = 0
    for name, ref_values, out_values in zip(names, reference, exported, strict=True):
        ref, out = np.asarray(ref_values), np.asarray(out_values)
        if ref.size != out.size:
            raise ExportError(
                f"output {name!r}: source shape {list(ref.shape)}, exported {list(out.shape)}"
            )
        out = out.reshape(ref.shape)
        samples = max(samples, ref.shape[0] if ref.ndim else 1)
        if np.issubdtype(out.dtype, np.floating):
            diff = float(np.max(np.abs(ref.astype(np.float64) - out.astype(np.float64))))
            diff = diff if np.isfinite(diff) else math.inf  # NaN in either model fails
            per_output[name] = diff
            max_diff = max(max_diff, diff)
            if top1 is None and ref.ndim == 2 and ref.shape[1] >= 2:
                top1 = float(np.mean(np.argmax(ref, axis=1) == np.argmax(out, axis=1)))
        else:
            agreement = float(np.mean(ref == out))
            per_output[name] = agreement
            if top1 is None and ref.ndim == 1:
                top1 = agreement
    return Verification(samples, max_diff, per_output, top1, atol, min_top1_agreement)
