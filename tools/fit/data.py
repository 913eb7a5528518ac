"""Normal-operation recordings (CSV or JSONL) → per-key count windows → feature vectors.

Windows and features use the runtime's own :class:`runtime.processing.features.FeatureSpec`, so
the vectors a fitted model sees in training are the ones the device computes.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.processing.features import FeatureSpec

logger = logging.getLogger(__name__)

DEFAULT_FEATURES = FeatureSpec(time=["mean", "std", "rms", "peak", "kurtosis", "skewness"])
_NO_KEY = ""


@dataclass(frozen=True, slots=True)
class Recording:
    """Readings of one key in file order: ``values`` (n, F), ``timestamps_ns`` (n,)."""

    key: str
    fields: tuple[str, ...]
    values: NDArray[np.float64]
    timestamps_ns: NDArray[np.int64]

    def __post_init__(self) -> None:
        n = self.values.shape[0]
        if self.values.shape != (n, len(self.fields)) or self.timestamps_ns.shape != (n,):
            raise ValueError(
                f"recording {self.key!r}: expected values (n, {len(self.fields)}) and timestamps "
                f"(n,), got {self.values.shape} and {self.timestamps_ns.shape}"
            )


@dataclass(frozen=True, slots=True)
class WindowBatch:
    """``data`` (B, n, F), ``timestamps_ns`` (B, n) and the key of every window."""

    data: NDArray[np.float64]
    timestamps_ns: NDArray[np.int64]
    keys: tuple[str, ...]


def parse_timestamp_ns(value: Any, where: str) -> int:
    """Seconds since the epoch (a number or numeric string) or an ISO 8601 string → ns."""
    if isinstance(value, bool):
        raise ValueError(f"{where}: timestamp {value!r} is a boolean; expected seconds or ISO 8601")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = datetime.fromisoformat(value).timestamp()
            except ValueError as exc:
                raise ValueError(
                    f"{where}: timestamp {value!r} is neither seconds nor ISO 8601"
                ) from exc
    else:
        raise ValueError(f"{where}: timestamp {value!r}: expected seconds or ISO 8601")
    if not math.isfinite(seconds):
        raise ValueError(f"{where}: timestamp {value!r} is not finite")
    return round(seconds * 1e9)


def _number(value: Any, field: str, where: str) -> float:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{where}: field {field!r} is {value!r}; expected a number")
    try:
        x = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: field {field!r} is {value!r}; expected a number") from exc
    if not math.isfinite(x):
        raise ValueError(f"{where}: field {field!r} is {value!r}; expected a finite number")
    return x


def _rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            for i, row in enumerate(csv.DictReader(f), start=2):
                yield f"{path}:{i}", row
    elif suffix in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{i}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{where}: invalid JSON: {exc.msg}") from exc
                if not isinstance(obj, dict):
                    raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
                yield where, obj
    else:
        raise ValueError(f"recording {path}: expected a .csv or .jsonl file")


def load_recordings(
    path: Path,
    fields: Sequence[str],
    *,
    key_column: str | None = None,
    timestamp_column: str | None = None,
) -> list[Recording]:
    """One :class:`Recording` per key (in order of first appearance), readings sorted by time.

    Without a timestamp column, readings are one second apart in file order. Any missing or
    non-numeric value is an error naming the file, line and field.
    """
    if not fields:
        raise ValueError("recording: no fields selected")
    per_key: dict[str, tuple[list[list[float]], list[int]]] = {}
    for where, row in _rows(Path(path)):
        missing = [c for c in (*fields, key_column, timestamp_column) if c and c not in row]
        if missing:
            raise ValueError(f"{where}: missing column(s) {', '.join(missing)}")
        key = str(row[key_column]) if key_column else _NO_KEY
        values, stamps = per_key.setdefault(key, ([], []))
        values.append([_number(row[f], f, where) for f in fields])
        stamps.append(
            parse_timestamp_ns(row[timestamp_column], where)
            if timestamp_column
            else len(stamps) * 1_000_000_000
        )
    if not per_key:
        raise ValueError(f"recording {path}: no readings")
    out: list[Recording] = []
    for key, (values, stamps) in per_key.items():
        ts = np.asarray(stamps, dtype=np.int64)
        order = np.argsort(ts, kind="stable")
        out.append(Recording(key, tuple(fields), np.asarray(values, np.float64)[order], ts[order]))
    return out


def make_windows(recordings: Sequence[Recording], window: int, hop: int) -> WindowBatch:
    """Count windows of ``window`` readings every ``hop`` readings, per key; a key's trailing
    readings that don't fill a window are left out."""
    if window < 2 or hop < 1:
        raise ValueError(f"windows: expected window >= 2 and hop >= 1, got {window} and {hop}")
    data: list[NDArray[np.float64]] = []
    stamps: list[NDArray[np.int64]] = []
    keys: list[str] = []
    for rec in recordings:
        n = rec.values.shape[0]
        starts = np.arange(0, n - window + 1, hop)
        if starts.size == 0:
            logger.warning("key %r: %d readings, fewer than one window of %d", rec.key, n, window)
            continue
        idx = starts[:, None] + np.arange(window)[None, :]
        data.append(rec.values[idx])
        stamps.append(rec.timestamps_ns[idx])
        keys += [rec.key] * starts.size
    if not keys:
        raise ValueError(f"windows: no key has a full window of {window} readings")
    return WindowBatch(np.concatenate(data), np.concatenate(stamps), tuple(keys))


def featurise(batch: WindowBatch, spec: FeatureSpec = DEFAULT_FEATURES) -> NDArray[np.float32]:
    """(B, n_features) float32 in ``spec.names(fields)`` order."""
    return spec.compute(batch.data, batch.timestamps_ns)
