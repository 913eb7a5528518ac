"""The device's one MQTT connection: alerts out, status with a last will, sensor subscriptions in.

``MqttLink`` owns a paho ``Client`` (callback API version 2) running its own network thread
(``loop_start``). paho reconnects by itself with exponential back-off between
``reconnect_min_s`` and ``reconnect_max_s``; on every successful (re)connect the link re-publishes
the retained online status and re-subscribes its topic filters.

QoS 1/2 messages published while disconnected are kept by paho (``publish`` returns
``MQTT_ERR_NO_CONN`` but the message stays in the client's outgoing store, up to
``max_queued_messages``) and are sent after the next CONNACK, so a short broker outage loses no
alerts. QoS 0 messages can't be queued and raise ``SinkError`` while disconnected.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import Field, field_validator, model_validator

from runtime.config.base import ConfigPath, StrictModel
from runtime.errors import ConfigError, SinkError, SourceError

logger = logging.getLogger(__name__)

NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
"""device ids and pipeline names become exactly one topic level: no '/', '+', '#' or '$'."""

_NAME_RE = re.compile(NAME_PATTERN)
_EARLY_ACKS_MAX = 256
_WARN_INTERVAL_S = 60.0

AckCallback = Callable[[], None]


def check_name(kind: str, value: str) -> str:
    """``value`` unchanged if it is safe as one MQTT topic level, else ``ValueError``."""
    if not _NAME_RE.fullmatch(value):
        raise ValueError(
            f"{kind} {value!r}: expected 1+ characters from [A-Za-z0-9_.-] "
            "(it becomes one MQTT topic level; '/', '+', '#', spaces are not allowed)"
        )
    return value


def check_topic_prefix(value: str) -> str:
    """``value`` unchanged if it is a valid publish-topic prefix, else ``ValueError``."""
    problem = None
    if not value:
        problem = "must not be empty"
    elif "+" in value or "#" in value:
        problem = "must not contain the wildcards '+' or '#'"
    elif value.startswith("/") or value.endswith("/"):
        problem = "must not start or end with '/'"
    elif "//" in value:
        problem = "must not contain empty levels ('//')"
    elif value.startswith("$"):
        problem = "must not start with '$' (reserved for broker topics)"
    elif "\x00" in value:
        problem = "must not contain NUL characters"
    if problem is not None:
        raise ValueError(f"topic_prefix {value!r} {problem}; expected e.g. 'edgewatch/plant3'")
    return value


def check_topic_filter(value: str) -> str:
    """``value`` unchanged if it is a valid MQTT subscription filter, else ``ValueError``."""
    levels = value.split("/")
    ok = bool(value) and "\x00" not in value
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            ok = False
        if "+" in level and level != "+":
            ok = False
    if not ok:
        raise ValueError(
            f"topic filter {value!r}: expected levels separated by '/', where '+' is a whole "
            "level and '#' only the whole last level"
        )
    return value


class TlsSettings(StrictModel):
    """TLS to the broker (TLS 1.2 or newer). File paths are read when the link is built."""

    ca_file: ConfigPath | None = Field(None, description="CA bundle; None uses the system CAs")
    cert_file: ConfigPath | None = Field(
        None, description="client certificate (PEM) for mutual TLS"
    )
    key_file: ConfigPath | None = Field(None, description="client key (PEM), if not in cert_file")
    insecure: bool = Field(False, description="skip the broker hostname check (testing only)")

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TlsSettings:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("tls.key_file is set but tls.cert_file is not; set both")
        return self


class MqttSettings(StrictModel):
    """The device config's ``mqtt:`` section. Passwords come from ``password_env``/``password_file``
    (resolved by the config loader), never inline."""

    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    client_id: str | None = Field(None, min_length=1, description='default "edgewatch-<device>"')
    keepalive_s: int = Field(30, ge=1, le=65535)
    topic_prefix: str = "edgewatch"
    protocol: Literal["5", "3.1.1"] = "5"
    username: str | None = Field(None, min_length=1)
    password_env: str | None = Field(None, min_length=1)
    password_file: ConfigPath | None = Field(None, min_length=1)
    tls: TlsSettings | None = None
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    max_queued_messages: int = Field(10000, ge=1, description="QoS>0 messages kept while offline")

    @model_validator(mode="before")
    @classmethod
    def _no_inline_password(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "password" in data:
            raise ValueError(
                "inline 'password' is not allowed; use password_env (an environment variable "
                "name) or password_file (a file holding the password)"
            )
        return data

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_number(cls, value: Any) -> Any:
        # YAML reads `protocol: 5` as an int.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix(cls, value: str) -> str:
        return check_topic_prefix(value)

    @model_validator(mode="after")
    def _consistent(self) -> MqttSettings:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(
                f"reconnect_max_s ({self.reconnect_max_s}) must be >= "
                f"reconnect_min_s ({self.reconnect_min_s})"
            )
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("set only one of password_env and password_file")
        if (self.password_env or self.password_file) and self.username is None:
            raise ValueError("password_env/password_file need a username")
        return self


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A message delivered to a ``subscribe`` callback."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    received_mono_ns: int


MessageCallback = Callable[[ReceivedMessage], None]


@dataclass(frozen=True, slots=True)
class LinkStats:
    connected: bool
    connects: int
    disconnects: int
    failed_connects: int
    published: int
    acked: int
    rejected: int
    last_error: str | None

    def as_dict(self) -> dict[str, object]:
        return {
            "connected": self.connected,
            "connects": self.connects,
            "disconnects": self.disconnects,
            "failed_connects": self.failed_connects,
            "published": self.published,
            "acked": self.acked,
            "rejected": self.rejected,
            "last_error": self.last_error,
        }


class _Throttle:
    """Allows one log line per key per interval; counts what it suppressed."""

    def __init__(self, interval_s: float) -> None:
        self._interval_ns = int(interval_s * 1e9)
        self._last: dict[str, int] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> int | None:
        """None to stay quiet, else how many were suppressed since the last allowed one."""
        now = time.monotonic_ns()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval_ns:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._suppressed.pop(key, 0)


def build_tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """An SSL context for the broker connection; unreadable files become ``ConfigError``."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"mqtt.tls.ca_file {tls.ca_file!r}: can't load CA bundle: {e}") from e
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file is not None:
        try:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(
                f"mqtt.tls.cert_file {tls.cert_file!r} / key_file {tls.key_file!r}: "
                f"can't load client certificate: {e}"
            ) from e
    if tls.insecure:
        ctx.check_hostname = False
    return ctx


