"""MQTT sensor source: readings from topic subscriptions on the device's MQTT link.

paho's network thread only appends each raw message (topic, payload, arrival times) to a bounded
deque; the pipeline thread decodes them in batches in ``read``. When the deque is full the new
message is dropped and counted (``queue_full``). Subscriptions go through the ``MqttLink``, which
renews them after every reconnect; ``stop`` leaves them in the broker session, so a broker that
keeps the session queues QoS 1/2 readings until the device starts again. Topics may be MQTT 5
shared subscriptions (``$share/<group>/<filter>``): the broker splits the stream between the
group's clients and delivers the real topic, so sensor keys from topic levels work unchanged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from runtime.config.base import PluginConfig
from runtime.errors import ConfigError, SourceError
from runtime.messages import SensorReading
from runtime.mqtt_link import SHARED_PREFIX, MqttLink, ReceivedMessage
from runtime.mqtt_settings import check_name, check_topic_filter
from runtime.processing.decoders.base import DecodeError, Decoder
from runtime.sources._decoding import AnyDecoderConfig, DropCounter, build_decoder
from runtime.sources.sensor_base import SENSOR_SOURCES, SensorSource, SensorSourceContext

logger = logging.getLogger(__name__)

QUEUE_FULL = "queue_full"

_Raw = tuple[str, bytes, int, int]  # topic, payload, received_at_ns, received_mono_ns


def check_subscription(value: str) -> str:
    """``value`` unchanged if it is a topic filter or ``$share/<group>/<filter>``, else
    ``ValueError``."""
    if value.startswith(SHARED_PREFIX):
        parts = value.split("/", 2)
        if len(parts) < 3:
            raise ValueError(
                f"shared subscription {value!r}: expected '$share/<group>/<filter>', "
                "e.g. '$share/edge/sensors/#'"
            )
        check_name("shared subscription group", parts[1])
        check_topic_filter(parts[2])
        return value
    return check_topic_filter(value)


class MqttSensorSourceConfig(PluginConfig):
    type: Literal["mqtt"]
    topics: list[str] = Field(
        min_length=1,
        description="topic filters ('+', '#' wildcards) or shared subscriptions "
        "'$share/<group>/<filter>'",
    )
    qos: Literal[0, 1, 2] = 1
    decoder: AnyDecoderConfig = Field(description="how a payload becomes readings")
    queue_size: int = Field(
        100_000, ge=1, description="raw messages waiting for the pipeline; more are dropped"
    )
    linger_ms: float = Field(
        2.0,
        ge=0,
        le=100,
        description="after the first message arrives, wait this long for more so the pipeline "
        "takes them in one batch (fewer wake-ups; adds at most this much latency)",
    )

    @field_validator("topics")
    @classmethod
    def _check_topics(cls, value: list[str]) -> list[str]:
        for topic in value:
            check_subscription(topic)
        if len(set(value)) != len(value):
            raise ValueError(f"topics must be unique, got {value}")
        return value


@SENSOR_SOURCES.register("mqtt")
class MqttSensorSource(SensorSource):
    """See the module docstring. ``read`` must be called from one thread (the pipeline's)."""

    config_type: ClassVar[type[PluginConfig]] = MqttSensorSourceConfig

    def __init__(
        self,
        link: MqttLink,
        topics: list[str],
        decoder: Decoder,
        *,
        qos: int = 1,
        queue_size: int = 100_000,
        linger_s: float = 0.002,
    ) -> None:
        if not topics:
            raise ValueError("an mqtt sensor source needs at least one topic")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        for topic in topics:
            try:
                check_subscription(topic)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        self.link = link
        self.topics = list(topics)
        self.decoder = decoder
        self.qos = qos
        self.queue_size = queue_size
        self.linger_s = linger_s
        self._queue: deque[_Raw] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._waiting = False
        self._accepting = False
        self._started = False
        self._stopped = False
        self._subscribed: list[str] = []
        self._received = 0  # written by paho's network thread only
        self._queue_full = 0  # written by paho's network thread only
        self._readings = 0  # written by the reading thread only
        self._drops = DropCounter(logger, f"mqtt sensor source {self.topics}")

    @classmethod
    def from_config(cls, config: PluginConfig, context: SensorSourceContext) -> MqttSensorSource:
        if not isinstance(config, MqttSensorSourceConfig):
            raise TypeError(f"expected MqttSensorSourceConfig, got {type(config).__name__}")
        if context.mqtt is None:
            raise ConfigError("an `mqtt` sensor source needs a top-level `mqtt` section")
        return cls(
            context.mqtt,
            config.topics,
            build_decoder(config.decoder),
            qos=config.qos,
            queue_size=config.queue_size,
            linger_s=config.linger_ms / 1000,
        )

    def start(self) -> None:
        if self._started:
            raise RuntimeError("an mqtt sensor source can be started only once")
        self._started = True
        self._accepting = True
        try:
            for topic in self.topics:
                self.link.subscribe(topic, self.qos, self._on_message)
                self._subscribed.append(topic)
        except (ConfigError, SourceError) as e:
            self.stop()
            raise SourceError(f"mqtt sensor source: subscribing {topic!r} failed: {e}") from e
        logger.info("mqtt sensor source subscribed to %s (qos %d)", self.topics, self.qos)

    def _on_message(self, message: ReceivedMessage) -> None:
        """paho's network thread: queue the raw message, nothing else."""
        if not self._accepting:
            return
        self._received += 1
        queue = self._queue
        if len(queue) >= self.queue_size:
            self._queue_full += 1
            return
        queue.append((message.topic, message.payload, time.time_ns(), message.received_mono_ns))
        if self._waiting:
            with self._cond:
                self._cond.notify()

    def read(self, timeout_s: float, max_readings: int = 4096) -> list[SensorReading]:
        queue = self._queue
        if not queue:
            if self._stopped:
                return []
            with self._cond:
                self._waiting = True
                try:
                    if not queue and not self._stopped:
                        self._cond.wait(timeout_s)
                finally:
                    self._waiting = False
            if queue and self.linger_s > 0 and len(queue) < max_readings and not self._stopped:
                # woken by one message: let a batch gather (sleeping releases the GIL to paho)
                time.sleep(self.linger_s)
        readings: list[SensorReading] = []
        decode = self.decoder.decode
        popleft = queue.popleft
        while queue and len(readings) < max_readings:
            topic, payload, received_at_ns, received_mono_ns = popleft()
            try:
                readings += decode(topic, payload, received_at_ns, received_mono_ns)
            except DecodeError as e:
                self._drops.decode_error(e, topic, payload)
        self._readings += len(readings)
        return readings

    def stop(self) -> None:
        """Stop accepting messages and drop the subscriptions from the link (not from the broker
        session). Idempotent; queued messages are discarded."""
        if self._stopped:
            return
        self._stopped = True
        self._accepting = False
        for topic in self._subscribed:
            self.link.unsubscribe(topic, keep_in_session=True)
        self._subscribed.clear()
        self._queue.clear()
        with self._cond:
            self._cond.notify_all()

    @property
    def ended(self) -> bool:
        return False

    def status(self) -> dict[str, object]:
        dropped = self._drops.counts()
        dropped[QUEUE_FULL] = self._queue_full
        if self._stopped or not self._started:
            state = "stopped"
        elif self.link.connected:
            state = "running"
        else:
            state = "reconnecting"
        link_error = self.link.last_error if state == "reconnecting" else None
        return {
            "type": "mqtt",
            "state": state,
            "topics": list(self.topics),
            "received": self._received,
            "readings": self._readings,
            "dropped": dropped,
            "queue_depth": len(self._queue),
            "last_error": self._drops.last_error or link_error,
        }
