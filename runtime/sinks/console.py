"""Alerts to the log: one compact INFO line per alert (the CLI configures logging)."""

from __future__ import annotations

import logging
from typing import ClassVar, Literal

from runtime.config.base import PluginConfig
from runtime.messages import Alert
from runtime.sinks.base import SINKS, Sink, SinkContext

logger = logging.getLogger(__name__)


class ConsoleSinkConfig(PluginConfig):
    type: Literal["console"]


@SINKS.register("console")
class ConsoleSink(Sink):
    config_type: ClassVar[type[PluginConfig]] = ConsoleSinkConfig

    def __init__(self) -> None:
        self._published = 0

    @classmethod
    def from_config(cls, config: PluginConfig, context: SinkContext) -> ConsoleSink:
        if not isinstance(config, ConsoleSinkConfig):
            raise TypeError(f"expected ConsoleSinkConfig, got {type(config).__name__}")
        return cls()

    def publish(self, alert: Alert) -> None:
        logger.info(
            "ALERT %s %s/%s state=%s severity=%s label=%s score=%.2f bbox=%s source=%s "
            "frame=%d seq=%d id=%s",
            alert.device_id,
            alert.pipeline,
            alert.rule,
            alert.state,
            alert.severity,
            alert.label,
            alert.score,
            "-" if alert.bbox is None else ",".join(f"{v:.0f}" for v in alert.bbox),
            alert.source,
            alert.frame_seq,
            alert.seq,
            alert.alert_id,
        )
        self._published += 1

    def status(self) -> dict[str, object]:
        return {"published": self._published}
