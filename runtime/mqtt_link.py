"""The device's one MQTT connection: alerts out, status with a last will, sensor subscriptions in.

``MqttLink`` owns a paho ``Client`` (callback API version 2) running its own network thread
(``loop_start``). paho reconnects by itself; the link paces the attempts with jittered
exponential back-off between ``reconnect_min_s`` and ``reconnect_max_s`` (``runtime.mqtt_reconnect``)
and asks the broker to keep its session while it is away (``runtime.mqtt_session``). On every
successful (re)connect it re-publishes the retained online status and renews its subscriptions
(``runtime.mqtt_subscriptions``).

QoS 1/2 messages published while disconnected are kept by paho (``publish`` returns
``MQTT_ERR_NO_CONN`` but the message stays in the client's outgoing store, up to
``max_queued_messages``) and are sent after the next CONNACK, so a short broker outage loses no
alerts. QoS 0 messages can't be queued and raise ``SinkError`` while disconnected.

``stop()`` refuses new publishes, waits (up to ``stop_timeout_s``) for every message still
pending to be acknowledged, and logs one warning naming how many were not, per topic.

The settings model and the name/topic checks live in ``runtime.mqtt_settings``, the subscription
types in ``runtime.mqtt_subscriptions``; they are re-exported here for older imports.
"""

from __future__ import annotations

import itertools
import json
import logging
import socket
import sys
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from runtime.errors import ConfigError, SinkError
from runtime.mqtt_reconnect import PAHO_DELAY_S, LinkStopping, ReconnectPacer
from runtime.mqtt_session import Backlog, SessionOptions
from runtime.mqtt_settings import (
    MqttSettings,
    TlsSettings,
    build_tls_context,
    check_name,
    check_topic_filter,
    check_topic_prefix,
)
from runtime.mqtt_subscriptions import (
    SHARED_PREFIX,
    MessageCallback,
    ReceivedMessage,
    Subscriptions,
    routing_filter,
)
from runtime.ratelimit import RateLimitedLog, RateLimitFilter

logger = logging.getLogger(__name__)
paho_logger = logging.getLogger(f"{__name__}.paho")
_LINK_IDS = itertools.count(1)
"""paho's own log lines (clients built by ``from_settings``), rate-limited while a link runs."""

_EARLY_ACKS_MAX = 256
_WARN_INTERVAL_S = 60.0
PAHO_LOG_INTERVAL_S = 60.0
"""paho repeats some lines (e.g. "Client is not connected") on every reconnect attempt; each
distinct line is logged at most once per this interval, with a count of the dropped repeats."""

AckCallback = Callable[[], None]
RejectCallback = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class LinkStats:
    connected: bool
    connects: int
    disconnects: int
    failed_connects: int
    published: int
    acked: int
    rejected: int
    pending: int
    last_error: str | None
    session_present: bool | None = None
    reconnect_delay_s: float = 0.0
    """The back-off wait before the latest connect attempt (0 before the first one)."""
    unrouted_held: int = 0
    unrouted_dropped: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "connected": self.connected,
            "connects": self.connects,
            "disconnects": self.disconnects,
            "failed_connects": self.failed_connects,
            "published": self.published,
            "acked": self.acked,
            "rejected": self.rejected,
            "pending": self.pending,
            "last_error": self.last_error,
            "session_present": self.session_present,
            "reconnect_delay_s": round(self.reconnect_delay_s, 3),
            "unrouted_held": self.unrouted_held,
            "unrouted_dropped": self.unrouted_dropped,
        }


@dataclass(frozen=True, slots=True)
class _Pending:
    topic: str
    on_ack: AckCallback | None
    on_reject: RejectCallback | None = None


class _PahoLogFilter(RateLimitFilter):
    """Rate-limits paho's log lines (see ``PAHO_LOG_INTERVAL_S``).

    paho's "Client is not connected. ... Last known Connection State: <state>" is one message
    whatever the state. Once the link is stopping it is dropped: after our own DISCONNECT,
    paho's thread may loop once more before it sees ``loop_stop`` and log it, though nothing
    is wrong. So is the attempt the link aborts in ``on_pre_connect`` when it stops.
    """

    _NOT_CONNECTED = "Client is not connected"
    _ABORTED = "Caught exception in on_pre_connect"

    def __init__(self, link: MqttLink) -> None:
        super().__init__(PAHO_LOG_INTERVAL_S)
        self._link = link

    def key(self, record: logging.LogRecord) -> Hashable:
        if str(record.msg).startswith(self._NOT_CONNECTED):
            return (record.levelno, self._NOT_CONNECTED)
        return super().key(record)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            self._link.paho_error(record.getMessage())
        if self._link.stopping and str(record.msg).startswith((self._NOT_CONNECTED, self._ABORTED)):
            return False
        return super().filter(record)


