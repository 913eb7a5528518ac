"""The link's broker session: what CONNECT asks for, and messages that arrive before a subscriber.

With ``clean_start: false`` (MQTT 5) or ``clean_session=False`` (3.1.1) the broker keeps the
device's subscriptions and queues QoS 1/2 messages for it while it is away (MQTT 5: for
``session_expiry_s`` after the connection ends; 3.1.1: as long as the broker's own
``persistent_client_expiration`` allows). When the device comes back, the broker sends the queued
messages right after CONNACK, usually before the sensor sources have called ``subscribe`` again.
paho acknowledges a message no callback matches and drops it, so the link hands such messages to
a ``Backlog`` instead, and ``subscribe`` replays the ones its filter matches, oldest first.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from runtime.mqtt_settings import MqttSettings


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """``clean_start`` False resumes the broker's session; ``expiry_s`` and ``max_packet_bytes``
    are MQTT 5 CONNECT properties (Session Expiry Interval, Maximum Packet Size; None leaves
    them out). A 3.1.1 client's session is its ``clean_session``, fixed when the client is built.
    """

    clean_start: bool = False
    expiry_s: int | None = 3600
    max_packet_bytes: int | None = None

    @classmethod
    def from_settings(cls, settings: MqttSettings) -> SessionOptions:
        return cls(
            clean_start=settings.clean_start,
            expiry_s=settings.session_expiry_s,
            max_packet_bytes=settings.max_packet_bytes,
        )

    def connect_args(self, protocol: int) -> tuple[mqtt.CleanStartOption, Properties | None]:
        """``clean_start`` and ``properties`` for paho's ``connect_async``."""
        if protocol != mqtt.MQTTv5:
            return mqtt.MQTT_CLEAN_START_FIRST_ONLY, None  # paho refuses anything else for 3.1.1
        properties = None
        if self.expiry_s is not None or self.max_packet_bytes is not None:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if self.expiry_s is not None:
                properties.SessionExpiryInterval = self.expiry_s
            if self.max_packet_bytes is not None:
                properties.MaximumPacketSize = self.max_packet_bytes
        return self.clean_start, properties

    def describe(self, protocol: int) -> str:
        """For the connect log line."""
        if protocol != mqtt.MQTTv5:
            return "MQTT 3.1.1"
        if self.clean_start:
            return "MQTT 5, clean start"
        expiry = "never expires" if self.expiry_s == 0xFFFFFFFF else f"expiry {self.expiry_s} s"
        return f"MQTT 5, resumable session ({expiry})"


class HeldMessage(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def received_mono_ns(self) -> int: ...


M = TypeVar("M", bound=HeldMessage)

BACKLOG_MAX_MESSAGES = 10_000
BACKLOG_MAX_BYTES = 8 * 1024 * 1024
BACKLOG_HOLD_S = 30.0


class Backlog(Generic[M]):
    """Messages no subscription matched yet, oldest first, for a ``subscribe`` that comes late.

    Bounded three ways: at most ``max_messages``, at most ``max_bytes`` of payload, none older
    than ``hold_s`` (a message held longer is not the start-up gap this is for: more likely a
    subscription an earlier configuration left in the session). ``add`` returns how many messages
    it dropped to stay in bounds. Not thread-safe: the link calls it under its delivery lock.
    """

    def __init__(
        self,
        max_messages: int = BACKLOG_MAX_MESSAGES,
        max_bytes: int = BACKLOG_MAX_BYTES,
        hold_s: float = BACKLOG_HOLD_S,
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        if max_messages < 0 or max_bytes < 0 or hold_s < 0:
            raise ValueError("backlog bounds must be >= 0")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.hold_ns = int(hold_s * 1e9)
        self._clock_ns = clock_ns
        self._held: deque[M] = deque()
        self._bytes = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._held)

    @property
    def bytes(self) -> int:
        return self._bytes

    def add(self, message: M) -> int:
        """Hold ``message``; returns how many messages (possibly this one) were dropped."""
        before = self.dropped
        self._expire()
        size = len(message.payload)
        if size > self.max_bytes or self.max_messages == 0:
            self.dropped += 1
            return 1
        self._held.append(message)
        self._bytes += size
        while len(self._held) > self.max_messages or self._bytes > self.max_bytes:
            self._drop_oldest()
        return self.dropped - before

    def take(self, matches: Callable[[str], bool]) -> list[M]:
        """Remove and return the held messages whose topic ``matches``, oldest first."""
        self._expire()
        taken: list[M] = []
        kept: deque[M] = deque()
        for message in self._held:
            (taken if matches(message.topic) else kept).append(message)
        if taken:
            self._held = kept
            self._bytes -= sum(len(m.payload) for m in taken)
        return taken

    def _expire(self) -> None:
        cutoff = self._clock_ns() - self.hold_ns
        while self._held and self._held[0].received_mono_ns < cutoff:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        old = self._held.popleft()
        self._bytes -= len(old.payload)
        self.dropped += 1


__all__ = [
    "BACKLOG_HOLD_S",
    "BACKLOG_MAX_BYTES",
    "BACKLOG_MAX_MESSAGES",
    "Backlog",
    "SessionOptions",
]
