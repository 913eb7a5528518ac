"""The MQTT link's subscriptions: topic filters, paho routing, renewal after reconnects, backlog.

Each filter gets a paho ``message_callback_add`` route (without a ``$share/<group>/`` prefix: a
shared subscription delivers the real topic). Every (re)connect renews all filters: after a
clean start or an expired session the broker knows none of them. When the broker resumed the
session (MQTT 5), the renewal asks for retained messages only where the subscription is new
(Retain Handling 1), so a reconnect doesn't deliver retained readings twice; MQTT 3.1.1 has no such
option and the broker re-sends them.

Messages no route matches (typically ones a resumed session queued before ``subscribe`` was
called) go to a ``Backlog`` and are replayed by the ``subscribe`` that matches them. One lock
serialises every delivery, so a replay on the subscriber's thread and paho's network thread never
run a callback at the same time, and messages reach a callback in arrival order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from runtime.errors import ConfigError, SourceError
from runtime.mqtt_session import Backlog
from runtime.mqtt_settings import check_topic_filter
from runtime.ratelimit import RateLimitedLog

logger = logging.getLogger(__name__)

SHARED_PREFIX = "$share/"


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A message delivered to a ``subscribe`` callback."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    received_mono_ns: int


MessageCallback = Callable[[ReceivedMessage], None]


def routing_filter(topic_filter: str) -> str:
    """The filter messages of a subscription match: without ``$share/<group>/`` (MQTT 5 shared
    subscriptions deliver the real topic)."""
    if topic_filter.startswith(SHARED_PREFIX):
        parts = topic_filter.split("/", 2)
        if len(parts) == 3:
            return parts[2]
    return topic_filter


def _received(msg: mqtt.MQTTMessage) -> ReceivedMessage:
    return ReceivedMessage(
        topic=msg.topic,
        payload=bytes(msg.payload),
        qos=msg.qos,
        retain=bool(msg.retain),
        received_mono_ns=time.monotonic_ns(),
    )


class Subscriptions:
    """See the module docstring. ``log`` is the link's rate-limited log."""

    def __init__(
        self, client: mqtt.Client, log: RateLimitedLog, backlog: Backlog[ReceivedMessage]
    ) -> None:
        self._client = client
        self._log = log
        self._backlog = backlog
        self._lock = threading.RLock()  # RLock: a callback may subscribe
        self._filters: dict[str, int] = {}
        self._routes: dict[str, tuple[str, MessageCallback]] = {}  # route -> (filter, callback)
        client.on_message = self._on_unrouted

    @property
    def unrouted_held(self) -> int:
        """Messages waiting in the backlog for a subscriber."""
        with self._lock:
            return len(self._backlog)

    @property
    def unrouted_dropped(self) -> int:
        with self._lock:
            return self._backlog.dropped

    def add(self, topic_filter: str, qos: int, callback: MessageCallback, connected: bool) -> None:
        """Route matching messages to ``callback`` (and replay held ones); subscribe now if
        ``connected``, else at the next connect."""
        try:
            check_topic_filter(topic_filter)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if qos not in (0, 1, 2):
            raise ConfigError(f"subscribe {topic_filter!r}: qos must be 0, 1 or 2, got {qos!r}")
        route = routing_filter(topic_filter)

        def deliver(_client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
            received = _received(msg)
            with self._lock:
                self._dispatch(topic_filter, callback, received)

        with self._lock:
            taken = [f for f in self._filters if routing_filter(f) == route]
            if taken:
                raise ConfigError(
                    f"subscribe {topic_filter!r}: this link already delivers {route!r} to a "
                    f"callback (subscribed as {taken[0]!r}); one subscriber per filter"
                )
            self._filters[topic_filter] = qos
            self._routes[route] = (topic_filter, callback)
            self._client.message_callback_add(route, deliver)
            held = self._backlog.take(lambda topic: mqtt.topic_matches_sub(route, topic))
            if held:
                logger.info("delivering %d held message(s) to %s", len(held), topic_filter)
            for received in held:
                self._dispatch(topic_filter, callback, received)
        if connected:
            rc, _mid = self._client.subscribe(topic_filter, qos)
            if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                raise SourceError(f"subscribe to {topic_filter} failed: {mqtt.error_string(rc)}")

    def remove(self, topic_filter: str, unsubscribe: bool) -> None:
        """Forget ``topic_filter``; send UNSUBSCRIBE if ``unsubscribe`` (else the broker session
        keeps the subscription). A filter that isn't subscribed is ignored."""
        route = routing_filter(topic_filter)
        with self._lock:
            if self._filters.pop(topic_filter, None) is None:
                return
            self._routes.pop(route, None)
            self._client.message_callback_remove(route)
        if unsubscribe:
            rc, _mid = self._client.unsubscribe(topic_filter)
            if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                logger.warning("unsubscribe %s failed: %s", topic_filter, mqtt.error_string(rc))

    def renew(self, session_present: bool) -> None:
        """Subscribe every filter again (on paho's network thread, right after CONNACK)."""
        with self._lock:
            subs = list(self._filters.items())
        if not subs:
            return
        if session_present and self._client.protocol == mqtt.MQTTv5:
            keep = SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
            rc, _mid = self._client.subscribe(
                [(f, SubscribeOptions(qos=qos, retainHandling=keep)) for f, qos in subs]
            )
        else:
            rc, _mid = self._client.subscribe(subs)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            logger.warning(
                "re-subscribing %s failed: %s", [f for f, _ in subs], mqtt.error_string(rc)
            )

    def _on_unrouted(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        received = _received(msg)
        with self._lock:
            # a subscribe may have added a matching route after paho looked for one
            routes = [
                target
                for route, target in self._routes.items()
                if mqtt.topic_matches_sub(route, received.topic)
            ]
            for topic_filter, callback in routes:
                self._dispatch(topic_filter, callback, received)
            dropped = 0 if routes else self._backlog.add(received)
        if dropped:
            self._log.log(
                logging.WARNING,
                "unrouted",
                "dropped %d message(s) no subscription of this link matched (held up to %.0f s "
                "for a late subscriber; latest on %s). A subscription an earlier configuration "
                "left in the broker session? Start once with mqtt.clean_start: true to clear it",
                dropped,
                self._backlog.hold_ns / 1e9,
                received.topic,
            )

    def _dispatch(
        self, topic_filter: str, callback: MessageCallback, received: ReceivedMessage
    ) -> None:
        try:
            callback(received)
        except Exception:  # noqa: BLE001 - logged; paho's network thread must survive
            self._log.log(
                logging.ERROR,
                f"callback:{topic_filter}",
                "subscription callback for %r failed on %s",
                topic_filter,
                received.topic,
                exc_info=True,
            )


__all__ = [
    "SHARED_PREFIX",
    "MessageCallback",
    "ReceivedMessage",
    "Subscriptions",
    "routing_filter",
]