def _no_delay(_client: mqtt.Client, _userdata: object, sock: object) -> None:
    """TCP_NODELAY on the broker socket: paho leaves Nagle on, and a PUBLISH written from another
    thread then waits for the broker's delayed ACK (measured: 460 instead of 6000 alerts/s with
    the outbox's window at paho's in-flight limit)."""
    if isinstance(sock, socket.socket):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as e:
            logger.debug("TCP_NODELAY not set on the broker socket: %s", e)


def paho_client(
    settings: MqttSettings, client_id: str, password: str | None, *, clean_session: bool = True
) -> mqtt.Client:
    """A paho client (callback API 2) with the protocol, credentials, TLS and queue bound of
    ``settings``; not connected. ``clean_session`` applies to MQTT 3.1.1 only (MQTT 5 chooses
    at connect). Unreadable TLS files and a password without a username are ``ConfigError``."""
    if password is not None and settings.username is None:
        raise ConfigError("mqtt: a password was resolved but mqtt.username is not set")
    v5 = settings.protocol == "5"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=None if v5 else clean_session,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
    )
    client.max_queued_messages_set(settings.max_queued_messages)
    if settings.username is not None:
        client.username_pw_set(settings.username, password)
    if settings.tls is not None:
        client.tls_set_context(build_tls_context(settings.tls))
        if settings.tls.insecure:
            client.tls_insecure_set(True)
    return client


