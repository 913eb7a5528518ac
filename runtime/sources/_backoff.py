"""Jittered exponential backoff for reconnect loops (cameras, brokers, any plugin that retries)."""

from __future__ import annotations

import random


class Backoff:
    """Delays that grow by ``factor`` per attempt up to ``max_s``, each shortened by random jitter.

    The n-th delay (from 0) has the nominal value ``base = min(max_s, initial_s * factor**n)``
    and is drawn uniformly from ``[base * (1 - jitter), base]``: it never exceeds ``max_s``, and
    clients that lost their peer at the same moment don't retry in lockstep. ``reset()`` after a
    success starts again from ``initial_s``.
    """

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        factor: float = 2.0,
        jitter: float = 0.1,
        rng: random.Random | None = None,
    ) -> None:
        if not initial_s > 0:
            raise ValueError(f"backoff initial_s must be > 0, got {initial_s}")
        if not max_s >= initial_s:
            raise ValueError(f"backoff max_s must be >= initial_s ({initial_s}), got {max_s}")
        if not factor >= 1:
            raise ValueError(f"backoff factor must be >= 1, got {factor}")
        if not 0 <= jitter < 1:
            raise ValueError(f"backoff jitter must be in [0, 1), got {jitter}")
        self.initial_s = float(initial_s)
        self.max_s = float(max_s)
        self.factor = float(factor)
        self.jitter = float(jitter)
        self._rng = rng if rng is not None else random.Random()
        self._base = self.initial_s
        self._attempts = 0

    @property
    def attempts(self) -> int:
        """Delays handed out since construction or the last ``reset()``."""
        return self._attempts

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; each call advances the schedule."""
        base = self._base
        self._base = min(self.max_s, base * self.factor)
        self._attempts += 1
        return base * (1.0 - self.jitter * self._rng.random())

    def reset(self) -> None:
        self._base = self.initial_s
        self._attempts = 0
