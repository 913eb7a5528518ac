"""Per-key sliding windows over sensor readings: reordering within a lateness, gaps, silence.

Readings of one key may arrive out of order by up to ``max_lateness_s``. They wait in a small
per-key reorder buffer (a heap) and are released in timestamp order once the key's watermark
(newest timestamp seen - lateness) passes them; anything older than the watermark on arrival is
dropped as ``late``. Released readings feed a bounded sample buffer from which windows are cut:

* ``count`` windows hold the last ``size`` samples and are emitted every ``hop`` samples once
  ``size`` samples exist.
* ``time`` windows cover ``[start, start + size)`` with ``start`` a multiple of ``hop`` since the
  epoch (the first one at or after the first reading), and are emitted once the watermark passes
  their end. Empty windows are never emitted; under-filled ones are flagged ``partial``.

When consecutive released readings are more than ``gap_s`` apart a :class:`Gap` is reported and
the key's window state is reset. ``check_silence`` reports keys that have gone quiet.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, model_validator

from runtime.config.base import StrictModel
from runtime.messages import SensorReading
from runtime.ratelimit import RateLimitedLog

logger = logging.getLogger(__name__)

DropReason = Literal["late", "missing_field", "duplicate_timestamp"]
DROP_REASONS: tuple[DropReason, ...] = ("late", "missing_field", "duplicate_timestamp")

_INTERVAL_HISTORY = 255
"""How many recent sample intervals per key feed the median used for the ``partial`` flag."""


class WindowConfig(StrictModel):
    kind: Literal["count", "time"]
    size: int | float = Field(gt=0)  # samples for count windows, seconds for time windows
    hop: int | float = Field(gt=0)  # same unit as size; 0 < hop <= size
    fields: list[str] = Field(min_length=1)
    max_lateness_s: float = Field(0.5, ge=0)
    gap_s: float | None = Field(None, gt=0)
    min_fill: float = Field(0.8, ge=0, le=1)
    max_pending: int = Field(1024, ge=1)
    """Reorder buffer bound per key; beyond it the oldest reading is released early (counted)."""
    max_window_samples: int = Field(65536, ge=1)
    """Sample buffer bound per key for time windows; beyond it the oldest sample is evicted."""

    @model_validator(mode="after")
    def _check(self) -> WindowConfig:
        if self.hop > self.size:
            raise ValueError(f"hop must be <= size, got hop={self.hop} size={self.size}")
        if self.kind == "count":
            for name, value in (("size", self.size), ("hop", self.hop)):
                if not float(value).is_integer():
                    raise ValueError(
                        f"count windows need a whole number of samples as {name}, got {value}"
                    )
        duplicates = sorted({f for f in self.fields if self.fields.count(f) > 1})
        if duplicates:
            raise ValueError(f"fields must be unique, got duplicates: {', '.join(duplicates)}")
        return self

    @property
    def size_samples(self) -> int:
        return int(self.size)

    @property
    def hop_samples(self) -> int:
        return int(self.hop)

    @property
    def size_ns(self) -> int:
        return round(self.size * 1e9)

    @property
    def hop_ns(self) -> int:
        return max(1, round(self.hop * 1e9))


@dataclass(frozen=True, slots=True)
class Window:
    """A multivariate window of one key; ``data[i, j]`` is ``fields[j]`` at ``timestamps_ns[i]``."""

    key: str
    start_ns: int
    end_ns: int  # exclusive for time windows; last timestamp + 1 for count windows
    fields: tuple[str, ...]
    timestamps_ns: NDArray[np.int64]  # (n,), strictly increasing
    data: NDArray[np.float64]  # (n, len(fields))
    partial: bool

    def __post_init__(self) -> None:
        ts, data = self.timestamps_ns, self.data
        if ts.dtype != np.int64 or ts.ndim != 1:
            raise ValueError(
                f"window {self.key!r}: expected int64 timestamps of shape (n,), got shape {ts.shape} dtype {ts.dtype}"
            )
        expected = (ts.shape[0], len(self.fields))
        if data.dtype != np.float64 or data.shape != expected:
            raise ValueError(
                f"window {self.key!r}: expected float64 data of shape {expected}, got shape {data.shape} dtype {data.dtype}"
            )

    @property
    def n_samples(self) -> int:
        return int(self.timestamps_ns.shape[0])


@dataclass(frozen=True, slots=True)
class Gap:
    """No reading of ``key`` between ``last_ts_ns`` and ``next_ts_ns``.

    ``ongoing`` gaps come from :meth:`Windower.check_silence`: the key is still silent and
    ``next_ts_ns`` is the silence check time expressed on the key's reading clock.
    """

    key: str
    last_ts_ns: int
    next_ts_ns: int
    ongoing: bool = False

    @property
    def duration_s(self) -> float:
        return (self.next_ts_ns - self.last_ts_ns) / 1e9


class _SampleBuffer:
    """Timestamps and rows in contiguous numpy arrays, bounded, with amortised O(1) appends."""

    def __init__(self, capacity: int, n_fields: int) -> None:
        self.capacity = capacity
        self._ts = np.empty(2 * capacity, np.int64)
        self._data = np.empty((2 * capacity, n_fields), np.float64)
        self._start = 0
        self._end = 0

    def __len__(self) -> int:
        return self._end - self._start

    def clear(self) -> None:
        self._start = self._end = 0

    def append(self, ts_ns: int, values: NDArray[np.float64]) -> bool:
        """Adds a row; returns True if the oldest row had to be evicted to stay bounded."""
        evicted = len(self) == self.capacity
        if evicted:
            self._start += 1
        if self._end == self._ts.shape[0]:
            n = len(self)
            self._ts[:n] = self._ts[self._start : self._end]
            self._data[:n] = self._data[self._start : self._end]
            self._start, self._end = 0, n
        self._ts[self._end] = ts_ns
        self._data[self._end] = values
        self._end += 1
        return evicted

    def first_ts(self) -> int:
        return int(self._ts[self._start])

    def timestamps(self) -> NDArray[np.int64]:
        return self._ts[self._start : self._end]

    def drop_before(self, ts_ns: int) -> None:
        self._start += int(np.searchsorted(self.timestamps(), ts_ns, side="left"))

    def copy_range(self, lo: int, hi: int | None) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Rows ``lo:hi`` of the live data (negative indices count from the end), copied, read-only."""
        ts = self._ts[self._start : self._end][lo:hi].copy()
        data = self._data[self._start : self._end][lo:hi].copy()
        ts.flags.writeable = False
        data.flags.writeable = False
        return ts, data

    def index_of(self, ts_ns: int) -> int:
        return int(np.searchsorted(self.timestamps(), ts_ns, side="left"))