class MqttLink:
    """One paho client: publish with PUBACK callbacks, retained status + last will, subscriptions.

    Topics: ``<prefix>/<device_id>/status`` (retained JSON, ``state`` online/offline) and
    ``<prefix>/<device_id>/alerts/<pipeline>``. The client must use callback API version 2.

    Locking: paho runs ``on_publish`` while holding its own outgoing-message lock, and
    ``client.publish`` takes that lock, so ``self._lock`` is never held while calling into
    paho. Instead ``publish`` counts itself in ``_publishing`` (under the lock, together with the
    ``_stopping`` check) before calling paho, and ``stop`` sets ``_stopping`` and then waits for
    that count to reach zero: every publish either raises ``SinkError`` or is registered in
    ``_pending`` before stop waits for the acks.
    """

    def __init__(
        self,
        client: mqtt.Client,
        *,
        host: str,
        port: int,
        keepalive_s: int,
        topic_prefix: str,
        device_id: str,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        stop_timeout_s: float = 2.0,
        session: SessionOptions | None = None,
    ) -> None:
        if client.callback_api_version != CallbackAPIVersion.VERSION2:
            raise ValueError("MqttLink needs a paho Client built with CallbackAPIVersion.VERSION2")
        try:
            check_name("device_id", device_id)
            check_topic_prefix(topic_prefix)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if stop_timeout_s < 0:
            raise ValueError(f"stop_timeout_s must be >= 0, got {stop_timeout_s}")
        self._client = client
        self.host = host
        self.port = port
        self.keepalive_s = keepalive_s
        self.topic_prefix = topic_prefix
        self.device_id = device_id
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._stop_timeout_s = stop_timeout_s
        self._session = session or SessionOptions()
        self._pacer = ReconnectPacer.for_link(reconnect_min_s, reconnect_max_s)
        self._session_present: bool | None = None

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        """Notified when a message is acked, a publish call finishes, or the connection fails."""
        self._connected = threading.Event()
        self._started = False
        self._stopping = False
        self._loop_stopped = False
        self._outage_reported = False
        self._attempt_failed = False  # this connect attempt's failure was already reported
        self._last_paho_error: str | None = None
        self._last_error: str | None = None
        self._connects = 0
        self._status_deferred = False
        self._broker_max_packet: int | None = None
        self._disconnects = 0
        self._failed_connects = 0
        self._published = 0
        self._acked = 0
        self._rejected = 0
        self._publishing = 0
        self._pending: dict[int, _Pending] = {}
        self._early: OrderedDict[int, bool] = OrderedDict()
        self._status_payload = self._status_json({})
        self._log = RateLimitedLog(logger, interval_s=_WARN_INTERVAL_S)
        self._subs = Subscriptions(client, self._log, Backlog[ReceivedMessage]())
        self._paho_log_filter = _PahoLogFilter(self)
        # a logger per link: the filter attributes paho's errors to this link's client only
        self._paho_logger = paho_logger.getChild(f"link{next(_LINK_IDS)}")
        client.enable_logger(self._paho_logger)
        self._set_callbacks(client)

    def _set_callbacks(self, client: mqtt.Client) -> None:
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_pre_connect = self._on_pre_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_socket_open = _no_delay

    @classmethod
    def from_settings(
        cls,
        settings: MqttSettings,
        device_id: str,
        password: str | None,
        *,
        stop_timeout_s: float = 2.0,
    ) -> MqttLink:
        """Build the paho client (protocol, credentials, TLS, queue bound) and the link."""
        try:
            check_name("device_id", device_id)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        client_id = settings.client_id or f"edgewatch-{device_id}"
        client = paho_client(settings, client_id, password, clean_session=settings.clean_start)
        return cls(
            client,
            host=settings.host,
            port=settings.port,
            keepalive_s=settings.keepalive_s,
            topic_prefix=settings.topic_prefix,
            device_id=device_id,
            reconnect_min_s=settings.reconnect_min_s,
            reconnect_max_s=settings.reconnect_max_s,
            stop_timeout_s=stop_timeout_s,
            session=SessionOptions.from_settings(settings),
        )

    # ----------------------------------------------------------------- topics

    def status_topic(self) -> str:
        return f"{self.topic_prefix}/{self.device_id}/status"

    def alert_topic(self, pipeline: str) -> str:
        try:
            check_name("pipeline", pipeline)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return f"{self.topic_prefix}/{self.device_id}/alerts/{pipeline}"

    # -------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Set the last will and connect in the background; never raises for an absent broker."""
        with self._lock:
            if self._started:
                raise RuntimeError("an MqttLink can be started only once")
            self._started = True
        offline = json.dumps({"state": "offline", "device_id": self.device_id}).encode()
        self._client.will_set(self.status_topic(), offline, qos=1, retain=True)
        # the pacer waits in on_pre_connect; paho annotates the delays as int, computes with floats
        self._client.reconnect_delay_set(cast(int, PAHO_DELAY_S), cast(int, PAHO_DELAY_S))
        clean_start, properties = self._session.connect_args(self._client.protocol)
        try:
            self._client.connect_async(
                self.host,
                self.port,
                self.keepalive_s,
                clean_start=clean_start,
                properties=properties,
            )
        except ValueError as e:
            raise ConfigError(f"mqtt broker {self.host}:{self.port}: {e}") from e
        self._paho_logger.addFilter(self._paho_log_filter)
        rc = self._client.loop_start()
        if rc != mqtt.MQTT_ERR_SUCCESS:
            self._paho_logger.removeFilter(self._paho_log_filter)
            raise SinkError(f"mqtt network loop didn't start: {mqtt.error_string(rc)}")
        logger.info(
            "mqtt connecting to %s:%d (%s; status topic %s)",
            self.host,
            self.port,
            self._session.describe(self._client.protocol),
            self.status_topic(),
        )

    def stop(self) -> None:
        """Refuse new publishes, publish a retained offline status (if connected), wait up to
        ``stop_timeout_s`` for pending messages to be acknowledged, disconnect, stop the loop.

        Messages still unacknowledged are reported in one warning (count per topic). The wait
        ends early while the broker is unreachable, since nothing can be acknowledged then.
        """
        with self._lock:
            if not self._started or self._stopping:
                return
            self._stopping = True
        deadline = time.monotonic() + self._stop_timeout_s
        try:
            with self._changed:
                self._changed.wait_for(lambda: self._publishing == 0, self._stop_timeout_s)
            if self.connected:
                offline = json.dumps({"state": "offline", "device_id": self.device_id})
                try:
                    self._publish(self.status_topic(), offline.encode(), 1, True, None)
                except SinkError as e:
                    logger.warning("offline status not published at shutdown: %s", e)
            self.flush(max(0.0, deadline - time.monotonic()))
            self._report_unacked()
        finally:
            self._pacer.stop()  # cuts a back-off wait short and aborts any further attempt
            self._client.disconnect()
            self._client.loop_stop()  # paho's thread sends the queued DISCONNECT first
            with self._changed:
                self._loop_stopped = True
                self._changed.notify_all()
            self._connected.clear()
            self._paho_logger.removeFilter(self._paho_log_filter)
            logger.info("mqtt link to %s:%d stopped", self.host, self.port)

    def flush(self, timeout_s: float) -> bool:
        """Wait until every message handed to ``publish`` is acknowledged; True if none is left.

        Returns early (False) when waiting is pointless: the link isn't running, or the broker is
        unreachable (a connect failed or the connection was lost, and it hasn't reconnected).
        """
        with self._changed:
            self._changed.wait_for(
                lambda: self._nothing_pending() or self._acks_impossible(), timeout_s
            )
            return self._nothing_pending()

    def _nothing_pending(self) -> bool:
        """Caller holds the lock (a status deferred after a reconnect counts as pending)."""
        return not self._pending and self._publishing == 0 and not self._status_deferred

    def _acks_impossible(self) -> bool:
        """Caller holds the lock."""
        if not self._started or self._loop_stopped:
            return True
        return self._outage_reported and not self._connected.is_set()

    def _report_unacked(self) -> None:
        with self._lock:
            per_topic = Counter(p.topic for p in self._pending.values())
        if per_topic:
            logger.warning(
                "mqtt link to %s:%d stopping with %d message(s) not acknowledged by the broker "
                "(lost unless the broker got them): %s",
                self.host,
                self.port,
                per_topic.total(),
                ", ".join(f"{n} on {topic}" for topic, n in per_topic.most_common()),
            )

    @property
    def stopping(self) -> bool:
        """True from the moment ``stop`` was called."""
        return self._stopping

    @property
    def stop_timeout_s(self) -> float:
        """How long ``stop`` waits for acknowledgements (sinks use it for their own flush)."""
        return self._stop_timeout_s

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def connects(self) -> int:
        """Successful connections so far (a change means a reconnect happened)."""
        return self._connects

    @property
    def broker_max_packet_bytes(self) -> int | None:
        """The MQTT 5 Maximum Packet Size the broker announced in its CONNACK, if any: a larger
        PUBLISH would make the broker drop the connection (paho doesn't check it)."""
        return self._broker_max_packet

    def wait_connected(self, timeout_s: float) -> bool:
        """True once connected (returns at once if already), False after ``timeout_s``."""
        return self._connected.wait(timeout_s)

    @property
    def last_error(self) -> str | None:
        with self._lock:
            return self._last_error

    def stats(self) -> LinkStats:
        # read before taking self._lock: callbacks run under the subscriptions' lock and may
        # publish, which takes self._lock
        held, dropped = self._subs.unrouted_held, self._subs.unrouted_dropped
        with self._lock:
            return LinkStats(
                connected=self.connected,
                connects=self._connects,
                disconnects=self._disconnects,
                failed_connects=self._failed_connects,
                published=self._published,
                acked=self._acked,
                rejected=self._rejected,
                pending=len(self._pending),
                last_error=self._last_error,
                session_present=self._session_present,
                reconnect_delay_s=self._pacer.last_delay_s,
                unrouted_held=held,
                unrouted_dropped=dropped,
            )

    def status(self) -> dict[str, object]:
        """``stats()`` as a dict, for the device status document."""
        return self.stats().as_dict()

    # ------------------------------------------------------------ publishing

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        on_ack: AckCallback | None = None,
        on_reject: RejectCallback | None = None,
    ) -> int:
        """Hand a message to paho; returns its mid. ``SinkError`` once the link is stopping.

        ``on_ack`` runs on the network thread once the broker acknowledged it (PUBACK for QoS 1,
        PUBCOMP for QoS 2; for QoS 0 once written to the socket); it may run before this call
        returns, and never runs for a message the broker rejected: ``on_reject`` runs instead,
        with the broker's reason. While disconnected, QoS 1/2 messages are queued by paho and sent
        after reconnecting.
        """
        with self._lock:
            if self._stopping:
                raise SinkError(f"publish to {topic}: the MQTT link is stopped")
            self._publishing += 1
        try:
            return self._publish(topic, payload, qos, retain, on_ack, on_reject)
        finally:
            with self._changed:
                self._publishing -= 1
                self._changed.notify_all()

    def _publish(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        on_ack: AckCallback | None,
        on_reject: RejectCallback | None = None,
    ) -> int:
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
        except ValueError as e:
            raise SinkError(f"publish to {topic} rejected: {e}") from e
        rc = info.rc
        if rc == mqtt.MQTT_ERR_NO_CONN and qos > 0:
            logger.debug("not connected; %s queued for after reconnect (mid %d)", topic, info.mid)
        elif rc != mqtt.MQTT_ERR_SUCCESS:
            raise SinkError(f"publish to {topic} failed: {mqtt.error_string(rc)}")
        with self._lock:
            self._published += 1
            early = self._early.pop(info.mid, None)
            if early is None:
                self._pending[info.mid] = _Pending(topic, on_ack, on_reject)
        if early and on_ack is not None:
            self._run_ack(on_ack)
        elif early is False and on_reject is not None:
            self._run_ack(lambda: on_reject("rejected by the broker"))
        return info.mid

    def set_status(self, doc: Mapping[str, object]) -> None:
        """Store the status document; publish it (retained, QoS 1) now if it changed.

        The payload is ``{"state": "online", **doc, "device_id": <id>}``; it is re-published on
        every (re)connect. ``doc`` must be JSON-serialisable.
        """
        try:
            payload = self._status_json(doc)
        except (TypeError, ValueError) as e:
            raise ValueError(f"status document is not JSON-serialisable: {e}") from e
        with self._lock:
            changed = payload != self._status_payload
            self._status_payload = payload
            deferred = self._status_deferred
        if changed and self.connected and not deferred:
            self._publish_status()

    def _status_pending(self) -> bool:
        """Caller holds the lock: an earlier status message is still unacknowledged."""
        topic = self.status_topic()
        return any(p.topic == topic for p in self._pending.values())

    def _publish_status_after_stale(self) -> None:
        """On a (re)connect: paho re-sends unacknowledged messages *after* ``on_connect``
        returns, so a status published now could be overtaken by an older one, and the broker
        would keep the stale one as retained. Publish now only if no older status is pending;
        else once the last of them is acknowledged (``_on_publish``)."""
        with self._lock:
            self._status_deferred = self._status_pending()
            deferred = self._status_deferred
        if not deferred:
            self._publish_status()

    def _status_json(self, doc: Mapping[str, object]) -> bytes:
        body: dict[str, object] = {"state": "online", **doc, "device_id": self.device_id}
        return json.dumps(body, separators=(",", ":")).encode()

    def _publish_status(self) -> None:
        with self._lock:
            if self._stopping:
                return  # stop() publishes the offline status itself
            payload = self._status_payload
        try:
            self.publish(self.status_topic(), payload, qos=1, retain=True)
        except SinkError as e:
            logger.warning("status not published: %s", e)

    # ----------------------------------------------------------- subscribing

    def subscribe(self, topic_filter: str, qos: int, callback: MessageCallback) -> None:
        """Deliver messages matching ``topic_filter`` to ``callback`` (on the network thread,
        except messages that arrived before this call: those are replayed on the caller's).

        Subscriptions are remembered and renewed after every reconnect. A callback that raises
        is logged (rate-limited) and doesn't stop the link.
        """
        self._subs.add(topic_filter, qos, callback, connected=self.connected)

    def unsubscribe(self, topic_filter: str, *, keep_in_session: bool = False) -> None:
        """Forget a subscription made by ``subscribe``: no more callbacks, no renewal. A filter
        that isn't subscribed is ignored. Never raises for a lost connection.

        ``keep_in_session`` leaves the subscription in the broker session (no UNSUBSCRIBE), so a
        broker that keeps the session queues QoS 1/2 messages for the device's next start.
        """
        send = not keep_in_session and self.connected and not self._loop_stopped
        self._subs.remove(topic_filter, unsubscribe=send)

    # ------------------------------------------------------ paho callbacks

    def _on_connect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self._connect_failed(f"broker refused connection: {reason_code}")
            return
        session_present = bool(flags.session_present)
        max_packet = getattr(properties, "MaximumPacketSize", None)
        self._pacer.connected()
        with self._lock:
            self._broker_max_packet = max_packet if isinstance(max_packet, int) else None
            self._connects += 1
            reconnect = self._connects > 1
            failures = self._failed_connects
            self._outage_reported = False
            self._session_present = session_present
        self._connected.set()
        session = "session resumed" if session_present else "new session"
        if reconnect:
            logger.info(
                "mqtt reconnected to %s:%d, %s (%d failed attempts so far)",
                self.host,
                self.port,
                session,
                failures,
            )
        else:
            logger.info("mqtt connected to %s:%d, %s", self.host, self.port, session)
        self._publish_status_after_stale()
        self._subs.renew(session_present)

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: object) -> None:
        # paho calls this from inside its `except OSError` block, so the error is still current.
        exc = sys.exception()
        if isinstance(exc, LinkStopping):
            return
        reason = f"{type(exc).__name__}: {exc}" if exc is not None else "connection failed"
        self._connect_failed(reason)

    def _on_pre_connect(self, _client: mqtt.Client, _userdata: object) -> None:
        """Before every connect attempt, on paho's network thread: wait out the back-off."""
        if not self._pacer.wait():
            raise LinkStopping("mqtt link stopping; connect attempt abandoned")
        with self._lock:
            self._attempt_failed = False
            self._last_paho_error = None

    def paho_error(self, message: str) -> None:
        """paho logged an error (seen by the link's log filter; paho's ``on_log`` is not used
        because setting it makes paho format a debug line for every packet)."""
        with self._lock:
            self._last_paho_error = message

    def _connect_failed(self, reason: str) -> None:
        with self._changed:
            self._attempt_failed = True
            self._failed_connects += 1
            self._last_error = reason
            first = not self._outage_reported
            self._outage_reported = True
            self._changed.notify_all()
        if first:
            logger.warning(
                "mqtt connect to %s:%d failed: %s; retrying with jittered back-off (%.1f-%.1f s)",
                self.host,
                self.port,
                reason,
                self._reconnect_min_s,
                self._reconnect_max_s,
            )
        else:
            logger.debug("mqtt connect to %s:%d failed again: %s", self.host, self.port, reason)

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if not was_connected:
            # a refused connect was reported by _connect_failed; a connection the broker closed
            # before CONNACK (e.g. TLS 1.3 "certificate required") was not: report it here
            with self._lock:
                silent = not self._attempt_failed and not self._stopping
                detail = self._last_paho_error
            if silent:
                self._connect_failed(
                    f"connection closed before the broker accepted it: {detail or reason_code}"
                )
            return
        with self._changed:
            self._disconnects += 1
            self._outage_reported = True
            stopping = self._stopping
            if not stopping:
                self._last_error = f"connection lost: {reason_code}"
            self._changed.notify_all()
        if stopping:
            logger.debug("mqtt disconnected from %s:%d", self.host, self.port)
        else:
            logger.warning(
                "mqtt connection to %s:%d lost (%s); reconnecting",
                self.host,
                self.port,
                reason_code,
            )

    def _on_publish(
        self,
        _client: mqtt.Client,
        _userdata: object,
        mid: int,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        ok = not reason_code.is_failure
        with self._changed:
            if ok:
                self._acked += 1
            else:
                self._rejected += 1
            pending = self._pending.pop(mid, None)
            if pending is None:
                # The ack beat publish() to registering the mid; publish() settles it.
                self._early[mid] = ok
                while len(self._early) > _EARLY_ACKS_MAX:
                    self._early.popitem(last=False)
            if not self._pending:
                self._changed.notify_all()
            status_now = self._status_deferred and not self._status_pending()
        if status_now:
            self._publish_status()  # the stale ones are acknowledged: the current one goes last
            with self._changed:
                self._status_deferred = False  # flush() waits for this too
                self._changed.notify_all()
        if not ok:
            self._log.log(
                logging.WARNING,
                "rejected",
                "broker rejected message mid %d on %s: %s",
                mid,
                "?" if pending is None else pending.topic,
                reason_code,
            )
            if pending is not None and pending.on_reject is not None:
                on_reject = pending.on_reject
                self._run_ack(lambda: on_reject(str(reason_code)))
        elif pending is not None and pending.on_ack is not None:
            self._run_ack(pending.on_ack)

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            logger.warning("broker refused subscription (mid %d): %s", mid, ", ".join(failed))

    def _run_ack(self, callback: AckCallback) -> None:
        try:
            callback()
        except Exception:  # noqa: BLE001 - logged; paho's network thread must survive
            self._log.log(
                logging.ERROR, "ack-callback", "publish ack callback failed", exc_info=True
            )


__all__ = [
    "PAHO_LOG_INTERVAL_S",
    "SHARED_PREFIX",
    "AckCallback",
    "LinkStats",
    "MessageCallback",
    "MqttLink",
    "MqttSettings",
    "ReceivedMessage",
    "RejectCallback",
    "TlsSettings",
    "build_tls_context",
    "check_name",
    "check_topic_filter",
    "check_topic_prefix",
    "paho_client",
    "routing_filter",
]
