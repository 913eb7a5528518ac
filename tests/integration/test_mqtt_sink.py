"""MqttLink + MqttSink against a real Mosquitto started on a free loopback port."""

from __future__ import annotations

import itertools
import json
import logging
import socket
import subprocess
import threading
import time
from importlib import resources
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError

from runtime.errors import ConfigError, SinkError
from runtime.mqtt_link import MqttLink, ReceivedMessage
from runtime.mqtt_settings import MqttSettings, TlsSettings
from runtime.ratelimit import RateLimitFilter
from runtime.sinks.base import SINKS, SinkContext
from runtime.sinks.mqtt import MqttSink, MqttSinkConfig
from tests.brokers import (
    BrokerFactory,
    BrokerOptions,
    LinkFactory,
    MosquittoBroker,
    SubscriberFactory,
    find_tool,
    free_port,
    wait_until,
    write_password_file,
)
from tests.factories import make_alert

pytestmark = pytest.mark.integration

DEVICE = "gw01"
PREFIX = "edgewatch"
STATUS_TOPIC = f"{PREFIX}/{DEVICE}/status"
ALERTS_FILTER = f"{PREFIX}/{DEVICE}/alerts/#"


def alert_validator() -> Draft202012Validator:
    text = resources.files("runtime").joinpath("schemas/alert.schema.json").read_text()
    return Draft202012Validator(
        json.loads(text), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def connected_link(make_link: LinkFactory, broker: MosquittoBroker, **settings: Any) -> MqttLink:
    link = make_link(broker.port, **settings)
    assert link.wait_connected(5), f"link never connected: {link.last_error}"
    return link


def mqtt_sink(link: MqttLink, **config: Any) -> MqttSink:
    """A sink publishing directly (no outbox): tests/integration/test_outbox.py covers that."""
    config.setdefault("outbox", None)
    cfg = MqttSinkConfig(type="mqtt", **config)
    sink = SINKS.get("mqtt").from_config(cfg, SinkContext(DEVICE, PREFIX, link))
    assert isinstance(sink, MqttSink)
    return sink


# ------------------------------------------------------------------------- alerts


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_alert_arrives_on_pipeline_topic_and_matches_schema(
    broker: MosquittoBroker,
    subscriber: SubscriberFactory,
    make_link: LinkFactory,
    caplog: pytest.LogCaptureFixture,
    qos: int,
) -> None:
    caplog.set_level(logging.INFO, logger="runtime.sinks.mqtt")
    sub = subscriber(broker, ALERTS_FILTER, qos=2)
    sink = mqtt_sink(connected_link(make_link, broker), qos=qos)
    alert = make_alert(pipeline="front-door.v2", captured_mono_ns=time.monotonic_ns() - 4_000_000)

    sink.publish(alert)

    [msg] = sub.wait_for(1)
    assert msg.topic == f"{PREFIX}/{DEVICE}/alerts/front-door.v2"
    assert msg.qos == qos
    assert msg.retain is False
    payload = msg.json()
    errors = [e.message for e in alert_validator().iter_errors(payload)]
    assert errors == []
    assert payload == json.loads(json.dumps(alert.as_dict()))
    wait_until(lambda: sink.status()["acked"] == 1, what="the sink to see the ack")
    [latency] = sink.ack_latencies_ms()
    assert 4.0 <= latency < 5000.0  # captured 4 ms before publish
    status = sink.status()
    assert status["published"] == 1
    assert status["ack_latency_p50_ms"] == status["ack_latency_p99_ms"] == round(latency, 3)
    acked_lines = [r.getMessage() for r in caplog.records if "alert acked" in r.getMessage()]
    assert len(acked_lines) == 1
    assert (
        "pipeline=front-door.v2 rule=person-at-door state=raised label=person score=0.88"
        in (acked_lines[0])
    )


def test_on_ack_fires_once_per_message_with_its_mid(
    broker: MosquittoBroker, subscriber: SubscriberFactory, make_link: LinkFactory
) -> None:
    sub = subscriber(broker, f"{PREFIX}/{DEVICE}/bulk")
    link = connected_link(make_link, broker)
    acked: list[int] = []
    mids = [
        link.publish(
            f"{PREFIX}/{DEVICE}/bulk",
            str(i).encode(),
            qos=1,
            on_ack=lambda i=i: acked.append(i),  # type: ignore[misc]
        )
        for i in range(50)
    ]

    assert [m.payload for m in sub.wait_for(50)] == [str(i).encode() for i in range(50)]
    wait_until(lambda: len(acked) == 50, what="50 acks")
    assert sorted(acked) == list(range(50))
    assert len(set(mids)) == 50
    stats = link.stats()
    assert stats.published >= 51  # 50 + the online status
    assert stats.acked >= 51
    assert stats.rejected == 0
    assert link.status() == stats.as_dict()


def test_sink_percentiles_cover_the_last_1024_acks(
    broker: MosquittoBroker, make_link: LinkFactory
) -> None:
    sink = mqtt_sink(connected_link(make_link, broker), qos=0)
    for i in range(1030):
        sink.publish(make_alert(seq=i))
    wait_until(lambda: sink.status()["acked"] == 1030, what="1030 acks")
    latencies = sink.ack_latencies_ms()
    assert len(latencies) == 1024
    status = sink.status()
    p50, p99 = status["ack_latency_p50_ms"], status["ack_latency_p99_ms"]
    assert isinstance(p50, float) and isinstance(p99, float)
    assert min(latencies) <= p50 <= p99 <= max(latencies)


def test_sink_without_mqtt_section_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="mqtt"):
        MqttSink.from_config(MqttSinkConfig(type="mqtt"), SinkContext(DEVICE, PREFIX, None))


