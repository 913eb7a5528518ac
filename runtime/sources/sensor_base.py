"""Sensor sources: where sensor readings come from (an MQTT subscription, a replayed file).

A sensor source hands readings to its pipeline in batches. It owns the decoding of its input and
counts every message it could not turn into readings by reason (``dropped``), so a bad payload
costs one counter increment and a rate-limited log line, never the pipeline.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from runtime.config.base import PluginConfig
from runtime.messages import SensorReading
from runtime.registry import Registry

if TYPE_CHECKING:
    from runtime.mqtt_link import MqttLink


@dataclass(frozen=True, slots=True)
class SensorSourceContext:
    """Collaborators a sensor source may need; built once by the app."""

    mqtt: MqttLink | None


class SensorSource(abc.ABC):
    config_type: ClassVar[type[PluginConfig]]

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: PluginConfig, context: SensorSourceContext) -> SensorSource:
        """Build from config; ConfigError when a collaborator is missing (no ``mqtt`` section)."""

    @abc.abstractmethod
    def start(self) -> None:
        """Begin receiving (subscribe, open the file). Raises SourceError when it can't."""

    @abc.abstractmethod
    def read(self, timeout_s: float, max_readings: int = 4096) -> list[SensorReading]:
        """Up to about ``max_readings`` decoded readings, in arrival order.

        Waits up to ``timeout_s`` for the first one and then returns what is ready without
        waiting further; ``[]`` after the timeout or once the source has ended.
        """

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop receiving and release resources. Idempotent."""

    @property
    @abc.abstractmethod
    def ended(self) -> bool:
        """True once a finite source (a file replayed without loop) has delivered everything."""

    @abc.abstractmethod
    def status(self) -> dict[str, object]:
        """At least: ``type``, ``state``, ``received`` (messages), ``readings``, ``dropped``
        (reason → count, every reason present), ``last_error``."""

    @property
    def lossless(self) -> bool:
        """True when every reading must be processed (a file at full speed): the source then
        waits for the pipeline instead of dropping."""
        return False


SENSOR_SOURCES: Registry[type[SensorSource]] = Registry("sensor source")
