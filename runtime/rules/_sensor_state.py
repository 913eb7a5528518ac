"""Shared by the sensor rules: config fields, key patterns, a bounded per-key table, and the
per-key debounce (streaks in windows and in seconds of window time) over
:class:`~runtime.rules._state.AlertStateMachine`.

A debounced sensor rule reduces each window to a :class:`Measurement` (the value it compares,
whether the raise condition holds, whether the clear condition holds). The raise streak is
counted here, because ``for_s`` needs window times; the state machine gets ``raise_frames=1``
and a hit only once the streak is long enough, and keeps its own clear streak and cooldown.
"""

from __future__ import annotations

import abc
import fnmatch
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Annotated, Generic, TypeVar

from pydantic import Field

from runtime.config.base import PluginConfig
from runtime.errors import ConfigError
from runtime.messages import RuleEvent, SensorDetail, WindowScore
from runtime.processing.windows import Gap
from runtime.ratelimit import RateLimitedLog
from runtime.rules._state import WILDCARD, AlertStateMachine, FrameMatch, Severity
from runtime.rules.sensor_base import SensorRule

logger = logging.getLogger(__name__)

T = TypeVar("T")

NEITHER = FrameMatch(hit=False, miss=False, label=None, score=math.nan)
"""A window that counts neither towards raising nor towards clearing: it breaks both streaks."""


class SensorRuleConfig(PluginConfig):
    """Fields every sensor rule shares."""

    keys: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=lambda: [WILDCARD],
        min_length=1,
        description="fnmatch patterns of the sensor keys the rule watches ('*': every key)",
    )
    severity: Severity = "warning"
    emit_clear: bool = Field(
        True, description="emit a 'cleared' event; when false the rule still resets silently"
    )
    max_keys: int = Field(
        10000,
        ge=1,
        description="keys tracked at most; beyond it the least recently seen idle key is "
        "forgotten (counted), so a flood of bogus keys can't grow memory without bound",
    )


class DebouncedSensorRuleConfig(SensorRuleConfig):
    """Fields of the rules that compare one value per window against a level."""

    value: str = Field(
        "score", min_length=1, description="'score' (the model's anomaly score) or a feature name"
    )
    for_windows: int = Field(
        1, ge=1, description="consecutive windows meeting the condition needed before raising"
    )
    for_s: float = Field(
        0.0,
        ge=0.0,
        allow_inf_nan=False,
        description="seconds of window time the condition must hold before raising: from the "
        "end of the streak's first window to the end of the current one",
    )
    clear_windows: int = Field(
        1, ge=1, description="consecutive windows past the clear level needed before clearing"
    )
    cooldown_s: float = Field(
        0.0,
        ge=0.0,
        allow_inf_nan=False,
        description="after a clear, no new raise of that key for this many seconds",
    )
    label: str | None = Field(None, min_length=1)
    top_features: int = Field(
        3, ge=0, description="contributing features named by a raised alert (largest |z|)"
    )


class KeyFilter:
    """Does a sensor key match one of the rule's fnmatch patterns (case-sensitive)?"""

    def __init__(self, patterns: list[str]) -> None:
        self._any = WILDCARD in patterns
        self._regex = re.compile("|".join(fnmatch.translate(p) for p in patterns))

    def __call__(self, key: str) -> bool:
        return self._any or self._regex.match(key) is not None


class KeyTable(Generic[T]):
    """Per-key state, at most ``max_keys`` entries, ordered by when each key was last seen.

    A new key beyond the bound evicts the least recently seen idle key (``evicted``); when no key
    is idle the new key is not tracked (``rejected``), so raised alerts are never lost.
    """

    def __init__(self, rule: str, max_keys: int, idle: Callable[[T], bool]) -> None:
        if max_keys < 1:
            raise ValueError(f"rule {rule!r}: max_keys must be >= 1, got {max_keys}")
        self.rule = rule
        self.evicted = 0
        self.rejected = 0
        self._max_keys = max_keys
        self._idle = idle
        self._states: dict[str, T] = {}
        self._log = RateLimitedLog(logger)

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, key: str) -> bool:
        return key in self._states

    def get(self, key: str, factory: Callable[[], T]) -> T | None:
        """The key's state (made by ``factory`` if new), marked most recently seen; None if the
        key is new and can't be tracked."""
        state = self._states.pop(key, None)
        if state is not None:
            self._states[key] = state
            return state
        state = factory()
        return state if self.put(key, state) else None

    def put(self, key: str, state: T) -> bool:
        """Sets the key's state, marked most recently seen; False if the key is new and can't be
        tracked."""
        known = self._states.pop(key, None) is not None
        if not known and len(self._states) >= self._max_keys and not self._evict_one():
            self.rejected += 1
            self._log.log(
                logging.WARNING,
                "rejected",
                "rule %s: %d keys tracked, none idle; not tracking key %r",
                self.rule,
                len(self._states),
                key,
            )
            return False
        self._states[key] = state
        return True

    def peek(self, key: str) -> T | None:
        """The key's state if tracked, without creating it or marking it seen."""
        return self._states.get(key)

    def pop(self, key: str) -> T | None:
        return self._states.pop(key, None)

    def _evict_one(self) -> bool:
        for key, state in self._states.items():
            if self._idle(state):
                del self._states[key]  # iteration stops here
                self.evicted += 1
                self._log.log(
                    logging.WARNING,
                    "evicted",
                    "rule %s: more than %d keys; forgot least recently seen key %r",
                    self.rule,
                    self._max_keys,
                    key,
                )
                return True
        return False