@dataclass(slots=True)
class _KeyState:
    buffer: _SampleBuffer
    last_received_mono_ns: int
    pending: list[tuple[int, NDArray[np.float64]]] = field(default_factory=list)
    pending_ts: set[int] = field(default_factory=set)
    newest_ts_ns: int | None = None
    last_released_ts_ns: int | None = None
    silence_reported: bool = False
    intervals_ns: deque[int] = field(default_factory=lambda: deque(maxlen=_INTERVAL_HISTORY))
    samples_since_reset: int = 0  # count windows
    samples_since_emit: int = 0  # count windows
    next_start_ns: int | None = None  # time windows

    def reset_windows(self) -> None:
        self.buffer.clear()
        self.samples_since_reset = 0
        self.samples_since_emit = 0
        self.next_start_ns = None


class Windower:
    """Cuts per-key windows from a stream of readings. Not thread-safe: one stage thread owns it."""

    def __init__(self, config: WindowConfig) -> None:
        self.config = config
        self.fields = tuple(config.fields)
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.overflow: dict[str, int] = {"reorder": 0, "window": 0}
        self._lateness_ns = round(config.max_lateness_s * 1e9)
        self._gap_ns = None if config.gap_s is None else round(config.gap_s * 1e9)
        self._capacity = (
            config.size_samples if config.kind == "count" else config.max_window_samples
        )
        self._states: dict[str, _KeyState] = {}
        self._field_index: dict[tuple[str, ...], NDArray[np.intp] | None] = {}
        self._log = RateLimitedLog(logger)

    @property
    def keys(self) -> list[str]:
        return list(self._states)

    def push(self, reading: SensorReading) -> list[Window | Gap]:
        """Adds one reading; returns the windows and gaps it completed, in time order."""
        index = self._index_for(reading.fields)
        if index is None:
            missing = [f for f in self.fields if f not in reading.fields]
            self._drop(
                "missing_field",
                reading.key,
                "reading of %r lacks window field(s) %s (has %s)",
                reading.key,
                missing,
                list(reading.fields),
            )
            return []
        st = self._states.get(reading.key)
        if st is None:
            st = _KeyState(
                _SampleBuffer(self._capacity, len(self.fields)), reading.received_mono_ns
            )
            self._states[reading.key] = st
        st.last_received_mono_ns = reading.received_mono_ns
        st.silence_reported = False
        ts = reading.ts_ns
        if ts in st.pending_ts or ts == st.last_released_ts_ns:
            self._drop(
                "duplicate_timestamp",
                reading.key,
                "reading of %r repeats timestamp %d",
                reading.key,
                ts,
            )
            return []
        watermark = None if st.newest_ts_ns is None else st.newest_ts_ns - self._lateness_ns
        released = st.last_released_ts_ns
        if (watermark is not None and ts < watermark) or (released is not None and ts < released):
            self._drop(
                "late",
                reading.key,
                "reading of %r at %d ns is later than the %.3f s lateness allows",
                reading.key,
                ts,
                self.config.max_lateness_s,
            )
            return []
        values = np.ascontiguousarray(reading.values[index])
        heapq.heappush(st.pending, (ts, values))
        st.pending_ts.add(ts)
        if st.newest_ts_ns is None or ts > st.newest_ts_ns:
            st.newest_ts_ns = ts
        watermark = st.newest_ts_ns - self._lateness_ns
        out: list[Window | Gap] = []
        while st.pending and (
            st.pending[0][0] <= watermark or len(st.pending) > self.config.max_pending
        ):
            if st.pending[0][0] > watermark:
                self.overflow["reorder"] += 1
            self._release(reading.key, st, out)
        if self.config.kind == "time":
            limit = (
                watermark
                if st.last_released_ts_ns is None
                else max(watermark, st.last_released_ts_ns)
            )
            self._emit_time(reading.key, st, limit, out)
        return out

    def flush(self, key: str | None = None) -> list[Window | Gap]:
        """End of stream for ``key`` (or every key): releases everything pending, emits the
        remaining non-empty windows (flagged ``partial`` if under-filled) and forgets the key."""
        keys = list(self._states) if key is None else [key] if key in self._states else []
        out: list[Window | Gap] = []
        for k in keys:
            st = self._states.pop(k)
            while st.pending:
                self._release(k, st, out)
            if self.config.kind == "time":
                self._emit_time(k, st, math.inf, out)
            elif st.samples_since_emit > 0:
                n = min(len(st.buffer), self.config.size_samples)
                out.append(self._count_window(k, st, n, partial=n < self.config.size_samples))
        return out

    def check_silence(self, now_mono_ns: int) -> list[Gap]:
        """Keys with no reading (by arrival, on the monotonic clock) for more than ``gap_s``.

        Each silence is reported once; the next reading of the key re-arms it.
        """
        if self._gap_ns is None:
            return []
        gaps: list[Gap] = []
        for key, st in self._states.items():
            silent_ns = now_mono_ns - st.last_received_mono_ns
            if st.silence_reported or st.newest_ts_ns is None or silent_ns <= self._gap_ns:
                continue
            st.silence_reported = True
            gaps.append(Gap(key, st.newest_ts_ns, st.newest_ts_ns + silent_ns, ongoing=True))
            self._log.log(
                logging.WARNING,
                f"silent:{key}",
                "sensor %r silent for %.3f s",
                key,
                silent_ns / 1e9,
            )
        return gaps

    def _index_for(self, fields: tuple[str, ...]) -> NDArray[np.intp] | None:
        if fields in self._field_index:
            return self._field_index[fields]
        if len(self._field_index) >= 256:  # bounded cache: decoders produce few distinct layouts
            self._field_index.clear()
        positions = {f: i for i, f in enumerate(fields)}
        index = (
            None
            if any(f not in positions for f in self.fields)
            else np.array([positions[f] for f in self.fields], np.intp)
        )
        self._field_index[fields] = index
        return index

    def _drop(self, reason: DropReason, key: str, msg: str, *args: object) -> None:
        self.dropped[reason] += 1
        self._log.log(logging.WARNING, f"{reason}:{key}", msg + " (dropped)", *args)

    def _release(self, key: str, st: _KeyState, out: list[Window | Gap]) -> None:
        ts, values = heapq.heappop(st.pending)
        st.pending_ts.discard(ts)
        prev = st.last_released_ts_ns
        st.last_released_ts_ns = ts
        if prev is not None:
            if self._gap_ns is not None and ts - prev > self._gap_ns:
                out.append(Gap(key, prev, ts))
                st.reset_windows()
            else:
                st.intervals_ns.append(ts - prev)
                if self.config.kind == "time":
                    self._emit_time(key, st, ts, out)
        if st.buffer.append(ts, values) and self.config.kind == "time":
            self.overflow["window"] += 1  # count windows keep the last `size` samples by design
        if self.config.kind == "count":
            st.samples_since_reset += 1
            st.samples_since_emit += 1
            size, hop = self.config.size_samples, self.config.hop_samples
            if st.samples_since_reset >= size and (st.samples_since_reset - size) % hop == 0:
                out.append(self._count_window(key, st, size, partial=False))
        elif st.next_start_ns is None:
            hop_ns = self.config.hop_ns
            st.next_start_ns = -(-ts // hop_ns) * hop_ns

    def _count_window(self, key: str, st: _KeyState, n: int, *, partial: bool) -> Window:
        st.samples_since_emit = 0
        ts, data = st.buffer.copy_range(-n, None)
        return Window(key, int(ts[0]), int(ts[-1]) + 1, self.fields, ts, data, partial)

    def _emit_time(self, key: str, st: _KeyState, limit_ns: float, out: list[Window | Gap]) -> None:
        """Emits every window ending at or before ``limit_ns`` (all its readings are released)."""
        size_ns, hop_ns = self.config.size_ns, self.config.hop_ns
        buf = st.buffer
        while st.next_start_ns is not None and len(buf) > 0:
            # jump over windows that would be empty: the first one still holding the oldest sample
            first_k = (buf.first_ts() - size_ns) // hop_ns + 1
            start = max(st.next_start_ns, first_k * hop_ns)
            end = start + size_ns
            if end > limit_ns:
                st.next_start_ns = start
                break
            lo, hi = buf.index_of(start), buf.index_of(end)
            if hi > lo:
                ts, data = buf.copy_range(lo, hi)
                out.append(
                    Window(key, start, end, self.fields, ts, data, self._is_partial(st, hi - lo))
                )
            st.next_start_ns = start + hop_ns
            buf.drop_before(st.next_start_ns)

    def _is_partial(self, st: _KeyState, n: int) -> bool:
        if not st.intervals_ns:
            return True
        median_ns = float(np.median(np.fromiter(st.intervals_ns, np.int64, len(st.intervals_ns))))
        expected = self.config.size_ns / max(median_ns, 1.0)
        return n < self.config.min_fill * expected
