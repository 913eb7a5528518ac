"""``rate_of_change``: raise while a value changes faster than a limit, per key.

The rate is the change of the value between consecutive windows of a key divided by the time
between their ends, in units per second. A hole in the key's readings (a gap) forgets the
previous window, so a rate is never computed across it (nor from a window that ended before the
hole did but was scored after it was reported); so does a NaN value.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

from pydantic import Field, model_validator

from runtime.config.base import PluginConfig
from runtime.messages import WindowScore
from runtime.processing.windows import Gap
from runtime.ratelimit import RateLimitedLog
from runtime.rules._sensor_state import (
    DebouncedSensorRule,
    DebouncedSensorRuleConfig,
    KeyState,
    Measurement,
    expect_config,
)
from runtime.rules.sensor_base import SENSOR_RULES

logger = logging.getLogger(__name__)


class RateOfChangeConfig(DebouncedSensorRuleConfig):
    type: Literal["rate_of_change"]
    max_rate_per_s: float = Field(
        gt=0.0, allow_inf_nan=False, description="raise when the rate is beyond this (per second)"
    )
    direction: Literal["rising", "falling", "both"] = Field(
        "both", description="which changes count: increases, decreases or either"
    )
    clear_rate_per_s: float | None = Field(
        None,
        ge=0.0,
        allow_inf_nan=False,
        description="clear once the rate is at or within this (<= max_rate_per_s); "
        "defaults to max_rate_per_s",
    )

    @model_validator(mode="after")
    def _clear_within_max(self) -> RateOfChangeConfig:
        if self.clear_rate_per_s is not None and self.clear_rate_per_s > self.max_rate_per_s:
            raise ValueError(
                f"clear_rate_per_s ({self.clear_rate_per_s}) must be <= max_rate_per_s "
                f"({self.max_rate_per_s}): the alert raises beyond max_rate_per_s and clears "
                "at or within clear_rate_per_s"
            )
        return self


@SENSOR_RULES.register("rate_of_change")
class RateOfChangeRule(DebouncedSensorRule):
    config_type = RateOfChangeConfig

    def __init__(self, name: str, config: RateOfChangeConfig) -> None:
        super().__init__(
            name,
            config,
            label=config.label or f"{config.value} rate",
            value_name=f"{config.value}/s",
            threshold=config.max_rate_per_s,
        )
        self.direction = config.direction
        self.max_rate = config.max_rate_per_s
        self.clear_rate = (
            config.max_rate_per_s if config.clear_rate_per_s is None else config.clear_rate_per_s
        )
        self._rate_log = RateLimitedLog(logger)

    @classmethod
    def from_config(
        cls, config: PluginConfig, name: str, model_threshold: float
    ) -> RateOfChangeRule:
        del model_threshold
        return cls(name, expect_config(config, RateOfChangeConfig, name))

    def measure(self, window: WindowScore, state: KeyState) -> Measurement | None:
        v = self.value_of(window)
        if state.hole_end_ns is not None and window.end_ns <= state.hole_end_ns:
            return None  # from before the hole: never the start of a rate across it
        prev_value, prev_end_ns = state.prev_value, state.prev_end_ns
        if prev_end_ns is not None and window.end_ns <= prev_end_ns:
            self._rate_log.log(
                logging.WARNING,
                f"order:{window.key}",
                "rule %s: window %d of %r ends at %d ns, not after the previous one (%d ns); "
                "ignored",
                self.name,
                window.seq,
                window.key,
                window.end_ns,
                prev_end_ns,
            )
            return None
        if not math.isfinite(v):
            state.prev_value, state.prev_end_ns = math.nan, None
            return Measurement(math.nan, hit=False, miss=False)
        state.prev_value, state.prev_end_ns = v, window.end_ns
        if prev_end_ns is None:
            return None
        rate = (v - prev_value) / ((window.end_ns - prev_end_ns) / 1e9)
        if self.direction == "rising":
            speed = rate
        elif self.direction == "falling":
            speed = -rate
        else:
            speed = abs(rate)
        return Measurement(rate, hit=speed > self.max_rate, miss=speed <= self.clear_rate)

    def reset(self, state: KeyState, gap: Gap) -> None:
        state.prev_value, state.prev_end_ns = math.nan, None
        state.hole_end_ns = gap.next_ts_ns