# ------------------------------------------------------------------------- status


def test_retained_online_status_then_offline_after_clean_stop(
    broker: MosquittoBroker, subscriber: SubscriberFactory, make_link: LinkFactory
) -> None:
    link = make_link(broker.port, start=False)
    link.set_status({"pipelines": 2, "state": "degraded"})
    link.start()
    assert link.wait_connected(5)

    first = subscriber(broker, STATUS_TOPIC).wait_for(1)[0]
    assert first.retain is True
    assert first.json() == {"state": "degraded", "pipelines": 2, "device_id": DEVICE}

    live = subscriber(broker, STATUS_TOPIC)
    live.wait_for(1)
    link.set_status({"pipelines": 2, "state": "degraded"})  # unchanged: not re-published
    link.set_status({"pipelines": 3})
    second = live.wait_for(2)[1]
    assert second.json() == {"state": "online", "pipelines": 3, "device_id": DEVICE}
    assert second.retain is False  # delivered live

    link.stop()
    assert not link.connected
    with pytest.raises(SinkError, match="stopped"):
        link.publish(STATUS_TOPIC, b"{}")
    last = subscriber(broker, STATUS_TOPIC).wait_for(1)[0]
    assert last.retain is True
    assert last.json() == {"state": "offline", "device_id": DEVICE}
    # A clean DISCONNECT: the offline status came from stop(), not from the last will.
    assert f"Received DISCONNECT from edgewatch-{DEVICE}" in broker.log_text()
    assert len(live.messages) == 3


def test_set_status_rejects_documents_that_are_not_json(
    broker: MosquittoBroker, make_link: LinkFactory
) -> None:
    link = make_link(broker.port, start=False)
    with pytest.raises(ValueError, match="JSON"):
        link.set_status({"when": object()})


def test_last_will_then_online_again_when_the_connection_dies(
    broker: MosquittoBroker, subscriber: SubscriberFactory
) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="will-test", protocol=mqtt.MQTTv5)
    link = MqttLink(
        client,
        host=broker.host,
        port=broker.port,
        keepalive_s=30,
        topic_prefix=PREFIX,
        device_id=DEVICE,
        reconnect_min_s=0.05,
        reconnect_max_s=0.2,
    )
    link.start()
    try:
        assert link.wait_connected(5)
        sub = subscriber(broker, STATUS_TOPIC)
        assert sub.wait_for(1)[0].json()["state"] == "online"

        sock = client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)  # the TCP connection dies without a DISCONNECT

        states = [m.json()["state"] for m in sub.wait_for(3)]
        assert states == ["online", "offline", "online"]
        assert link.wait_connected(5)
        stats = link.stats()
        assert (stats.connects, stats.disconnects) == (2, 1)
        assert stats.last_error is not None and "connection lost" in stats.last_error
    finally:
        link.stop()


# ------------------------------------------------------------------ broker outages


