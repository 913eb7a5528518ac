"""Helpers shared by the benchmark scripts: statistics, repeated runs, machine facts, tables.

Benchmarks run as scripts (``python benchmarks/<name>.py``), so they import this module as
``_common`` from their own folder. Nothing here imports the runtime.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

DEFAULT_PACKAGES = ("onnxruntime", "opencv-python-headless", "numpy", "paho-mqtt")


def _finite(values: Iterable[float]) -> list[float]:
    return sorted(v for v in values if math.isfinite(v))


def percentile(values: Iterable[float], q: float) -> float:
    """Linear-interpolated ``q``-th percentile (0-100) of the finite values; NaN when none."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    data = _finite(values)
    if not data:
        return math.nan
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def median(values: Iterable[float]) -> float:
    return percentile(values, 50)


def p50(values: Iterable[float]) -> float:
    return percentile(values, 50)


def p99(values: Iterable[float]) -> float:
    return percentile(values, 99)


def rate(count: int, seconds: float) -> float:
    """Items per second; NaN for a zero or negative duration instead of a ZeroDivisionError."""
    return count / seconds if seconds > 0 else math.nan


@dataclass(frozen=True, slots=True)
class Summary:
    """One metric over repeated runs. Non-finite values (a run that had nothing to measure) are
    left out; ``runs`` counts the values that were kept."""

    median: float
    minimum: float
    maximum: float
    runs: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Summary:
        data = _finite(values)
        if not data:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(median(data), data[0], data[-1], len(data))

    def as_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "min": self.minimum, "max": self.maximum, "runs": self.runs}


RunResult = Mapping[str, float]


def repeat_runs(
    runs: int,
    run_once: Callable[[int], RunResult],
    on_run: Callable[[int, RunResult], None] | None = None,
) -> tuple[list[dict[str, float]], dict[str, Summary]]:
    """Call ``run_once(i)`` for i in 1..runs; return every run's metrics and their summaries.

    A metric missing from some runs is summarised over the runs that have it. Summaries keep the
    order in which metrics first appeared.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    results: list[dict[str, float]] = []
    for i in range(1, runs + 1):
        result = dict(run_once(i))
        results.append(result)
        if on_run is not None:
            on_run(i, result)
    return results, summarize(results)


def summarize(results: Sequence[RunResult]) -> dict[str, Summary]:
    keys: dict[str, None] = {}
    for result in results:
        keys.update(dict.fromkeys(result))
    return {k: Summary.of(r[k] for r in results if k in r) for k in keys}


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:  # not Linux
        text = ""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def package_versions(packages: Sequence[str] = DEFAULT_PACKAGES) -> dict[str, str]:
    versions: dict[str, str] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def machine_description(packages: Sequence[str] = DEFAULT_PACKAGES) -> str:
    """One line naming the CPU, cores, load, Python and package versions, and the date (UTC)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cores = f"{os.cpu_count()} cores" + (f" ({usable} usable)" if usable is not None else "")
    load = load_average()
    parts = [cpu_model(), cores]
    if load is not None:
        parts.append("load {:.2f} {:.2f} {:.2f}".format(*load))
    parts.append(f"Python {platform.python_version()}")
    parts += [f"{name} {version}" for name, version in package_versions(packages).items()]
    parts.append(dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"))
    return " | ".join(parts)


def fmt(value: float | int | str | None, digits: int = 1) -> str:
    """A table cell: numbers with ``digits`` decimals, NaN/None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None
) -> str:
    """A GitHub-flavoured markdown table. ``align`` has one of ``l``/``r``/``c`` per column
    (default: first column left, the rest right)."""
    width = len(headers)
    if align is None:
        align = "l" + "r" * (width - 1)
    if len(align) != width or set(align) - set("lrc"):
        raise ValueError(f"align must have {width} letters from 'lrc', got {align!r}")
    for i, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"row {i} has {len(row)} cells, expected {width}: {row!r}")
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(3, *(len(r[i]) for r in cells)) for i in range(width)]

    def line(row: Sequence[str]) -> str:
        padded = []
        for text, w, a in zip(row, widths, align, strict=True):
            padded.append(
                text.ljust(w) if a == "l" else text.center(w) if a == "c" else text.rjust(w)
            )
        return "| " + " | ".join(padded) + " |"

    rule = {
        "l": lambda w: ":" + "-" * (w - 1),
        "r": lambda w: "-" * (w - 1) + ":",
        "c": lambda w: ":" + "-" * (w - 2) + ":",
    }
    sep = "| " + " | ".join(rule[a](w) for a, w in zip(align, widths, strict=True)) + " |"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds`` (perf_counter)."""

    def __init__(self) -> None:
        self.started = 0.0
        self.seconds = math.nan

    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.seconds = time.perf_counter() - self.started


def progress(message: str) -> None:
    """A progress line on stderr, so stdout holds only the results."""
    print(message, file=sys.stderr, flush=True)
