"""Rate-limited logging: the first occurrence is logged, repeats are counted and summarised."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable

ExcInfo = BaseException | bool | None


class RateLimiter:
    """Lets an event through at most once per ``interval_s`` per key; counts what it holds back.

    At most ``max_keys`` keys are remembered (the least recently let through is forgotten first),
    so keys built from message text can't grow without bound.
    """

    def __init__(
        self,
        interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 1024,
    ) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self._interval_s = interval_s
        self._clock = clock
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._last: dict[Hashable, float] = {}
        self._suppressed: dict[Hashable, int] = {}

    def allow(self, key: Hashable) -> int | None:
        """None to stay quiet; else how many were held back since ``key`` last got through."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            self._last.pop(key, None)
            self._last[key] = now
            while len(self._last) > self._max_keys:
                oldest = next(iter(self._last))
                del self._last[oldest]
                self._suppressed.pop(oldest, None)
            return self._suppressed.pop(key, 0)


class RateLimitedLog:
    """Logs a message for a key at most once per ``interval_s``, saying how many were suppressed."""

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._limiter = RateLimiter(interval_s, clock)

    def log(
        self,
        level: int,
        key: str,
        msg: str,
        *args: object,
        exc_info: ExcInfo = None,
    ) -> bool:
        """Log unless ``key`` was logged within the interval; returns whether it logged.

        ``exc_info`` is passed to the logger (True for the exception being handled).
        """
        suppressed = self._limiter.allow(key)
        if suppressed is None:
            return False
        if suppressed:
            msg += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        self._logger.log(level, msg, *args, exc_info=exc_info)
        return True


class RateLimitFilter(logging.Filter):
    """A ``logging.Filter`` that passes each distinct message at most once per ``interval_s``.

    Records are told apart by level and format string (``record.msg``), so a library that logs the
    same line in a loop is heard once per interval; the next one let through says how many were
    dropped. Records below ``min_level`` pass untouched (debug output stays complete).
    """

    def __init__(
        self,
        interval_s: float = 30.0,
        min_level: int = logging.INFO,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._min_level = min_level
        self._limiter = RateLimiter(interval_s, clock, max_keys=256)

    def key(self, record: logging.LogRecord) -> Hashable:
        """What makes two records "the same message"; subclasses may merge variants."""
        return (record.levelno, str(record.msg))

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self._min_level:
            return True
        suppressed = self._limiter.allow(self.key(record))
        if suppressed is None:
            return False
        if suppressed:
            record.msg = f"{record.getMessage()} ({suppressed} similar messages suppressed)"
            record.args = ()
        return True
