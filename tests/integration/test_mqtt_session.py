"""MqttLink against a real Mosquitto: paced reconnects, broker sessions that keep QoS 1 messages
while the device is away (MQTT 5 and 3.1.1), renewal of subscriptions a restart lost, the
backlog for subscribers that come after CONNACK, and the MQTT 5 packet size limit."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from runtime.app import App
from runtime.config.loader import load_config
from runtime.mqtt_link import ReceivedMessage
from runtime.processing.decoders.base import DecoderOptions
from runtime.processing.decoders.json_payload import JsonDecoder
from runtime.sources.mqtt_sensor import MqttSensorSource
from tests.brokers import (
    LINK_DEVICE,
    BrokerFactory,
    BrokerOptions,
    LinkFactory,
    MosquittoBroker,
    wait_until,
    write_password_file,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEVICE = LINK_DEVICE  # make_link's (tests/conftest.py)
CLIENT_ID = f"edgewatch-{DEVICE}"
PROTOCOLS = ["5", "3.1.1"]


class Collector:
    """A subscription callback that keeps every message."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.messages: list[ReceivedMessage] = []

    def __call__(self, message: ReceivedMessage) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def wait_for(self, n: int, timeout_s: float = 5.0) -> list[ReceivedMessage]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= n, timeout_s):
                got = [(m.topic, m.payload[:60]) for m in self.messages]
                raise AssertionError(f"expected {n} message(s) within {timeout_s} s, got {got}")
            return list(self.messages)

    @property
    def payloads(self) -> list[bytes]:
        with self._cond:
            return [m.payload for m in self.messages]


def publish(
    broker: MosquittoBroker,
    messages: list[tuple[str, bytes]],
    *,
    retain: bool = False,
    auth: tuple[str, str] | None = None,
) -> None:
    """Publish QoS 1 messages from a real paho client and wait for every PUBACK."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{time.monotonic_ns()}")
    if auth is not None:
        client.username_pw_set(*auth)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = [
            client.publish(topic, payload, qos=1, retain=retain) for topic, payload in messages
        ]
        for info in infos:
            info.wait_for_publish(5)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def subacks(broker: MosquittoBroker, client_id: str = CLIENT_ID) -> int:
    return broker.log_text().count(f"Sending SUBACK to {client_id}")


def wait_subacks(broker: MosquittoBroker, n: int, client_id: str = CLIENT_ID) -> None:
    wait_until(
        lambda: subacks(broker, client_id) >= n,
        timeout_s=5,
        what=f"{n} SUBACK(s) to {client_id}; broker log:\n{broker.log_text()[-2000:]}",
    )


# ----------------------------------------------------------------- reconnects


def test_reconnect_attempts_back_off_then_the_link_reconnects_after_a_broker_restart(
    broker: MosquittoBroker, make_link: LinkFactory
) -> None:
    link = make_link(broker.port, reconnect_min_s=0.1, reconnect_max_s=0.4)
    assert link.wait_connected(5), link.last_error

    broker.kill()
    wait_until(lambda: not link.connected, what="the link to notice the dead broker")
    lost = time.monotonic()
    wait_until(lambda: link.stats().failed_connects >= 4, timeout_s=5, what="4 failed attempts")
    elapsed = time.monotonic() - lost
    # waits before the attempts: [0.05, 0.1] + [0.1, 0.2] + [0.2, 0.4] + [0.2, 0.4] s. paho on
    # its own (its delay is 10 ms now) would have made dozens of attempts in that time.
    assert 0.5 <= elapsed < 3.0, elapsed
    assert link.stats().failed_connects <= 5

    broker.restart()
    restarted = time.monotonic()
    assert link.wait_connected(3), link.last_error
    assert time.monotonic() - restarted < 1.5  # the next wait is at most reconnect_max_s
    stats = link.stats()
    assert (stats.connects, stats.disconnects, stats.last_error) == (2, 1, stats.last_error)
    assert stats.session_present is False  # no persistence: the restart lost the session


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_subscriptions_are_renewed_when_a_broker_restart_lost_the_session(
    broker: MosquittoBroker, make_link: LinkFactory, protocol: str
) -> None:
    got = Collector()
    link = make_link(broker.port, start=False, protocol=protocol)
    link.subscribe("sensors/#", 1, got)
    link.start()
    wait_subacks(broker, 1)
    publish(broker, [("sensors/a", b"before")])
    got.wait_for(1)

    broker.kill()
    wait_until(lambda: not link.connected, what="the link to notice the dead broker")
    broker.restart()  # persistence off: the new broker has no session for the link
    assert link.wait_connected(5), link.last_error
    assert link.stats().session_present is False
    wait_subacks(broker, 2)  # the link's own renewal, the only thing that restores delivery
    publish(broker, [("sensors/b", b"after")])
    assert [m.payload for m in got.wait_for(2)] == [b"before", b"after"]


def test_stop_during_a_long_backoff_returns_at_once_without_another_attempt(
    broker: MosquittoBroker, make_link: LinkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    link = make_link(broker.port, reconnect_min_s=20.0, reconnect_max_s=30.0)
    assert link.wait_connected(5), link.last_error
    broker.kill()
    wait_until(
        lambda: link.stats().reconnect_delay_s > 0, what="the link to start its back-off wait"
    )
    assert 10.0 <= link.stats().reconnect_delay_s <= 20.0

    started = time.monotonic()
    link.stop()
    assert time.monotonic() - started < 1.0
    stats = link.stats()
    assert stats.failed_connects == 0  # the abandoned attempt is not a failure
    assert stats.last_error is not None and "connection lost" in stats.last_error
    logged = [r.getMessage() for r in caplog.records]
    assert not [m for m in logged if "on_pre_connect" in m or "abandoned" in m], logged


# ------------------------------------------------------------------- sessions


def connect_subscribe_and_leave(
    broker: MosquittoBroker, make_link: LinkFactory, protocol: str
) -> None:
    """A device subscribes to sensors/# at QoS 1 and goes away, leaving its session behind."""
    first = make_link(broker.port, start=False, protocol=protocol)
    first.subscribe("sensors/#", 1, Collector())
    first.start()
    wait_subacks(broker, 1)
    first.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_qos1_messages_sent_while_the_device_was_away_arrive_on_its_next_connect(
    broker: MosquittoBroker, make_link: LinkFactory, protocol: str
) -> None:
    connect_subscribe_and_leave(broker, make_link, protocol)

    away = [(f"sensors/s{i}", b'{"x": %d}' % i) for i in range(3)]
    publish(broker, away)

    got = Collector()
    second = make_link(broker.port, start=False, protocol=protocol)
    second.subscribe("sensors/#", 1, got)
    second.start()
    received = got.wait_for(3)
    assert [(m.topic, m.payload, m.qos) for m in received] == [(t, p, 1) for t, p in away]
    assert second.stats().session_present is True


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_clean_start_discards_what_the_broker_queued(
    broker: MosquittoBroker, make_link: LinkFactory, protocol: str
) -> None:
    connect_subscribe_and_leave(broker, make_link, protocol)
    publish(broker, [("sensors/lost", b"queued")])

    got = Collector()
    second = make_link(broker.port, start=False, protocol=protocol, clean_start=True)
    second.subscribe("sensors/#", 1, got)
    second.start()
    wait_subacks(broker, 2)
    publish(broker, [("sensors/probe", b"probe")])
    # a resumed session would have delivered the queued message before the probe
    assert [m.payload for m in got.wait_for(1)] == [b"probe"]
    assert second.stats().session_present is False


