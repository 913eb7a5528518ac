"""Alerts to MQTT: one QoS 1 message per alert on ``<prefix>/<device>/alerts/<pipeline>``.

By default every alert goes through the durable outbox (``runtime.sinks.outbox``): written to
SQLite first, deleted on PUBACK, replayed after a reconnect or restart. ``outbox: null`` (or
``enabled: false``) publishes directly: paho then keeps alerts in memory during an outage, and
those are lost with the process.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from runtime.config.base import PluginConfig
from runtime.errors import ConfigError, SinkError
from runtime.messages import Alert
from runtime.mqtt_link import MqttLink
from runtime.sinks.base import SINKS, Sink, SinkContext
from runtime.sinks.outbox import AckedAlert, Outbox, OutboxConfig

logger = logging.getLogger(__name__)

LATENCY_WINDOW = 1024
UNACKED_IDS_LOGGED = 20


class MqttSinkConfig(PluginConfig):
    type: Literal["mqtt"]
    qos: Literal[0, 1, 2] = 1
    retain: bool = False
    outbox: OutboxConfig | None = Field(
        default_factory=dict,  # validated (with the config file's directory) like a given one
        validate_default=True,
        description="durable alert outbox (on by default); null publishes directly",
    )

    @model_validator(mode="after")
    def _outbox_needs_acks(self) -> MqttSinkConfig:
        if self.qos == 0 and self.outbox is not None and self.outbox.enabled:
            raise ValueError(
                "qos 0 has no PUBACK, so the outbox could never know an alert arrived; use qos 1 "
                "(or 2), or turn the outbox off with `outbox: null`"
            )
        return self


@SINKS.register("mqtt")
class MqttSink(Sink):
    """Publishes each alert's JSON through the device's shared ``MqttLink``.

    The link owns the connection (started/stopped by the app). When the broker acknowledges an
    alert, the capture->PUBACK latency is logged and kept (last ``LATENCY_WINDOW`` values).
    Alerts not acknowledged yet are tracked by id: ``stop`` waits for them (up to the link's
    ``stop_timeout_s``, less while the broker is unreachable) and then names, in one warning,
    the ones that may be lost. With an ``outbox`` (see ``open_outbox``) alerts go through it
    instead and nothing unacknowledged is lost at stop: it stays in the outbox file.

    ``ack_observer`` (pipeline, capture->PUBACK seconds) is called on every acknowledged alert
    of this run, e.g. by a metrics exporter.
    """

    config_type: ClassVar[type[PluginConfig]] = MqttSinkConfig

    def __init__(
        self,
        link: MqttLink,
        qos: int = 1,
        retain: bool = False,
        outbox: OutboxConfig | None = None,
    ) -> None:
        if qos not in (0, 1, 2):
            raise ValueError(f"mqtt sink: qos must be 0, 1 or 2, got {qos!r}")
        self._link = link
        self._qos = qos
        self._retain = retain
        self.ack_observer: Callable[[str, float], None] | None = None
        self._outbox: Outbox | None = None
        if outbox is not None and outbox.enabled:
            if qos == 0:
                raise ValueError("mqtt sink: the outbox needs qos 1 or 2 (qos 0 has no PUBACK)")
            self._outbox = Outbox.open(
                outbox, link, qos=qos, retain=retain, on_ack=self._outbox_acked
            )
        self._lock = threading.Lock()
        self._latencies_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._published = 0
        self._acked = 0
        self._stopped = False
        # Keyed by a number of our own, not the mid: the ack can arrive before publish()
        # returns the mid, so the entry must exist before the link sees the message.
        self._numbers = itertools.count()
        self._unacked: dict[int, str] = {}

    @classmethod
    def from_config(cls, config: PluginConfig, context: SinkContext) -> MqttSink:
        if not isinstance(config, MqttSinkConfig):
            raise TypeError(f"expected MqttSinkConfig, got {type(config).__name__}")
        if context.mqtt is None:
            raise ConfigError(
                "sink 'mqtt' needs an MQTT connection: add an `mqtt:` section to the device config"
            )
        outbox = config.outbox
        if outbox is not None:
            path = outbox.path.replace("{device_id}", context.device_id)
            outbox = outbox.model_copy(update={"path": path})
        return cls(context.mqtt, qos=config.qos, retain=config.retain, outbox=outbox)

    def start(self) -> None:
        if self._outbox is not None:
            self._outbox.start()

    @property
    def outbox(self) -> Outbox | None:
        return self._outbox

    def publish(self, alert: Alert) -> None:
        if self._outbox is not None:
            with self._lock:
                if self._stopped:
                    raise SinkError(
                        f"alert {alert.alert_id} not published: the mqtt sink is stopped"
                    )
                self._published += 1
            self._outbox.put(alert)
            return
        topic = self._link.alert_topic(alert.pipeline)
        with self._lock:
            if self._stopped:
                raise SinkError(f"alert {alert.alert_id} not published: the mqtt sink is stopped")
            number = next(self._numbers)
            self._unacked[number] = alert.alert_id

        def acked() -> None:
            with self._lock:
                self._unacked.pop(number, None)
            _log_ack(alert, self._record_ack(alert.pipeline, alert.captured_mono_ns), False)

        try:
            self._link.publish(
                topic, alert.to_json(), qos=self._qos, retain=self._retain, on_ack=acked
            )
        except BaseException:
            with self._lock:
                self._unacked.pop(number, None)
            raise
        with self._lock:
            self._published += 1

    def _record_ack(self, pipeline: str, captured_mono_ns: int) -> float:
        latency_ms = (time.monotonic_ns() - captured_mono_ns) / 1e6
        with self._lock:
            self._acked += 1
            self._latencies_ms.append(latency_ms)
        observer = self.ack_observer
        if observer is not None:
            observer(pipeline, latency_ms / 1e3)
        return latency_ms

    def _outbox_acked(self, acked: AckedAlert) -> None:
        alert = acked.alert
        if alert is None:  # an earlier run's alert: no capture time in this process
            with self._lock:
                self._acked += 1
            return
        latency_ms = self._record_ack(alert.pipeline, alert.captured_mono_ns)
        _log_ack(alert, latency_ms, acked.replayed)

    def stop(self) -> None:
        """Wait for outstanding acks, then warn once naming the alerts that weren't acked
        (with an outbox: close it; what is unacknowledged stays in it for the next start)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            waiting = bool(self._unacked)
        if self._outbox is not None:
            self._outbox.stop(self._link.stop_timeout_s)
            return
        if waiting:
            self._link.flush(self._link.stop_timeout_s)
        ids = self.unacked_alert_ids()
        if ids:
            shown = ", ".join(ids[:UNACKED_IDS_LOGGED])
            more = len(ids) - UNACKED_IDS_LOGGED
            logger.warning(
                "mqtt sink stopping with %d alert(s) not acknowledged by the broker at %s:%d "
                "(lost unless the broker got them): %s%s",
                len(ids),
                self._link.host,
                self._link.port,
                shown,
                f" and {more} more" if more > 0 else "",
            )

    def unacked_alert_ids(self) -> list[str]:
        """Ids of published alerts the broker hasn't acknowledged (yet), oldest first."""
        with self._lock:
            return list(self._unacked.values())

    def ack_latencies_ms(self) -> list[float]:
        """capture->PUBACK latencies of the most recent acknowledged alerts, oldest first."""
        with self._lock:
            return list(self._latencies_ms)

    def status(self) -> dict[str, object]:
        with self._lock:
            published, acked, unacked = self._published, self._acked, len(self._unacked)
            latencies = sorted(self._latencies_ms)
        doc: dict[str, object] = {
            "published": published,
            "acked": acked,
            "unacked": unacked,
            "ack_latency_p50_ms": percentile(latencies, 50),
            "ack_latency_p99_ms": percentile(latencies, 99),
        }
        if self._outbox is not None:
            outbox = self._outbox.status()
            doc["unacked"] = outbox["depth"]
            doc["outbox"] = outbox
        return doc


def _log_ack(alert: Alert, latency_ms: float, replayed: bool) -> None:
    logger.info(
        "alert acked: pipeline=%s rule=%s state=%s label=%s score=%.2f capture->puback=%.1f ms%s",
        alert.pipeline,
        alert.rule,
        alert.state,
        alert.label,
        alert.score,
        latency_ms,
        " (replayed)" if replayed else "",
    )


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Linear-interpolated ``q``-th percentile of already sorted values; None when empty."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    value = sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)
    return round(value, 3)