class MqttLink:
    """One paho client: publish with PUBACK callbacks, retained status + last will, subscriptions.

    Topics: ``<prefix>/<device_id>/status`` (retained JSON, ``state`` online/offline) and
    ``<prefix>/<device_id>/alerts/<pipeline>``. The client must use callback API version 2.
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
    ) -> None:
        if client.callback_api_version != CallbackAPIVersion.VERSION2:
            raise ValueError("MqttLink needs a paho Client built with CallbackAPIVersion.VERSION2")
        try:
            check_name("device_id", device_id)
            check_topic_prefix(topic_prefix)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self._client = client
        self.host = host
        self.port = port
        self.keepalive_s = keepalive_s
        self.topic_prefix = topic_prefix
        self.device_id = device_id
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._stop_timeout_s = stop_timeout_s

        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._disconnected = threading.Event()
        self._started = False
        self._stopping = False
        self._stopped = False
        self._closed = False
        self._outage_reported = False
        self._last_error: str | None = None
        self._connects = 0
        self._disconnects = 0
        self._failed_connects = 0
        self._published = 0
        self._acked = 0
        self._rejected = 0
        self._pending: dict[int, AckCallback | None] = {}
        self._early: OrderedDict[int, bool] = OrderedDict()
        self._status_payload = self._status_json({})
        self._subscriptions: dict[str, int] = {}
        self._throttle = _Throttle(_WARN_INTERVAL_S)

        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe

    @classmethod
    def from_settings(
        cls, settings: MqttSettings, device_id: str, password: str | None
    ) -> MqttLink:
        """Build the paho client (protocol, credentials, TLS, queue bound) and the link."""
        try:
            check_name("device_id", device_id)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if password is not None and settings.username is None:
            raise ConfigError("mqtt: a password was resolved but mqtt.username is not set")
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id or f"edgewatch-{device_id}",
            protocol=mqtt.MQTTv5 if settings.protocol == "5" else mqtt.MQTTv311,
        )
        client.enable_logger(logging.getLogger(f"{__name__}.paho"))
        client.max_queued_messages_set(settings.max_queued_messages)
        if settings.username is not None:
            client.username_pw_set(settings.username, password)
        if settings.tls is not None:
            client.tls_set_context(build_tls_context(settings.tls))
            if settings.tls.insecure:
                client.tls_insecure_set(True)
        return cls(
            client,
            host=settings.host,
            port=settings.port,
            keepalive_s=settings.keepalive_s,
            topic_prefix=settings.topic_prefix,
            device_id=device_id,
            reconnect_min_s=settings.reconnect_min_s,
            reconnect_max_s=settings.reconnect_max_s,
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
        # paho annotates the delays as int but computes with them as floats.
        self._client.reconnect_delay_set(
            cast(int, self._reconnect_min_s), cast(int, self._reconnect_max_s)
        )
        try:
            self._client.connect_async(self.host, self.port, self.keepalive_s)
        except ValueError as e:
            raise ConfigError(f"mqtt broker {self.host}:{self.port}: {e}") from e
        rc = self._client.loop_start()
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise SinkError(f"mqtt network loop didn't start: {mqtt.error_string(rc)}")
        logger.info(
            "mqtt connecting to %s:%d (status topic %s)", self.host, self.port, self.status_topic()
        )

    def stop(self) -> None:
        """Publish a retained offline status (if connected), disconnect cleanly, stop the loop."""
        with self._lock:
            if not self._started or self._stopped:
                return
            self._stopped = True
            self._stopping = True
        try:
            if self.connected:
                sent = threading.Event()
                offline = json.dumps({"state": "offline", "device_id": self.device_id})
                try:
                    self.publish(
                        self.status_topic(), offline.encode(), qos=1, retain=True, on_ack=sent.set
                    )
                except SinkError as e:
                    logger.warning("offline status not published at shutdown: %s", e)
                else:
                    if not sent.wait(self._stop_timeout_s):
                        logger.warning(
                            "offline status not acknowledged within %.1f s", self._stop_timeout_s
                        )
            with self._lock:
                unacked = len(self._pending)
            if unacked:
                logger.warning("mqtt stopping with %d message(s) not acknowledged", unacked)
        finally:
            with self._lock:
                self._closed = True
            was_connected = self.connected
            self._client.disconnect()
            if was_connected:
                # let the network thread finish the DISCONNECT before stopping it; stopping it
                # mid-way makes paho log a spurious "not connected" error
                self._disconnected.wait(self._stop_timeout_s)
            self._client.loop_stop()
            self._connected.clear()
            logger.info("mqtt link to %s:%d stopped", self.host, self.port)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        """True once connected (returns at once if already), False after ``timeout_s``."""
        return self._connected.wait(timeout_s)

    @property
    def last_error(self) -> str | None:
        with self._lock:
            return self._last_error

    def stats(self) -> LinkStats:
        with self._lock:
            return LinkStats(
                connected=self.connected,
                connects=self._connects,
                disconnects=self._disconnects,
                failed_connects=self._failed_connects,
                published=self._published,
                acked=self._acked,
                rejected=self._rejected,
                last_error=self._last_error,
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
    ) -> int:
        """Hand a message to paho; returns its mid.

        ``on_ack`` runs on the network thread once the broker acknowledged it (PUBACK for QoS 1,
        PUBCOMP for QoS 2; for QoS 0 once written to the socket). While disconnected, QoS 1/2
        messages are queued by paho and sent after reconnecting.
        """
        with self._lock:
            if self._closed:
                raise SinkError(f"publish to {topic}: the MQTT link is stopped")
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
                self._pending[info.mid] = on_ack
        if early and on_ack is not None:
            self._run_ack(on_ack)
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
        if changed and self.connected:
            self._publish_status()

    def _status_json(self, doc: Mapping[str, object]) -> bytes:
        body: dict[str, object] = {"state": "online", **doc, "device_id": self.device_id}
        return json.dumps(body, separators=(",", ":")).encode()

    def _publish_status(self) -> None:
        with self._lock:
            payload = self._status_payload
        try:
            self.publish(self.status_topic(), payload, qos=1, retain=True)
        except SinkError as e:
            logger.warning("status not published: %s", e)

    # ----------------------------------------------------------- subscribing

    def subscribe(self, topic_filter: str, qos: int, callback: MessageCallback) -> None:
        """Deliver messages matching ``topic_filter`` to ``callback`` (on the network thread).

        Subscriptions are remembered and renewed after every reconnect. A callback that raises
        is logged (rate-limited) and doesn't stop the link.
        """
        try:
            check_topic_filter(topic_filter)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if qos not in (0, 1, 2):
            raise ConfigError(f"subscribe {topic_filter!r}: qos must be 0, 1 or 2, got {qos!r}")

        def deliver(_client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
            received = ReceivedMessage(
                topic=msg.topic,
                payload=bytes(msg.payload),
                qos=msg.qos,
                retain=bool(msg.retain),
                received_mono_ns=time.monotonic_ns(),
            )
            try:
                callback(received)
            except Exception:
                suppressed = self._throttle.allow(f"callback:{topic_filter}")
                if suppressed is not None:
                    logger.exception(
                        "subscription callback for %r failed on %s (%d similar suppressed)",
                        topic_filter,
                        received.topic,
                        suppressed,
                    )

        with self._lock:
            self._subscriptions[topic_filter] = qos
        self._client.message_callback_add(topic_filter, deliver)
        if self.connected:
            rc, _mid = self._client.subscribe(topic_filter, qos)
            if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                raise SourceError(f"subscribe to {topic_filter} failed: {mqtt.error_string(rc)}")

    def _resubscribe(self) -> None:
        with self._lock:
            subs = list(self._subscriptions.items())
        if not subs:
            return
        rc, _mid = self._client.subscribe(subs)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            logger.warning(
                "re-subscribing %s failed: %s", [f for f, _ in subs], mqtt.error_string(rc)
            )

    # ------------------------------------------------------ paho callbacks

    def _on_connect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self._connect_failed(f"broker refused connection: {reason_code}")
            return
        with self._lock:
            self._connects += 1
            reconnect = self._connects > 1
            failures = self._failed_connects
            self._outage_reported = False
        self._disconnected.clear()
        self._connected.set()
        if reconnect:
            logger.info(
                "mqtt reconnected to %s:%d (%d failed attempts so far)",
                self.host,
                self.port,
                failures,
            )
        else:
            logger.info("mqtt connected to %s:%d", self.host, self.port)
        self._publish_status()
        self._resubscribe()

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: object) -> None:
        # paho calls this from inside its `except OSError` block, so the error is still current.
        exc = sys.exception()
        reason = f"{type(exc).__name__}: {exc}" if exc is not None else "connection failed"
        self._connect_failed(reason)

    def _connect_failed(self, reason: str) -> None:
        with self._lock:
            self._failed_connects += 1
            self._last_error = reason
            first = not self._outage_reported
            self._outage_reported = True
        if first:
            logger.warning(
                "mqtt connect to %s:%d failed: %s; retrying every %.1f-%.1f s",
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
        self._disconnected.set()
        if not was_connected:
            return  # the end of a refused connect, already reported by _connect_failed
        with self._lock:
            self._disconnects += 1
            stopping = self._stopping
            if not stopping:
                self._last_error = f"connection lost: {reason_code}"
                self._outage_reported = True
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
        with self._lock:
            if ok:
                self._acked += 1
            else:
                self._rejected += 1
            known = mid in self._pending
            callback = self._pending.pop(mid, None)
            if not known:
                # The ack beat publish() to registering the mid; publish() settles it.
                self._early[mid] = ok
                while len(self._early) > _EARLY_ACKS_MAX:
                    self._early.popitem(last=False)
        if not ok:
            suppressed = self._throttle.allow("rejected")
            if suppressed is not None:
                logger.warning(
                    "broker rejected message mid %d: %s (%d similar suppressed)",
                    mid,
                    reason_code,
                    suppressed,
                )
        elif callback is not None:
            self._run_ack(callback)

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
        except Exception:
            suppressed = self._throttle.allow("ack-callback")
            if suppressed is not None:
                logger.exception("publish ack callback failed (%d similar suppressed)", suppressed)


__all__ = [
    "NAME_PATTERN",
    "AckCallback",
    "LinkStats",
    "MessageCallback",
    "MqttLink",
    "MqttSettings",
    "ReceivedMessage",
    "TlsSettings",
    "build_tls_context",
    "check_name",
    "check_topic_filter",
    "check_topic_prefix",
]