def test_reconnects_after_broker_restart_and_republishes_online_status(
    broker: MosquittoBroker, subscriber: SubscriberFactory, make_link: LinkFactory
) -> None:
    link = connected_link(make_link, broker)
    link.set_status({"pipelines": 1})

    broker.kill()
    wait_until(lambda: not link.connected, what="the link to notice the dead broker")
    broker.restart()  # no persistence: the retained status is gone with the old broker

    assert link.wait_connected(5), link.last_error
    # paho first re-sends what the dead broker never acknowledged (the statuses published just
    # before the kill), then the link publishes the current one: the retained status is the
    # current one once the link has nothing pending
    assert link.flush(5)
    retained = subscriber(broker, STATUS_TOPIC).wait_for(1)[0]
    assert retained.retain is True
    assert retained.json() == {"state": "online", "pipelines": 1, "device_id": DEVICE}
    stats = link.stats()
    assert (stats.connects, stats.disconnects) == (2, 1)


def test_a_status_left_unacknowledged_by_a_dead_broker_never_overwrites_a_newer_one(
    broker: MosquittoBroker, subscriber: SubscriberFactory, make_link: LinkFactory
) -> None:
    """paho re-sends unacknowledged messages after ``on_connect``: the status published on
    reconnect must wait for the stale one, or the broker keeps the stale one as retained."""
    link = connected_link(make_link, broker)
    broker.freeze()
    link.set_status({"version": "stale"})  # sent, never acknowledged
    broker.kill()
    wait_until(lambda: not link.connected, what="the link to notice the dead broker")
    link.set_status({"version": "current"})  # stored while offline
    broker.start()

    assert link.wait_connected(5), link.last_error
    assert link.flush(5)
    retained = subscriber(broker, STATUS_TOPIC).wait_for(1)[0]
    assert retained.json()["version"] == "current"


def test_qos1_alerts_published_while_broker_is_down_arrive_after_restart(
    make_broker: BrokerFactory, subscriber: SubscriberFactory, make_link: LinkFactory
) -> None:
    broker = make_broker(BrokerOptions(persistence=True))
    # A persistent session that the broker saves to disk, so it survives SIGKILL and the broker
    # queues alerts for it no matter whether the link or the subscriber reconnects first.
    sub = subscriber(broker, ALERTS_FILTER, persistent=True, client_id="archiver")
    wait_until(lambda: saved_after(broker.log_text(), "Received SUBSCRIBE from archiver"), 5)
    link = connected_link(make_link, broker)
    sink = mqtt_sink(link)

    broker.kill()
    wait_until(lambda: not link.connected, what="the link to notice the dead broker")
    for seq in range(3):
        sink.publish(make_alert(seq=seq))  # queued by paho, no exception
    assert sink.status()["acked"] == 0

    broker.restart()
    received = sub.wait_for(3, timeout_s=10)
    assert [m.json()["seq"] for m in received] == [0, 1, 2]
    assert {m.topic for m in received} == {f"{PREFIX}/{DEVICE}/alerts/door"}
    wait_until(lambda: sink.status()["acked"] == 3, what="the queued alerts to be acked")
    assert link.stats().connects == 2


def saved_after(log: str, marker: str) -> bool:
    at = log.find(marker)
    return at >= 0 and "Saving in-memory database" in log[at:]


