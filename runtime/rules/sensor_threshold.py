"""``threshold`` (sensor): raise while a window's score or feature is beyond a level, per key.

One side per rule: ``raise_above``/``clear_below`` (raise when the value is above the raise level,
clear once it is at or below the clear level) or ``raise_below``/``clear_above`` (mirrored). The
clear level defaults to the raise level; a clear level short of it gives hysteresis: values
between the two levels change nothing. ``{type: threshold}`` alone compares the model's score
with the manifest's threshold, "a score above the threshold is anomalous".
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from runtime.config.base import PluginConfig
from runtime.errors import ConfigError
from runtime.messages import WindowScore
from runtime.rules._sensor_state import (
    DebouncedSensorRule,
    DebouncedSensorRuleConfig,
    KeyState,
    Measurement,
    expect_config,
)
from runtime.rules.sensor_base import SENSOR_RULES


class SensorThresholdConfig(DebouncedSensorRuleConfig):
    type: Literal["threshold"]
    raise_above: float | None = Field(
        None,
        allow_inf_nan=False,
        description="raise when the value is above this; "
        "for value 'score' it defaults to the model threshold",
    )
    clear_below: float | None = Field(
        None,
        allow_inf_nan=False,
        description="clear at or below this (<= raise_above); defaults to raise_above",
    )
    raise_below: float | None = Field(
        None, allow_inf_nan=False, description="raise when the value is below this"
    )
    clear_above: float | None = Field(
        None,
        allow_inf_nan=False,
        description="clear at or above this (>= raise_below); defaults to raise_below",
    )

    @model_validator(mode="after")
    def _one_side(self) -> SensorThresholdConfig:
        above = self.raise_above is not None or self.clear_below is not None
        below = self.raise_below is not None or self.clear_above is not None
        if above and below:
            raise ValueError(
                "give one side: raise_above (and clear_below) or raise_below (and clear_above), "
                "not both"
            )
        if self.clear_above is not None and self.raise_below is None:
            raise ValueError("clear_above needs raise_below")
        if self.raise_above is None and self.raise_below is None and self.value != "score":
            raise ValueError(
                f"value {self.value!r} needs a level: raise_above or raise_below "
                "(only 'score' defaults to the model threshold)"
            )
        if (
            self.raise_above is not None
            and self.clear_below is not None
            and self.clear_below > self.raise_above
        ):
            raise ValueError(
                f"clear_below ({self.clear_below}) must be <= raise_above ({self.raise_above}): "
                "the alert raises above raise_above and clears at or below clear_below"
            )
        if (
            self.raise_below is not None
            and self.clear_above is not None
            and self.clear_above < self.raise_below
        ):
            raise ValueError(
                f"clear_above ({self.clear_above}) must be >= raise_below ({self.raise_below}): "
                "the alert raises below raise_below and clears at or above clear_above"
            )
        return self


@SENSOR_RULES.register("threshold")
class SensorThresholdRule(DebouncedSensorRule):
    config_type = SensorThresholdConfig

    def __init__(self, name: str, config: SensorThresholdConfig, model_threshold: float) -> None:
        self.above = config.raise_below is None
        if config.raise_below is not None:
            raise_level = config.raise_below
            clear_level = raise_level if config.clear_above is None else config.clear_above
        else:
            raise_level = model_threshold if config.raise_above is None else config.raise_above
            clear_level = raise_level if config.clear_below is None else config.clear_below
            if clear_level > raise_level:
                raise ConfigError(
                    f"rule {name!r}: clear_below ({clear_level}) must be <= the model threshold "
                    f"({raise_level}) that raise_above defaults to"
                )
        default_label = "anomaly" if config.value == "score" else config.value
        super().__init__(
            name,
            config,
            label=config.label or default_label,
            value_name=config.value,
            threshold=raise_level,
        )
        self.raise_level = raise_level
        self.clear_level = clear_level

    @classmethod
    def from_config(
        cls, config: PluginConfig, name: str, model_threshold: float
    ) -> SensorThresholdRule:
        return cls(name, expect_config(config, SensorThresholdConfig, name), model_threshold)

    def measure(self, window: WindowScore, state: KeyState) -> Measurement:
        del state
        v = self.value_of(window)  # NaN compares false both ways: counts neither
        if self.above:
            return Measurement(v, hit=v > self.raise_level, miss=v <= self.clear_level)
        return Measurement(v, hit=v < self.raise_level, miss=v >= self.clear_level)
