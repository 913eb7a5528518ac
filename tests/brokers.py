"""Test helpers: a real Mosquitto (tools.mosquitto) and real paho subscribers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from runtime.mqtt_link import MqttLink
from tools.mosquitto import (
    HOST,
    BrokerError,
    BrokerOptions,
    MosquittoBroker,
    find_tool,
    free_port,
    write_password_file,
)

__all__ = [
    "HOST",
    "LINK_DEVICE",
    "BrokerError",
    "BrokerFactory",
    "BrokerOptions",
    "LinkFactory",
    "MosquittoBroker",
    "Received",
    "Subscriber",
    "SubscriberFactory",
    "find_tool",
    "free_port",
    "wait_until",
    "write_password_file",
]


LINK_DEVICE = "gw01"
"""The device id ``make_link`` links use unless told otherwise."""


class LinkFactory(Protocol):
    """The ``make_link`` fixture: an ``MqttLink`` from settings, fast reconnects, started."""

    def __call__(
        self,
        port: int,
        *,
        device_id: str = LINK_DEVICE,
        password: str | None = None,
        start: bool = True,
        stop_timeout_s: float = 2.0,
        **settings: Any,
    ) -> MqttLink: ...


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """A real paho client (MQTT 3.1.1) subscribed to one filter, collecting every message.

    It re-subscribes on every (re)connect. ``persistent=True`` keeps the broker-side session
    (clean_session=False), so QoS 1 messages published while it is offline are delivered later.
    """

    def __init__(
        self,
        broker: MosquittoBroker,
        topic_filter: str,
        *,
        qos: int = 1,
        client_id: str,
        persistent: bool = False,
    ) -> None:
        self.topic_filter = topic_filter
        self.qos = qos
        self._broker = broker
        self._cond = threading.Condition()
        self._messages: list[Received] = []
        self._subacks = 0
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=not persistent,
            protocol=mqtt.MQTTv311,
        )
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        # paho annotates the delays as int but accepts floats.
        client.reconnect_delay_set(cast(int, 0.05), cast(int, 0.2))
        self._client = client

    def start(self, timeout_s: float = 5.0) -> Subscriber:
        self._client.connect_async(self._broker.host, self._broker.port, keepalive=30)
        self._client.loop_start()
        self.wait_subscribed(1, timeout_s)
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def messages(self) -> list[Received]:
        with self._cond:
            return list(self._messages)

    def wait_for(self, n: int, timeout_s: float = 5.0) -> list[Received]:
        """The first ``n`` messages, waiting up to ``timeout_s`` for them to arrive."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._messages) >= n, timeout_s):
                got = [(m.topic, m.payload[:120]) for m in self._messages]
                raise AssertionError(
                    f"subscriber {self.topic_filter!r}: expected {n} message(s) within "
                    f"{timeout_s} s, got {len(got)}: {got}"
                )
            return list(self._messages[:n])

    def wait_subscribed(self, count: int, timeout_s: float = 5.0) -> None:
        """Wait until the broker acknowledged ``count`` subscriptions (one per connect)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._subacks >= count, timeout_s):
                raise AssertionError(
                    f"subscriber {self.topic_filter!r}: {self._subacks} SUBACK(s) within "
                    f"{timeout_s} s, expected {count}; broker log:\n"
                    f"{self._broker.log_text()[-3000:]}"
                )

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if not reason_code.is_failure:
            client.subscribe(self.topic_filter, self.qos)

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _mid: int,
        _reason_codes: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        with self._cond:
            self._subacks += 1
            self._cond.notify_all()

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        received = Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain))
        with self._cond:
            self._messages.append(received)
            self._cond.notify_all()


class BrokerFactory(Protocol):
    def __call__(self, options: BrokerOptions | None = None) -> MosquittoBroker: ...


class SubscriberFactory(Protocol):
    def __call__(
        self,
        broker: MosquittoBroker,
        topic_filter: str,
        *,
        qos: int = 1,
        persistent: bool = False,
        client_id: str | None = None,
    ) -> Subscriber: ...


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0, what: str = "") -> None:
    """Poll ``predicate`` every 10 ms; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")
        time.sleep(0.01)