def test_a_killed_device_process_finds_its_readings_queued_when_it_comes_back(
    broker: MosquittoBroker, make_link: LinkFactory, tmp_path: Path
) -> None:
    script = tmp_path / "device.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, threading
            from runtime.mqtt_link import MqttLink
            from runtime.mqtt_settings import MqttSettings
            link = MqttLink.from_settings(MqttSettings(port={broker.port}), {DEVICE!r}, None)
            link.subscribe("sensors/#", 1, lambda message: None)
            link.start()
            threading.Event().wait(60)
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(script)], cwd=REPO)
    try:
        wait_subacks(broker, 1)
    finally:
        proc.kill()  # no DISCONNECT, no offline status: the will fires
        proc.wait(5)
    wait_until(
        lambda: (
            re.search(
                rf"Client {CLIENT_ID} (closed its connection|disconnected)", broker.log_text()
            )
            is not None
        ),
        what="the broker to notice the dead device",
    )
    publish(broker, [("sensors/a", b"1"), ("sensors/b", b"2")])

    got = Collector()
    link = make_link(broker.port, start=False)
    link.subscribe("sensors/#", 1, got)
    link.start()
    assert [m.payload for m in got.wait_for(2)] == [b"1", b"2"]


def test_readings_queued_for_a_sensor_source_survive_a_planned_restart_in_app_order(
    broker: MosquittoBroker, make_link: LinkFactory
) -> None:
    """The app stops its sources before the link, and starts the link before its sources: the
    source leaves its subscription in the session, and the readings the broker sends right after
    CONNACK wait in the link's backlog until the new source subscribes."""
    decoder = JsonDecoder({"x": "x"}, options=DecoderOptions(key_topic_levels=(1,)))
    link1 = make_link(broker.port)
    assert link1.wait_connected(5), link1.last_error
    source1 = MqttSensorSource(link1, ["plant/+/pump"], decoder)
    source1.start()
    wait_subacks(broker, 1)
    source1.stop()
    link1.stop()

    publish(broker, [(f"plant/p{i}/pump", json.dumps({"x": i}).encode()) for i in range(3)])

    link2 = make_link(broker.port)
    wait_until(lambda: link2.stats().unrouted_held == 3, what="the queued readings to arrive")
    assert link2.stats().session_present is True
    source2 = MqttSensorSource(link2, ["plant/+/pump"], decoder)
    source2.start()
    readings = source2.read(timeout_s=2.0)
    assert [(r.key, r.values.tolist()) for r in readings] == [
        ("p0", [0.0]),
        ("p1", [1.0]),
        ("p2", [2.0]),
    ]
    assert link2.stats().unrouted_held == 0
    publish(broker, [("plant/p9/pump", b'{"x": 9}')])  # and live delivery goes on
    wait_until(lambda: source2.status()["received"] == 4, what="a live reading")
    source2.stop()


