"""Replay sensor source: readings from a file, paced by their timestamps (demos, benchmarks, field
debugging).

Two kinds of file: a table (``.csv`` with a header line, or ``.jsonl``; ``fields`` name the numeric
columns) or a recording made by ``edgewatch record`` (set ``decoder``; each payload is decoded as
if it had just arrived over MQTT, with the recorded arrival time).

Timeline: the first row is due at the first ``read``; row ``i`` is due ``(t_i - t_0) / speed``
later (``speed: 0`` delivers as fast as the pipeline takes them, losslessly). Pacing happens in
``read`` on the caller's thread, so a slow pipeline gets late readings, never lost ones.

Restamping (default): reading times are moved so the replay starts now and follows the wall clock
at ``speed`` (at speed 0 they keep the file's spacing). Readings decoded from a recording keep
their offset from the recorded arrival time, so payload timestamps stay consistent. Without
``restamp`` the file's own times are kept. Tables without a ``timestamp_column`` have rows
``1 / rate_hz`` apart from the replay start. With ``loop`` each pass continues the timeline one
row spacing after the previous pass's last row.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from typing import ClassVar, Literal, Self

from pydantic import Field, model_validator

from runtime.config.base import ConfigPath, PluginConfig
from runtime.errors import SourceError
from runtime.messages import SensorReading
from runtime.processing.decoders.base import KEY_PART_PATTERN, KEY_PART_RE
from runtime.sources._decoding import AnyDecoderConfig, DropCounter, build_decoder
from runtime.sources._replay_files import (
    Drop,
    Item,
    RecordingFile,
    ReplayFile,
    TabularFile,
    TabularLayout,
    check_tabular_path,
)
from runtime.sources.sensor_base import SENSOR_SOURCES, SensorSource, SensorSourceContext

logger = logging.getLogger(__name__)

DEFAULT_KEY = "replay"


class ReplaySourceConfig(PluginConfig):
    type: Literal["replay"]
    path: ConfigPath = Field(description="the file; relative to the config file")
    speed: float = Field(
        1.0, ge=0, description="1 = real time, 10 = ten times faster, 0 = as fast as possible"
    )
    loop: bool = Field(False, description="start again after the last row")
    restamp: bool = Field(
        True, description="move reading times so the replay starts now (see the module docs)"
    )
    fields: list[str] | None = Field(None, description="tables: the numeric columns, in order")
    key: str | None = Field(
        None, description=f"tables: one key for every row (default {DEFAULT_KEY!r})"
    )
    key_column: str | None = Field(None, description="tables: the column holding the key")
    timestamp_column: str | None = Field(
        None, description="tables: reading time column (epoch seconds or ISO 8601)"
    )
    rate_hz: float = Field(10.0, gt=0, description="tables without timestamp_column: rows per s")
    decoder: AnyDecoderConfig | None = Field(
        None, description="recordings made by `edgewatch record`: how a payload becomes readings"
    )

    @model_validator(mode="after")
    def _check_kind(self) -> Self:
        table_only = ("fields", "key", "key_column", "timestamp_column", "rate_hz")
        if self.decoder is not None:
            extra = [name for name in table_only if name in self.model_fields_set]
            if extra:
                raise ValueError(
                    f"replay: {', '.join(extra)} apply to tables; a recording uses its decoder"
                )
            return self
        check_tabular_path(self.path, self.fields)
        assert self.fields is not None
        if self.key is not None and self.key_column is not None:
            raise ValueError("replay: give key (one key for all rows) or key_column, not both")
        names = [*self.fields, *(n for n in (self.key, self.key_column) if n is not None)]
        for name in names:
            if not KEY_PART_RE.fullmatch(name):
                raise ValueError(f"replay: {name!r} must match {KEY_PART_PATTERN}")
        used = [*self.fields, self.key_column, self.timestamp_column]
        named = [n for n in used if n is not None]
        if len(set(named)) != len(named):
            raise ValueError(
                f"replay: fields, key_column and timestamp_column must all differ, got {named}"
            )
        return self


@SENSOR_SOURCES.register("replay")
class ReplaySource(SensorSource):
    """See the module docstring. ``read`` must be called from one thread (the pipeline's)."""

    config_type: ClassVar[type[PluginConfig]] = ReplaySourceConfig

    def __init__(
        self,
        file: ReplayFile,
        *,
        speed: float = 1.0,
        loop: bool = False,
        restamp: bool = True,
        clock_ns: tuple[int, int] | None = None,
    ) -> None:
        """``clock_ns`` (wall, monotonic) fixes the replay start for tests; default: first read."""
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        self.file = file
        self.speed = speed
        self.loop = loop
        self.restamp = restamp
        self._start_clock = clock_ns
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the file, between read() and stop()
        self._started = False
        self._ended = False
        self._items: Iterator[Item | Drop] | None = None
        self._next: Item | None = None
        self._t0: int | None = None  # the first item's time on the file clock
        self._loop_offset = 0
        self._pass_last: int | None = None
        self._pass_items = 0
        self._position = 0
        self._received = 0
        self._readings = 0
        self._loops = 0
        self._last_error: str | None = None
        self._drops = DropCounter(logger, f"replay {file.path}")

    @classmethod
    def from_config(cls, config: PluginConfig, context: SensorSourceContext) -> ReplaySource:
        if not isinstance(config, ReplaySourceConfig):
            raise TypeError(f"expected ReplaySourceConfig, got {type(config).__name__}")
        file: ReplayFile
        if config.decoder is not None:
            file = RecordingFile(config.path, build_decoder(config.decoder))
        else:
            assert config.fields is not None  # the config checked it
            layout = TabularLayout(
                fields=tuple(config.fields),
                key=config.key or DEFAULT_KEY,
                key_column=config.key_column,
                timestamp_column=config.timestamp_column,
                period_ns=round(1e9 / config.rate_hz),
            )
            file = TabularFile(config.path, layout)
        restamp = config.restamp or (config.decoder is None and config.timestamp_column is None)
        return cls(file, speed=config.speed, loop=config.loop, restamp=restamp)

    @property
    def lossless(self) -> bool:
        return self.speed == 0

    @property
    def ended(self) -> bool:
        return self._ended

    def start(self) -> None:
        with self._lock:
            if self._started:
                raise RuntimeError("a replay source can be started only once")
            self._started = True
            self.file.open()
            self._items = self.file.items()
        logger.info(
            "replaying %s at speed %g%s", self.file.path, self.speed, " (loop)" if self.loop else ""
        )

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            self._items = None
            self._next = None
            self.file.close()

    def read(self, timeout_s: float, max_readings: int = 4096) -> list[SensorReading]:
        deadline = time.monotonic_ns() + int(timeout_s * 1e9)
        out: list[SensorReading] = []
        with self._lock:
            while len(out) < max_readings and not self._stop.is_set():
                item = self._peek()
                if item is None:
                    break
                wait_ns = self._due_mono(item) - time.monotonic_ns()
                if wait_ns > 0:
                    wait_ns = min(wait_ns, deadline - time.monotonic_ns())
                    if out or wait_ns <= 0:
                        break
                    self._stop.wait(wait_ns / 1e9)
                    continue
                self._next = None
                out += self._deliver(item)
        self._readings += len(out)
        return out

    # --------------------------------------------------------------- timeline

    def _peek(self) -> Item | None:
        """The next good item (counting the bad ones), opening the next pass if looping."""
        while self._next is None:
            if self._items is None:
                return None
            entry = next(self._items, None)
            if entry is None:
                if not self._next_pass():
                    return None
                continue
            self._position += 1
            self._received += 1
            if isinstance(entry, Drop):
                self._drops.drop(entry.reason, f"{self.file.path}:{entry.line}", entry.detail)
                continue
            self._track(entry.ts_ns)
            self._next = entry
        return self._next

    def _track(self, ts_ns: int) -> None:
        if self._t0 is None:
            self._t0 = ts_ns
            if self._start_clock is None:
                self._start_clock = (time.time_ns(), time.monotonic_ns())
        self._pass_items += 1
        self._pass_last = ts_ns if self._pass_last is None else max(self._pass_last, ts_ns)

    def _next_pass(self) -> bool:
        """At the end of the file: reopen it (loop) or end. False when there is nothing more."""
        items, last = self._pass_items, self._pass_last
        if not self.loop or last is None or self._t0 is None:
            if self.loop:
                self._last_error = "no readable rows in the file; not looping"
                logger.warning("replay %s: %s", self.file.path, self._last_error)
            self._finish()
            return False
        span = last - self._t0
        gap = span // (items - 1) if items > 1 and span > 0 else 1_000_000_000
        try:
            self.file.open()
        except SourceError as e:
            self._last_error = str(e)
            logger.error("replay %s: %s", self.file.path, e)
            self._finish()
            return False
        self._loop_offset += span + gap
        self._loops += 1
        self._pass_items, self._pass_last, self._position = 0, None, 0
        self._items = self.file.items()
        return True

    def _finish(self) -> None:
        self._items = None
        self._ended = True
        self.file.close()
        logger.info(
            "replay %s ended: %d rows, %d readings", self.file.path, self._received, self._readings
        )

    def _elapsed_ns(self, ts_ns: int) -> int:
        """Replay time of a file-clock instant since the replay start (not scaled by speed)."""
        assert self._t0 is not None
        return ts_ns - self._t0 + self._loop_offset

    def _due_mono(self, item: Item) -> int:
        if self.speed == 0:
            return 0
        assert self._start_clock is not None
        return self._start_clock[1] + round(self._elapsed_ns(item.ts_ns) / self.speed)

    def restamped(self, ts_ns: int) -> int:
        """A file-clock time as delivered: restamped onto the wall clock, or shifted by loops."""
        if not self.restamp:
            return ts_ns + self._loop_offset
        assert self._start_clock is not None
        elapsed = self._elapsed_ns(ts_ns)
        return self._start_clock[0] + (elapsed if self.speed == 0 else round(elapsed / self.speed))

    def _deliver(self, item: Item) -> list[SensorReading]:
        now = time.monotonic_ns()
        return [
            dataclasses.replace(r, ts_ns=self.restamped(r.ts_ns), received_mono_ns=now)
            for r in item.readings
        ]

    def status(self) -> dict[str, object]:
        if self._ended:
            state = "ended"
        elif self._started and not self._stop.is_set():
            state = "running"
        else:
            state = "stopped"
        return {
            "type": "replay",
            "state": state,
            "path": self.file.path,
            "received": self._received,
            "readings": self._readings,
            "dropped": self._drops.counts(),
            "position": self._position,
            "loops": self._loops,
            "last_error": self._last_error or self._drops.last_error,
        }
