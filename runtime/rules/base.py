from __future__ import annotations

import abc
from typing import ClassVar

from runtime.config.base import PluginConfig
from runtime.messages import Inference, RuleEvent
from runtime.registry import Registry


class Rule(abc.ABC):
    """Stateful per pipeline: sees every inference in order, emits raise/clear events."""

    config_type: ClassVar[type[PluginConfig]]

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: PluginConfig, name: str) -> Rule: ...

    @abc.abstractmethod
    def evaluate(self, inference: Inference, now_mono_ns: int) -> list[RuleEvent]: ...


RULES: Registry[type[Rule]] = Registry("rule")