def test_unreachable_broker_does_not_raise_and_reports_the_error(
    make_link: LinkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    link = make_link(free_port())  # nothing listens there

    wait_until(lambda: link.stats().failed_connects >= 3, what="3 failed connects")
    assert not link.connected
    assert link.last_error is not None and "refused" in link.last_error.lower()
    warnings = [
        r for r in caplog.records if r.name == "runtime.mqtt_link" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1  # once per outage, not once per attempt
    with pytest.raises(SinkError, match="alerts/door"):
        link.publish(link.alert_topic("door"), b"{}", qos=0)
    assert isinstance(link.publish(link.alert_topic("door"), b"{}", qos=1), int)  # queued

    started = time.monotonic()
    link.stop()
    assert time.monotonic() - started < 3.0


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_bad_password_is_retried_and_logged_once_without_the_password(
    make_broker: BrokerFactory,
    make_link: LinkFactory,
    tmp_path: Any,
    caplog: pytest.LogCaptureFixture,
    protocol: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "wrong-battery-staple-42"
    passwd = write_password_file(tmp_path / "passwd", {"edge": "correct-horse"})
    broker = make_broker(BrokerOptions(password_file=passwd))
    link = make_link(
        broker.port, username="edge", password_env="MQTT_PW", protocol=protocol, password=secret
    )

    wait_until(lambda: link.stats().failed_connects >= 3, what="3 refused connects")
    assert not link.connected
    assert link.last_error is not None
    assert "not authorized" in link.last_error.lower()
    messages = [r.getMessage() for r in caplog.records]
    assert all(secret not in m for m in messages)
    warnings = [
        r for r in caplog.records if r.name == "runtime.mqtt_link" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1
    assert "Not authorized" in warnings[0].getMessage()

    good = make_link(
        broker.port,
        device_id="gw02",
        username="edge",
        password_env="MQTT_PW",
        protocol=protocol,
        password="correct-horse",
    )
    assert good.wait_connected(5), good.last_error


def test_mosquitto_sub_receives_an_alert(broker: MosquittoBroker, make_link: LinkFactory) -> None:
    sink = mqtt_sink(connected_link(make_link, broker))
    topic = f"{PREFIX}/{DEVICE}/alerts/yard"
    cmd = [find_tool("mosquitto_sub"), "-h", broker.host, "-p", str(broker.port), "-i", "cli-sub"]
    cmd += ["-t", topic, "-q", "1", "-C", "1", "-W", "5"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        # mosquitto_sub buffers its stdout in a pipe; the broker's log says when it subscribed.
        wait_until(lambda: "Sending SUBACK to cli-sub" in broker.log_text(), what="cli SUBACK")
        sink.publish(make_alert(pipeline="yard", seq=7))
        out, _ = proc.communicate(timeout=5)
    assert proc.returncode == 0, out
    payload_line = out.strip()
    payload = json.loads(payload_line)
    assert payload["seq"] == 7 and payload["pipeline"] == "yard"
    assert list(alert_validator().iter_errors(payload)) == []


# ------------------------------------------------------------------------ shutdown


def test_stop_names_the_alerts_the_broker_never_acknowledged(
    broker: MosquittoBroker, make_link: LinkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    link = connected_link(make_link, broker)
    sink = mqtt_sink(link)
    sink.publish(make_alert(seq=0))
    wait_until(lambda: sink.status()["acked"] == 1, what="the first alert's ack")

    broker.kill()
    wait_until(lambda: not link.connected, what="the link to notice the dead broker")
    lost = [make_alert(seq=seq, pipeline="door" if seq % 2 else "yard") for seq in range(1, 26)]
    for alert in lost:
        sink.publish(alert)  # queued by paho: no exception, no ack
    lost_ids = [a.alert_id for a in lost]
    assert sink.unacked_alert_ids() == lost_ids
    assert sink.status()["unacked"] == 25

    started = time.monotonic()
    sink.stop()  # the app stops sinks before the link
    link.stop()
    assert time.monotonic() - started < 1.0  # no point waiting for a broker that is down

    [sink_warning] = [
        r.getMessage()
        for r in caplog.records
        if r.name == "runtime.sinks.mqtt" and r.levelno == logging.WARNING
    ]
    assert "25 alert(s) not acknowledged" in sink_warning
    assert ", ".join(lost_ids[:20]) + " and 5 more" in sink_warning
    assert lost_ids[20] not in sink_warning
    assert "b00t-0," not in sink_warning  # acknowledged before the outage
    [link_warning] = [
        r.getMessage()
        for r in caplog.records
        if r.name == "runtime.mqtt_link" and "not acknowledged" in r.getMessage()
    ]
    assert "25 message(s) not acknowledged" in link_warning
    assert f"13 on {PREFIX}/{DEVICE}/alerts/door" in link_warning
    assert f"12 on {PREFIX}/{DEVICE}/alerts/yard" in link_warning
    assert sink.unacked_alert_ids() == lost_ids
    assert link.stats().pending == 25
    with pytest.raises(SinkError, match=r"b00t-99.*stopped"):
        sink.publish(make_alert(seq=99))


@pytest.mark.parametrize("stop_sink_first", [True, False], ids=["sink-then-link", "link-only"])
def test_stop_waits_for_every_pending_alert_to_be_acknowledged(
    broker: MosquittoBroker,
    subscriber: SubscriberFactory,
    make_link: LinkFactory,
    caplog: pytest.LogCaptureFixture,
    stop_sink_first: bool,
) -> None:
    sub = subscriber(broker, ALERTS_FILTER)
    link = connected_link(make_link, broker, stop_timeout_s=10.0)
    sink = mqtt_sink(link)
    for seq in range(200):
        sink.publish(make_alert(seq=seq))
    assert link.stats().pending > 0  # stop() really has something to wait for

    if stop_sink_first:
        sink.stop()
        assert sink.unacked_alert_ids() == []
    link.stop()

    assert [m.json()["seq"] for m in sub.wait_for(200)] == list(range(200))
    assert sink.status()["acked"] == 200
    assert sink.unacked_alert_ids() == []
    assert link.stats().pending == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    offline = subscriber(broker, STATUS_TOPIC).wait_for(1)[0]
    assert offline.json()["state"] == "offline"


def test_a_publish_racing_stop_either_arrives_or_raises(
    make_broker: BrokerFactory, subscriber: SubscriberFactory, make_link: LinkFactory
) -> None:
    # Two threads publish as fast as they can; Mosquitto's default queue for a subscriber that
    # falls behind (max_queued_messages 1000) would drop QoS 1 messages it already acknowledged.
    broker = make_broker(BrokerOptions(extra_config=("max_queued_messages 100000",)))
    topic = f"{PREFIX}/{DEVICE}/race"
    sub = subscriber(broker, topic)
    link = connected_link(make_link, broker, stop_timeout_s=10.0)
    accepted: list[bytes] = []
    refused: list[SinkError] = []
    running = threading.Event()

    def publish_until_refused(name: str) -> None:
        for i in itertools.count():
            payload = f"{name}-{i}".encode()
            try:
                link.publish(topic, payload, qos=1)
            except SinkError as e:
                refused.append(e)
                return
            accepted.append(payload)
            if i == 50:
                running.set()

    publishers = [
        threading.Thread(target=publish_until_refused, args=(name,)) for name in ("a", "b")
    ]
    for thread in publishers:
        thread.start()
    assert running.wait(5)
    link.stop()
    for thread in publishers:
        thread.join(5)

    assert len(refused) == 2 and all("stopped" in str(e) for e in refused)
    received = sub.wait_for(len(accepted), timeout_s=20)  # slow under CPU load, not lost
    time.sleep(0.1)  # nothing that was refused may show up late
    assert len(sub.messages) == len(accepted)
    assert sorted(m.payload for m in received) == sorted(accepted)
    assert link.stats().pending == 0


# -------------------------------------------------------------------- paho logging


def test_paho_repeats_are_rate_limited_while_the_broker_is_down(
    broker: MosquittoBroker, make_link: LinkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    link = connected_link(make_link, broker)  # reconnect attempts every 50-200 ms

    broker.kill()
    down_until = time.monotonic() + 2.0
    while time.monotonic() < down_until:
        link.publish(link.alert_topic("door"), b"{}", qos=1)
        time.sleep(0.02)
    failed_attempts = link.stats().failed_connects
    broker.restart()
    assert link.wait_connected(5), link.last_error

    assert failed_attempts >= 5  # paho logged "Client is not connected" on each of them
    paho = [r for r in caplog.records if r.name == "runtime.mqtt_link.paho"]
    assert len(paho) <= 2, [r.getMessage() for r in paho]
    ours = [
        r for r in caplog.records if r.name == "runtime.mqtt_link" and r.levelno >= logging.WARNING
    ]
    assert len(ours) == 1 and "lost" in ours[0].getMessage()  # once per outage


def test_rate_limit_filter_passes_each_message_once_per_interval() -> None:
    now = [0.0]
    limiter = RateLimitFilter(interval_s=30.0, clock=lambda: now[0])
    log = logging.getLogger("tests.ratelimit.filter")
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect()
    log.addHandler(handler)
    log.addFilter(limiter)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        for _ in range(5):
            log.error("Client is not connected (%d%%)", 100)
            log.warning("failed to receive on socket: %s", "reset")
            log.debug("Sending PINGREQ")
        now[0] = 31.0
        log.error("Client is not connected (%d%%)", 100)
    finally:
        log.removeHandler(handler)
        log.removeFilter(limiter)
    assert [(r.levelname, r.getMessage()) for r in records] == [
        ("ERROR", "Client is not connected (100%)"),
        ("WARNING", "failed to receive on socket: reset"),
        *[("DEBUG", "Sending PINGREQ")] * 5,
        ("ERROR", "Client is not connected (100%) (4 similar messages suppressed)"),
    ]


# ------------------------------------------------------------------ subscriptions


def test_subscribe_delivers_survives_callback_errors_and_resubscribes_after_restart(
    broker: MosquittoBroker, make_link: LinkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    pub = [find_tool("mosquitto_pub"), "-h", broker.host, "-p", str(broker.port), "-q", "1"]

    def publish(topic: str, payload: str, retain: bool = True) -> None:
        subprocess.run([*pub, "-t", topic, "-m", payload, *(["-r"] if retain else [])], check=True)

    temps: list[ReceivedMessage] = []
    commands: list[bytes] = []

    def on_command(msg: ReceivedMessage) -> None:
        if msg.payload == b"boom":
            raise RuntimeError("callback exploded")
        commands.append(msg.payload)

    publish("sensors/a/temp", "20.0")
    link = make_link(broker.port, start=False)
    link.subscribe("sensors/+/temp", 1, temps.append)  # before start: subscribed on connect
    link.start()
    wait_until(lambda: len(temps) == 1, what="the retained reading")
    assert (temps[0].topic, temps[0].payload, temps[0].retain) == ("sensors/a/temp", b"20.0", True)
    assert temps[0].received_mono_ns <= time.monotonic_ns()

    publish("cmd/x", "boom")
    link.subscribe("cmd/#", 0, on_command)  # while connected: subscribed at once
    wait_until(
        lambda: any("callback exploded" in (r.exc_text or "") for r in caplog.records),
        what="the callback error to be logged",
    )
    publish("cmd/x", "ok", retain=False)
    wait_until(lambda: commands == [b"ok"], what="the next command after the failing one")
    assert link.connected

    broker.kill()
    wait_until(lambda: not link.connected, what="the link to notice the dead broker")
    broker.restart()
    assert link.wait_connected(5)
    publish("sensors/b/temp", "21.5")  # retained: arrives whether or not SUBACK came first
    wait_until(lambda: len(temps) == 2, what="a reading after the restart")
    assert (temps[1].topic, temps[1].payload) == ("sensors/b/temp", b"21.5")


# -------------------------------------------------------------- names and settings


@pytest.mark.parametrize("pipeline", ["a/b", "+", "#", "door/#", "", "front door", "$SYS", "x\x00"])
def test_pipeline_names_cannot_inject_topic_levels(make_link: LinkFactory, pipeline: str) -> None:
    link = make_link(free_port(), start=False)
    with pytest.raises(ConfigError, match="pipeline"):
        link.alert_topic(pipeline)


@pytest.mark.parametrize(
    "device_id", ["gw/01", "gw+", "#", "", "gw 01", "-gw01", ".gw01", "$SYS", "g" * 65]
)
def test_device_ids_cannot_inject_topic_levels(device_id: str) -> None:
    with pytest.raises(ConfigError, match="device_id"):
        MqttLink.from_settings(MqttSettings(), device_id, None)


def test_topics_are_built_from_prefix_device_and_pipeline() -> None:
    link = MqttLink.from_settings(MqttSettings(topic_prefix="plant3/line-2"), "gw07", None)
    assert link.alert_topic("door_cam.v1") == "plant3/line-2/gw07/alerts/door_cam.v1"
    assert link.status_topic() == "plant3/line-2/gw07/status"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"topic_prefix": "a/+/b"}, "wildcards"),
        ({"topic_prefix": "a/#"}, "wildcards"),
        ({"topic_prefix": "/a"}, "start or end"),
        ({"topic_prefix": "a/"}, "start or end"),
        ({"topic_prefix": "a//b"}, "empty levels"),
        ({"topic_prefix": ""}, "empty"),
        ({"password": "hunter2"}, "password_env"),
        ({"password_env": "PW"}, "username"),
        ({"username": "u", "password_env": "PW", "password_file": "/pw"}, "only one"),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"protocol": "3.1"}, "protocol"),
        ({"reconnect_min_s": 5, "reconnect_max_s": 1}, "reconnect_max_s"),
        ({"max_queued_messages": 0}, "max_queued_messages"),
        ({"tls": {"key_file": "k.pem"}}, "cert_file"),
        ({"tls": {"verify": False}}, "verify"),
    ],
)
def test_invalid_mqtt_settings_name_the_problem(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MqttSettings(**settings)


def test_mqtt_settings_defaults_and_yaml_style_protocol_number() -> None:
    settings = MqttSettings.model_validate({"protocol": 5, "tls": {"ca_file": "ca.pem"}})
    assert settings.protocol == "5"
    assert (settings.host, settings.port, settings.keepalive_s) == ("127.0.0.1", 1883, 30)
    assert settings.tls is not None and settings.tls.insecure is False
    assert MqttSettings(protocol="3.1.1").protocol == "3.1.1"


def test_missing_ca_file_is_a_config_error(tmp_path: Any) -> None:
    settings = MqttSettings(tls=TlsSettings(ca_file=str(tmp_path / "missing-ca.pem")))
    with pytest.raises(ConfigError, match=r"missing-ca\.pem"):
        MqttLink.from_settings(settings, DEVICE, None)