@dataclass(frozen=True, slots=True)
class Measurement:
    """One window as a rule sees it: the compared value, and which way it counts.

    ``hit``: the raise condition holds. ``miss``: the clear condition holds. Both false: the
    value sits in the hysteresis band (or is NaN) and breaks both streaks.
    """

    value: float
    hit: bool
    miss: bool


@dataclass(slots=True)
class KeyState:
    machine: AlertStateMachine
    streak: int = 0
    streak_since_ns: int = 0  # end of the streak's first window
    prev_value: float = math.nan  # rate_of_change: the previous window of this key
    prev_end_ns: int | None = None
    hole_end_ns: int | None = None  # rate_of_change: end of the latest hole (gap.next_ts_ns)


class DebouncedSensorRule(SensorRule):
    """Per key: measure each window, count the raise streak (``for_windows``/``for_s``), and let
    one :class:`AlertStateMachine` per key decide raise and clear."""

    def __init__(
        self,
        name: str,
        config: DebouncedSensorRuleConfig,
        *,
        label: str,
        value_name: str,
        threshold: float,
    ) -> None:
        self.name = name
        self.config = config
        self.label = label
        self.value_name = value_name
        self.threshold = threshold
        """The raise level reported in each event's detail."""
        self._watches = KeyFilter(config.keys)
        self._for_ns = round(config.for_s * 1e9)
        cooldown_ns = round(config.cooldown_s * 1e9)
        self._new_state = lambda: KeyState(
            AlertStateMachine(
                name,
                clear_frames=config.clear_windows,
                cooldown_ns=cooldown_ns,
                severity=config.severity,
                emit_clear=config.emit_clear,
            )
        )
        self.tracked: KeyTable[KeyState] = KeyTable(
            name, config.max_keys, lambda state: not state.machine.raised
        )
        self._log = RateLimitedLog(logger)

    @abc.abstractmethod
    def measure(self, window: WindowScore, state: KeyState) -> Measurement | None:
        """Classify one window of a key; None when there is nothing to compare yet."""

    def reset(self, state: KeyState, gap: Gap) -> None:
        """A hole in the key's readings: forget whatever spans windows (hook for subclasses)."""

    def check(self, feature_names: tuple[str, ...]) -> None:
        value = self.config.value
        if value != "score" and value not in feature_names:
            raise ConfigError(
                f"rule {self.name!r}: value {value!r} is not produced by the model; "
                f"expected 'score' or one of: {', '.join(feature_names)}"
            )

    def value_of(self, window: WindowScore) -> float:
        try:
            return window.value(self.config.value)
        except KeyError as e:
            raise ConfigError(f"rule {self.name!r}: {e.args[0]}") from e

    def on_window(self, window: WindowScore, now_mono_ns: int) -> list[RuleEvent]:
        if not self._watches(window.key):
            return []
        state = self.tracked.get(window.key, self._new_state)
        if state is None:
            return []
        m = self.measure(window, state)
        if m is not None and math.isnan(m.value):
            self._log.log(
                logging.WARNING,
                f"nan:{window.key}",
                "rule %s: %s of %r is NaN in window %d; it counts neither way",
                self.name,
                self.value_name,
                window.key,
                window.seq,
            )
        if m is None or not m.hit:
            state.streak = 0
        else:
            state.streak += 1
            if state.streak == 1:
                state.streak_since_ns = window.end_ns
        if m is None:
            match = NEITHER
        else:
            held = (
                m.hit
                and state.streak >= self.config.for_windows
                and window.end_ns - state.streak_since_ns >= self._for_ns
            )
            match = FrameMatch(hit=held, miss=m.miss, label=self.label, score=m.value)
        return [self._with_detail(e, window) for e in state.machine.step(match, now_mono_ns)]

    def on_gap(self, gap: Gap, now_mono_ns: int) -> list[RuleEvent]:
        """A hole (not an ongoing silence) breaks the streaks: windows around it aren't
        consecutive. A raised alert stays raised."""
        if gap.ongoing:
            return []
        state = self.tracked.peek(gap.key)
        if state is not None:
            state.streak = 0
            self.reset(state, gap)
            events = state.machine.step(NEITHER, now_mono_ns)  # resets the clear streak
            assert not events, "a window that counts neither way never raises or clears"
        return []

    def _with_detail(self, event: RuleEvent, window: WindowScore) -> RuleEvent:
        top = window.top_features(self.config.top_features) if event.state == "raised" else ()
        detail = SensorDetail(
            key=window.key,
            window_start_ns=window.start_ns,
            window_end_ns=window.end_ns,
            value_name=self.value_name,
            value=event.score,
            threshold=self.threshold,
            top_features=top,
        )
        return replace(event, sensor=detail)


def expect_config(config: PluginConfig, expected: type[T], name: str) -> T:
    if not isinstance(config, expected):
        raise TypeError(
            f"sensor rule {name!r}: expected {expected.__name__}, got {type(config).__name__}"
        )
    return config
