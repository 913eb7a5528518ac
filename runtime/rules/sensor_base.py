"""Sensor rules: per-key state machines over window scores and features, and over gaps.

A sensor rule sees every scored window of its pipeline in order (``on_window``) and every gap or
silence the windower reports (``on_gap``). State is kept per sensor key: one pump's anomaly never
clears another's. Events carry a :class:`~runtime.messages.SensorDetail` naming the key, the
window, the value compared and its threshold.
"""

from __future__ import annotations

import abc
from typing import ClassVar

from runtime.config.base import PluginConfig
from runtime.messages import RuleEvent, WindowScore
from runtime.processing.windows import Gap
from runtime.registry import Registry


class SensorRule(abc.ABC):
    config_type: ClassVar[type[PluginConfig]]

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: PluginConfig, name: str, model_threshold: float) -> SensorRule:
        """``model_threshold`` is the manifest's score threshold (the default raise level)."""

    def check(self, feature_names: tuple[str, ...]) -> None:  # noqa: B027 - optional hook
        """Called once at start with the model's feature names; raise ConfigError when the
        rule names a value the model doesn't produce."""

    @abc.abstractmethod
    def on_window(self, window: WindowScore, now_mono_ns: int) -> list[RuleEvent]: ...

    def on_gap(self, gap: Gap, now_mono_ns: int) -> list[RuleEvent]:
        """A key was silent (``gap.ongoing``) or its readings had a hole; most rules ignore it."""
        del gap, now_mono_ns
        return []


SENSOR_RULES: Registry[type[SensorRule]] = Registry("sensor rule")
