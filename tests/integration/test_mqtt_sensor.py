"""The mqtt sensor source on a real MqttLink and a real Mosquitto, fed by real paho publishers and
``mosquitto_pub``: decoding and keys, drop counting, shared subscriptions, broker restarts."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any, Protocol, cast

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from runtime.messages import SensorReading
from runtime.mqtt_link import MqttLink
from runtime.mqtt_settings import MqttSettings
from runtime.sources.mqtt_sensor import MqttSensorSource, MqttSensorSourceConfig
from runtime.sources.sensor_base import SENSOR_SOURCES, SensorSourceContext
from tests.brokers import MosquittoBroker, find_tool, wait_until

pytestmark = pytest.mark.integration

JSON_XY = {"type": "json", "fields": {"x": "x", "y": "y"}}


class SourceFactory(Protocol):
    def __call__(
        self, broker: MosquittoBroker, topics: list[str], *, device: str = "gw01", **config: Any
    ) -> MqttSensorSource: ...


@pytest.fixture
def make_source() -> Iterator[SourceFactory]:
    """Started sources, each on its own started MqttLink; all stopped after the test."""
    made: list[tuple[MqttSensorSource, MqttLink]] = []

    def make(
        broker: MosquittoBroker, topics: list[str], *, device: str = "gw01", **config: Any
    ) -> MqttSensorSource:
        settings = MqttSettings(port=broker.port, reconnect_min_s=0.05, reconnect_max_s=0.2)
        link = MqttLink.from_settings(settings, device, None)
        data = {"type": "mqtt", "topics": topics, "decoder": JSON_XY} | config
        source = SENSOR_SOURCES.get("mqtt").from_config(
            MqttSensorSourceConfig.model_validate(data), SensorSourceContext(mqtt=link)
        )
        assert isinstance(source, MqttSensorSource)
        made.append((source, link))
        link.start()
        source.start()
        assert link.wait_connected(5), link.last_error
        wait_until(
            lambda: subacks(broker, device) >= 1, what=f"the broker to accept {device}'s SUBSCRIBE"
        )
        return source

    try:
        yield make
    finally:
        for source, link in made:
            source.stop()
            link.stop()


def subacks(broker: MosquittoBroker, device: str) -> int:
    return broker.log_text().count(f"Sending SUBACK to edgewatch-{device}")


@pytest.fixture
def publisher(broker: MosquittoBroker) -> Iterator[mqtt.Client]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-publisher")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def publish(client: mqtt.Client, topic: str, payload: bytes | str | dict[str, Any]) -> None:
    data = json.dumps(payload) if isinstance(payload, dict) else payload
    client.publish(topic, data, qos=1).wait_for_publish(5)


def mosquitto_pub(broker: MosquittoBroker, topic: str, message: str) -> None:
    """One QoS 1 message from the real ``mosquitto_pub`` client (its own connection each time)."""
    tool = find_tool("mosquitto_pub")
    args = ["-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", topic, "-m", message]
    subprocess.run([tool, *args], check=True, timeout=10, capture_output=True)


def read_n(source: MqttSensorSource, n: int, timeout_s: float = 5.0) -> list[SensorReading]:
    """At least ``n`` readings, reading until they came or ``timeout_s`` passed."""
    got: list[SensorReading] = []

    def enough() -> bool:
        got.extend(source.read(0.05))
        return len(got) >= n

    wait_until(enough, timeout_s, what=f"{n} readings (got {len(got)}): {source.status()}")
    return got


def test_readings_arrive_decoded_with_keys_from_topic_levels(
    broker: MosquittoBroker, make_source: SourceFactory, publisher: mqtt.Client
) -> None:
    decoder = JSON_XY | {"key_topic_levels": [1, -1]}
    source = make_source(broker, ["plant/+/vib/#"], decoder=decoder)
    publish(publisher, "plant/m1/vib/axis1", {"x": 1.5, "y": -2})
    publish(publisher, "plant/m1/temp", {"x": 9, "y": 9})  # not subscribed
    publish(publisher, "plant/m2/vib/axis2", {"x": 3, "y": 4})

    got = read_n(source, 2)
    assert [(r.key, r.fields, r.values.tolist()) for r in got] == [
        ("m1/axis1", ("x", "y"), [1.5, -2.0]),
        ("m2/axis2", ("x", "y"), [3.0, 4.0]),
    ]
    status = source.status()
    assert status["state"] == "running" and status["received"] == 2 and status["readings"] == 2


def test_bad_payloads_are_counted_and_the_source_keeps_delivering(
    broker: MosquittoBroker, make_source: SourceFactory, publisher: mqtt.Client
) -> None:
    decoder = JSON_XY | {"max_payload_bytes": 100}
    source = make_source(broker, ["s/#"], decoder=decoder)
    publish(publisher, "s/a", b"{broken")
    publish(publisher, "s/a", b'{"x": NaN, "y": 1}')
    publish(publisher, "s/a", json.dumps({"x": 1, "y": 2, "pad": "z" * 200}))
    publish(publisher, "s/a", {"x": "1", "y": 2})
    publish(publisher, "s/bad key", {"x": 1, "y": 2})
    publish(publisher, "s/b", {"x": 5, "y": 6})

    got = read_n(source, 1)
    assert [(r.key, r.values.tolist()) for r in got] == [("b", [5.0, 6.0])]
    dropped = cast(dict[str, int], source.status()["dropped"])
    assert {reason: n for reason, n in dropped.items() if n} == {
        "malformed": 1,
        "non_finite": 1,
        "too_large": 1,
        "not_a_number": 1,
        "bad_key": 1,
    }
    assert source.status()["received"] == 6


def test_a_shared_subscription_splits_the_stream_between_two_links(
    broker: MosquittoBroker, make_source: SourceFactory, publisher: mqtt.Client
) -> None:
    topic = "$share/g/sensors/#"
    first = make_source(broker, [topic], device="gw-a")
    second = make_source(broker, [topic], device="gw-b")
    n = 400
    infos = [
        publisher.publish(f"sensors/k{i % 7}", json.dumps({"x": i, "y": 0}), qos=1)
        for i in range(n)
    ]
    for info in infos:
        info.wait_for_publish(5)

    got: dict[str, list[SensorReading]] = {"a": [], "b": []}

    def all_arrived() -> bool:
        got["a"] += first.read(0.02)
        got["b"] += second.read(0.02)
        return len(got["a"]) + len(got["b"]) >= n

    wait_until(all_arrived, 10, what=f"{n} readings across both links")
    xs_a = [int(r.values[0]) for r in got["a"]]
    xs_b = [int(r.values[0]) for r in got["b"]]
    assert sorted(xs_a + xs_b) == list(range(n))  # together exactly all, no duplicates
    assert 0 < len(xs_a) < n and 0 < len(xs_b) < n  # each got part of it
    assert {r.key for r in got["a"] + got["b"]} == {f"k{i}" for i in range(7)}  # real topics
    assert xs_a == sorted(xs_a) and xs_b == sorted(xs_b)  # in order within each link


def test_a_message_from_mosquitto_pub_becomes_a_reading(
    broker: MosquittoBroker, make_source: SourceFactory
) -> None:
    source = make_source(broker, ["lab/#"])
    mosquitto_pub(broker, "lab/bench1", '{"x": 0.25, "y": 42}')
    got = read_n(source, 1)
    assert [(r.key, r.values.tolist()) for r in got] == [("bench1", [0.25, 42.0])]


def test_subscriptions_are_renewed_after_a_broker_restart(
    broker: MosquittoBroker, make_source: SourceFactory
) -> None:
    source = make_source(broker, ["s/#"])
    link = source.link

    def send(x: int) -> None:
        mosquitto_pub(broker, "s/a", json.dumps({"x": x, "y": 0}))

    send(1)
    assert [r.values[0] for r in read_n(source, 1)] == [1.0]

    broker.kill()
    wait_until(lambda: not link.connected, what="the link to notice the dead broker")
    assert source.status()["state"] == "reconnecting"
    broker.restart()  # no persistence: the new broker knows nothing of the old subscription
    assert link.wait_connected(5), link.last_error
    wait_until(lambda: subacks(broker, "gw01") >= 2, what="the link to subscribe again")

    send(2)
    assert [r.values[0] for r in read_n(source, 1)] == [2.0]
    assert source.status()["state"] == "running"
