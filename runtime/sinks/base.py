from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from runtime.config.base import PluginConfig
from runtime.messages import Alert
from runtime.registry import Registry

if TYPE_CHECKING:
    from runtime.mqtt_link import MqttLink


@dataclass(frozen=True, slots=True)
class SinkContext:
    device_id: str
    topic_prefix: str
    mqtt: MqttLink | None


class Sink(abc.ABC):
    """Delivers alerts. ``publish`` must not block the pipeline for long."""

    config_type: ClassVar[type[PluginConfig]]

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: PluginConfig, context: SinkContext) -> Sink: ...

    def start(self) -> None:  # noqa: B027 - optional hook
        """Called once before the first publish."""

    @abc.abstractmethod
    def publish(self, alert: Alert) -> None: ...

    def stop(self) -> None:  # noqa: B027 - optional hook
        """Flush and release; idempotent."""

    def status(self) -> dict[str, object]:
        return {}


SINKS: Registry[type[Sink]] = Registry("sink")
