"""When the MQTT link tries to (re)connect: jittered exponential back-off that ``stop`` cuts short.

paho's own reconnect delay doubles without jitter, so every device that lost the same broker
retries in lockstep. ``MqttLink`` sets paho's delay to ``PAHO_DELAY_S`` and instead waits in
paho's ``on_pre_connect`` hook (called on the network thread right before each connect attempt)
for a delay drawn by ``ReconnectPacer``:

* the first attempt of a link goes at once;
* every later one waits ``Backoff(reconnect_min_s, reconnect_max_s, factor 2, jitter 0.5)``: the
  n-th delay is uniform in ``[b/2, b]`` with ``b = min(max, min * 2**n)``;
* the schedule starts again from ``reconnect_min_s`` after a connection that stayed up for
  ``stable_s``. A connection the broker drops at once (a second device with the same client id
  taking the session over, an ACL kick) keeps backing off instead of hammering the broker;
* ``stop()`` wakes the wait at once, and ``wait()`` then returns False so the link aborts the
  attempt (``LinkStopping``): shutdown is never delayed by a back-off.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from runtime.sources._backoff import Backoff

RECONNECT_JITTER = 0.5
STABLE_CONNECTION_S = 10.0
PAHO_DELAY_S = 0.01
"""paho's own fixed wait between attempts (it still runs its loop between them): tiny, since the
pacer does the real waiting, but not 0, so a bug can never make paho spin."""


class LinkStopping(ConnectionAbortedError):
    """Raised from ``on_pre_connect`` once the link is stopping: paho handles an ``OSError``
    there as a failed attempt, and its loop then sees the stop and exits."""


class ReconnectPacer:
    """Back-off state of one link's connect attempts. ``next_delay``/``wait`` and ``connected``
    are called on paho's network thread only; ``stop`` from any thread."""

    def __init__(
        self,
        backoff: Backoff,
        *,
        stable_s: float = STABLE_CONNECTION_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if stable_s < 0:
            raise ValueError(f"stable_s must be >= 0, got {stable_s}")
        self._backoff = backoff
        self._stable_s = stable_s
        self._clock = clock
        self._stop = threading.Event()
        self._first = True
        self._connected_at: float | None = None
        self.last_delay_s = 0.0

    @classmethod
    def for_link(cls, min_s: float, max_s: float) -> ReconnectPacer:
        return cls(Backoff(min_s, max_s, factor=2.0, jitter=RECONNECT_JITTER))

    @property
    def attempts(self) -> int:
        """Delays drawn since the schedule last started again."""
        return self._backoff.attempts

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def connected(self) -> None:
        """The broker accepted a connection (a successful CONNACK)."""
        self._connected_at = self._clock()

    def next_delay(self) -> float:
        """Seconds to wait before the coming connect attempt; each call advances the schedule."""
        if self._first:
            self._first = False
            delay = 0.0
        else:
            if self._connected_at is not None:
                up_s = self._clock() - self._connected_at
                self._connected_at = None
                if up_s >= self._stable_s:
                    self._backoff.reset()
            delay = self._backoff.next_delay()
        self.last_delay_s = delay
        return delay

    def wait(self) -> bool:
        """Wait ``next_delay()`` seconds; False (at once) if ``stop`` was or is called."""
        if self._stop.is_set():
            return False
        delay = self.next_delay()
        return not (self._stop.wait(delay) if delay > 0 else self._stop.is_set())

    def stop(self) -> None:
        self._stop.set()


__all__ = [
    "PAHO_DELAY_S",
    "RECONNECT_JITTER",
    "STABLE_CONNECTION_S",
    "LinkStopping",
    "ReconnectPacer",
]
