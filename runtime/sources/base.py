from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar, Literal

from runtime.config.base import PluginConfig
from runtime.health import StageClock
from runtime.messages import Frame
from runtime.registry import Registry

SourceState = Literal["starting", "running", "reconnecting", "ended", "stopped"]


@dataclass(frozen=True, slots=True)
class SourceStatus:
    name: str
    kind: str
    state: SourceState
    frames_captured: int
    frames_dropped: int
    reconnects: int
    last_error: str | None

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "state": self.state,
            "frames_captured": self.frames_captured,
            "frames_dropped": self.frames_dropped,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
        }


class FrameSource(abc.ABC):
    """Produces frames on its own thread; ``read`` returns the newest frame not yet read.

    Latest-frame semantics: when a newer frame arrives before the previous one was read, the
    older one is dropped and counted. A stale frame is never returned while a newer one exists.
    """

    config_type: ClassVar[type[PluginConfig]]
    capture_clock: StageClock | None = None
    """The capture thread's heartbeat, for sources whose backend calls can hang (the watchdog's
    ``capture`` stage); None for sources without a capture thread of their own."""

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: PluginConfig) -> FrameSource: ...

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def read(self, timeout_s: float) -> Frame | None:
        """The newest unread frame, or None after ``timeout_s`` (or once the source ended)."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the capture thread and release the device. Idempotent."""

    @property
    @abc.abstractmethod
    def ended(self) -> bool:
        """True once a finite source (a file without loop) has delivered its last frame."""

    @abc.abstractmethod
    def status(self) -> SourceStatus: ...

    def abandon_capture(self, reason: str) -> bool:
        """The capture thread is stuck in a backend call (the watchdog says why): leave it and
        capture on a new one. True if the source did; by default it can't."""
        del reason
        return False

    @property
    def lossless(self) -> bool:
        """True when every frame must be processed (a file read as fast as possible): the
        pipeline then applies back-pressure instead of dropping frames."""
        return False


SOURCES: Registry[type[FrameSource]] = Registry("source")
