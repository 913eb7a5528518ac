"""Alerts to a file: one JSON object per line, appended and flushed per alert."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import BinaryIO, ClassVar, Literal

from pydantic import Field

from runtime.config.base import ConfigPath, PluginConfig
from runtime.errors import SinkError
from runtime.messages import Alert
from runtime.sinks.base import SINKS, Sink, SinkContext

logger = logging.getLogger(__name__)


class JsonlSinkConfig(PluginConfig):
    type: Literal["jsonl"]
    path: ConfigPath = Field(min_length=1, description="file to append to; parent dirs are created")


@SINKS.register("jsonl")
class JsonlSink(Sink):
    config_type: ClassVar[type[PluginConfig]] = JsonlSinkConfig

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._lock = threading.Lock()
        self._written = 0

    @classmethod
    def from_config(cls, config: PluginConfig, context: SinkContext) -> JsonlSink:
        if not isinstance(config, JsonlSinkConfig):
            raise TypeError(f"expected JsonlSinkConfig, got {type(config).__name__}")
        return cls(Path(config.path))

    def start(self) -> None:
        with self._lock:
            if self._file is not None:
                return
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("ab")
            except OSError as e:
                raise SinkError(f"jsonl sink: can't open {self.path} for appending: {e}") from e
        logger.info("jsonl sink appending alerts to %s", self.path)

    def publish(self, alert: Alert) -> None:
        line = alert.to_json() + b"\n"
        with self._lock:
            if self._file is None:
                raise SinkError(f"jsonl sink {self.path}: publish before start() or after stop()")
            try:
                self._file.write(line)
                self._file.flush()
            except OSError as e:
                raise SinkError(f"jsonl sink: writing {self.path} failed: {e}") from e
            self._written += 1

    def stop(self) -> None:
        with self._lock:
            f, self._file = self._file, None
        if f is not None:
            f.close()

    def status(self) -> dict[str, object]:
        with self._lock:
            return {"path": str(self.path), "written": self._written}
