"""``edgewatch record TOPIC FILE``: append every MQTT message on a topic filter to a JSONL file.

One line per message: ``{"received_at": <epoch s>, "topic", "qos", "retain", "payload": <text>}``,
with ``"payload_b64"`` instead of ``"payload"`` when the bytes are not UTF-8. The file is line
buffered, so a killed recorder loses at most the line being written. The ``replay`` sensor source
plays such a file back through a decoder.

A plain paho client rather than an ``MqttLink``: the link publishes a retained status and a last
will for its device id, which a recorder must not leave behind on the broker.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO, cast

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from runtime.errors import SourceError
from runtime.mqtt_link import paho_client
from runtime.mqtt_settings import MqttSettings, check_topic_filter

logger = logging.getLogger(__name__)


def record_line(received_at_ns: int, topic: str, payload: bytes, qos: int, retain: bool) -> str:
    """One message as a recording line (with the trailing newline)."""
    doc: dict[str, object] = {
        "received_at": received_at_ns / 1e9,
        "topic": topic,
        "qos": qos,
        "retain": retain,
    }
    try:
        doc["payload"] = payload.decode("utf-8")
    except UnicodeDecodeError:
        doc["payload_b64"] = base64.b64encode(payload).decode("ascii")
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n"


@dataclass(frozen=True, slots=True)
class RecordSummary:
    messages: int
    payload_bytes: int
    error: str | None


class Recorder:
    """Subscribes ``client`` to ``topic_filter`` and writes each message to ``out``.

    Re-subscribes after every reconnect (paho reconnects by itself). Ends when ``count`` messages
    were written, when the broker refuses the connection or subscription, or when writing fails.
    """

    def __init__(
        self,
        client: mqtt.Client,
        out: TextIO,
        topic_filter: str,
        *,
        host: str,
        port: int,
        qos: int = 1,
        count: int | None = None,
        keepalive_s: int = 30,
    ) -> None:
        check_topic_filter(topic_filter)
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {qos}")
        if count is not None and count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        self._client = client
        self._out = out
        self.topic_filter = topic_filter
        self.host = host
        self.port = port
        self.qos = qos
        self.count = count
        self.keepalive_s = keepalive_s
        self.subscribed = threading.Event()
        self.on_subscribed: Callable[[], None] | None = None
        """Called once, on paho's thread, when the broker first accepted the subscription."""
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._messages = 0
        self._bytes = 0
        self._error: str | None = None
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message

    def start(self) -> None:
        """Connect (synchronously, so an unreachable broker fails here) and start the loop."""
        try:
            self._client.connect(self.host, self.port, self.keepalive_s)
        except (OSError, ValueError) as e:
            raise SourceError(f"can't connect to {self.host}:{self.port}: {e}") from e
        rc = self._client.loop_start()
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise SourceError(f"mqtt network loop didn't start: {mqtt.error_string(rc)}")

    def wait(self, stop: threading.Event, seconds: float | None) -> RecordSummary:
        """Record until ``stop`` is set, ``seconds`` have passed, or the recorder is done."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while not stop.is_set() and not self.done.is_set():
            left = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if left <= 0:
                break
            self.done.wait(left)
        return self.summary()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self.done.set()

    def summary(self) -> RecordSummary:
        with self._lock:
            return RecordSummary(self._messages, self._bytes, self._error)

    def _fail(self, error: str) -> None:
        with self._lock:
            self._error = error
        logger.error("%s", error)
        self.done.set()

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self._fail(f"broker {self.host}:{self.port} refused the connection: {reason_code}")
            return
        rc, _mid = client.subscribe(self.topic_filter, self.qos)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            self._fail(f"subscribe to {self.topic_filter} failed: {mqtt.error_string(rc)}")

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _mid: int,
        reason_codes: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            self._fail(f"broker refused the subscription to {self.topic_filter}: {failed[0]}")
        elif not self.subscribed.is_set():
            self.subscribed.set()
            logger.info("subscribed to %s on %s:%d", self.topic_filter, self.host, self.port)
            if self.on_subscribed is not None:
                self.on_subscribed()
        else:
            logger.info("re-subscribed to %s", self.topic_filter)

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if not self.done.is_set():
            logger.warning(
                "connection to %s:%d lost (%s); reconnecting", self.host, self.port, reason_code
            )

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        line = record_line(time.time_ns(), msg.topic, payload, msg.qos, bool(msg.retain))
        with self._lock:
            if self.done.is_set():
                return
            try:
                self._out.write(line)
            except OSError as e:
                self._error = f"writing the recording failed: {e}"
                self.done.set()
                return
            self._messages += 1
            self._bytes += len(payload)
            if self.count is not None and self._messages >= self.count:
                self.done.set()


def build_recorder(
    settings: MqttSettings,
    password: str | None,
    out: TextIO,
    topic_filter: str,
    *,
    qos: int,
    count: int | None,
) -> Recorder:
    """A recorder with its own client id (``edgewatch-record-<pid>``), never the device's."""
    client = paho_client(settings, f"edgewatch-record-{os.getpid()}", password)
    # paho annotates the delays as int but computes with them as floats.
    client.reconnect_delay_set(
        cast(int, settings.reconnect_min_s), cast(int, settings.reconnect_max_s)
    )
    return Recorder(
        client,
        out,
        topic_filter,
        host=settings.host,
        port=settings.port,
        qos=qos,
        count=count,
        keepalive_s=settings.keepalive_s,
    )


def open_recording(path: Path) -> TextIO:
    """``path`` opened for appending, line buffered; SourceError naming it when it can't be."""
    try:
        return open(path, "a", encoding="utf-8", buffering=1)
    except OSError as e:
        raise SourceError(f"can't open {path} for writing: {e.strerror or e}") from e
