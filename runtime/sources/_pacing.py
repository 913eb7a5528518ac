"""Frame timing of the camera source: pacing file playback and decimating live cameras."""

from __future__ import annotations

import threading
import time


class Pacer:
    """Spaces frames ``period_s`` apart on a fixed schedule (no drift, no burst after a stall)."""

    def __init__(self, period_s: float | None) -> None:
        self.period_s = period_s
        self._due: float | None = None

    def wait(self, stop: threading.Event) -> bool:
        """Sleep until the next frame is due; False if ``stop`` was set meanwhile."""
        if self.period_s is None:
            return not stop.is_set()
        now = time.monotonic()
        if self._due is None or now - self._due > self.period_s:
            self._due = now
        delay = self._due - now
        if delay > 0 and stop.wait(delay):
            return False
        self._due += self.period_s
        return not stop.is_set()


class Throttle:
    """Lets through at most one frame per ``period_s`` of a live source (decimation)."""

    def __init__(self, period_s: float | None) -> None:
        self.period_s = period_s
        self._due: float | None = None

    def admit(self, now: float) -> bool:
        if self.period_s is None:
            return True
        # a frame a little early (camera timing jitter) still counts for this slot
        if self._due is not None and now < self._due - 0.1 * self.period_s:
            return False
        on_schedule = self._due is not None and now - self._due <= self.period_s
        self._due = (self._due if on_schedule and self._due is not None else now) + self.period_s
        return True