def test_a_resumed_mqtt5_session_does_not_deliver_retained_messages_again(
    make_broker: BrokerFactory, make_link: LinkFactory
) -> None:
    broker = make_broker(BrokerOptions(persistence=True))
    publish(broker, [("cfg/a", b"retained")], retain=True)
    got = Collector()
    link = make_link(broker.port, start=False)
    link.subscribe("cfg/#", 1, got)
    link.start()
    assert [(m.payload, m.retain) for m in got.wait_for(1)] == [(b"retained", True)]

    broker.restart()  # SIGTERM: the broker saves the session and the retained message
    wait_until(lambda: link.stats().connects == 2, what="the link to reconnect")
    assert link.stats().session_present is True
    wait_subacks(broker, 2)  # renewed, with Retain Handling "only if the subscription is new"
    publish(broker, [("cfg/b", b"live")])
    assert [m.payload for m in got.wait_for(2)] == [b"retained", b"live"]


def test_the_broker_drops_messages_larger_than_max_packet_bytes(
    broker: MosquittoBroker, make_link: LinkFactory
) -> None:
    got = Collector()
    link = make_link(broker.port, start=False, max_packet_bytes=2048)
    link.subscribe("big/#", 1, got)
    link.start()
    wait_subacks(broker, 1)
    publish(broker, [("big/a", b"x" * 4000), ("big/b", b"small")])
    assert [m.payload for m in got.wait_for(1)] == [b"small"]  # in order: the big one is gone
    assert link.connected


# ------------------------------------------------------------------- the app

APP_PASSWORD = "s3cret-pump-gw-91c2"


def test_the_app_gets_readings_sent_during_a_restart_and_never_shows_its_password(
    make_broker: BrokerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    broker = make_broker(
        BrokerOptions(password_file=write_password_file(tmp_path / "passwd", {"gw": APP_PASSWORD}))
    )
    password_file = tmp_path / "mqtt-password"
    password_file.write_text(APP_PASSWORD + "\n")
    password_file.chmod(0o600)
    config = {
        "device": {"id": "gw-app"},
        "mqtt": {
            "host": broker.host,
            "port": broker.port,
            "username": "gw",
            "password_file": str(password_file),
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.2,
        },
        "models": {"pumps": {"bundle": str(REPO / "models/demo-pump-anomaly/1.0.0")}},
        "sensor_pipelines": [
            {
                "name": "pumps",
                "source": {
                    "type": "mqtt",
                    "topics": ["plant/+/pump"],
                    "decoder": {
                        "type": "json",
                        "fields": {"vibration": "vib", "current": "amps"},
                        "key_topic_levels": [1],
                    },
                },
                "model": "pumps",
                "rules": {"bearing": {"type": "threshold"}},
            }
        ],
        "sinks": [{"type": "mqtt", "qos": 1}],
    }
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(config))

    statuses: list[str] = []
    first = App.from_config(load_config(path, {}))
    first.start()
    try:
        assert first.link is not None and first.link.wait_connected(5), first.link
        wait_subacks(broker, 1, "edgewatch-gw-app")
        statuses.append(json.dumps(first.status()))
    finally:
        first.stop()  # a planned restart: sources stop first, then the link

    readings = [(f"plant/p{i}/pump", b'{"vib": 0.1, "amps": 10}') for i in range(5)]
    publish(broker, readings, auth=("gw", APP_PASSWORD))

    second = App.from_config(load_config(path, {}))
    second.start()
    try:
        (pipeline,) = second.pipelines

        def received() -> int:
            source: Any = pipeline.status()["source"]
            return int(source["received"])

        wait_until(lambda: received() == 5, what="the readings queued during the restart")
        assert second.link is not None and second.link.stats().session_present is True
        second.publish_status()
        assert second.link.flush(5)  # the broker retains this status, not the one from start()
        statuses.append(json.dumps(second.status()))
        retained = retained_status(broker, "edgewatch/gw-app/status", ("gw", APP_PASSWORD))
    finally:
        second.stop()

    assert json.loads(retained)["mqtt"]["session_present"] is True
    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    for shown in [logged, retained, *statuses]:
        assert APP_PASSWORD not in shown


def retained_status(broker: MosquittoBroker, topic: str, auth: tuple[str, str]) -> str:
    got = threading.Event()
    payload: list[str] = []

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        payload.append(msg.payload.decode())
        got.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="status-reader")
    client.username_pw_set(*auth)
    client.on_message = on_message
    client.connect(broker.host, broker.port)
    client.subscribe(topic, 1)
    client.loop_start()
    try:
        assert got.wait(5), "no retained status"
    finally:
        client.disconnect()
        client.loop_stop()
    return payload[0]
