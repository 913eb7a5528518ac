"""Subscriptions without a broker: paho's unrouted messages are held, replayed in order to the
subscribe that matches them, delivered directly once a route exists, and dropped with one warning.

Messages are handed in the way paho does it: ``client.on_message`` for a topic no
``message_callback_add`` route matched (paho decides that before calling it, so a route can appear
in between)."""

from __future__ import annotations

import logging

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from runtime.errors import ConfigError
from runtime.mqtt_session import Backlog
from runtime.mqtt_subscriptions import ReceivedMessage, Subscriptions
from runtime.ratelimit import RateLimitedLog


def message(topic: str, payload: bytes) -> mqtt.MQTTMessage:
    msg = mqtt.MQTTMessage(1, topic.encode())
    msg.payload = payload
    msg.qos = 1
    return msg


def make(backlog: Backlog[ReceivedMessage] | None = None) -> tuple[Subscriptions, mqtt.Client]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="unit")
    log = RateLimitedLog(logging.getLogger("runtime.mqtt_subscriptions"), interval_s=60)
    return Subscriptions(client, log, Backlog() if backlog is None else backlog), client


def unrouted(client: mqtt.Client, topic: str, payload: bytes) -> None:
    assert client.on_message is not None
    client.on_message(client, None, message(topic, payload))


def test_held_messages_are_replayed_in_order_to_the_matching_subscription_only() -> None:
    subs, client = make()
    for topic, payload in [("s/a", b"1"), ("other/x", b"2"), ("s/b", b"3")]:
        unrouted(client, topic, payload)
    assert subs.unrouted_held == 3

    got: list[ReceivedMessage] = []
    subs.add("s/+", 1, got.append, connected=False)  # replayed before add returns
    assert [(m.topic, m.payload, m.qos) for m in got] == [("s/a", b"1", 1), ("s/b", b"3", 1)]
    assert subs.unrouted_held == 1  # "other/x" waits for its own subscriber


def test_a_message_paho_could_not_route_goes_to_a_route_added_meanwhile() -> None:
    subs, client = make()
    got: list[ReceivedMessage] = []
    subs.add("$share/g/s/#", 1, got.append, connected=False)
    unrouted(client, "s/late", b"x")  # paho looked for a route just before add made it
    assert [m.topic for m in got] == ["s/late"]
    assert subs.unrouted_held == 0


def test_removed_subscriptions_stop_delivering_and_held_messages_are_kept() -> None:
    subs, client = make()
    got: list[ReceivedMessage] = []
    subs.add("s/#", 1, got.append, connected=False)
    subs.remove("s/#", unsubscribe=False)
    unrouted(client, "s/a", b"after")
    assert got == []
    assert subs.unrouted_held == 1
    subs.remove("s/#", unsubscribe=False)  # twice is fine


def test_dropped_messages_are_counted_and_warned_about_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    subs, client = make(Backlog(max_messages=2))
    for i in range(6):
        unrouted(client, f"stale/{i}", b"x")
    assert (subs.unrouted_held, subs.unrouted_dropped) == (2, 4)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "no subscription of this link matched" in warnings[0]
    assert "clean_start: true" in warnings[0]


def test_a_failing_callback_is_logged_and_the_replay_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    subs, client = make()
    unrouted(client, "s/a", b"boom")
    unrouted(client, "s/b", b"ok")
    got: list[bytes] = []

    def callback(received: ReceivedMessage) -> None:
        if received.payload == b"boom":
            raise RuntimeError("callback exploded")
        got.append(received.payload)

    subs.add("s/#", 1, callback, connected=False)
    assert got == [b"ok"]
    assert any("callback exploded" in (r.exc_text or "") for r in caplog.records)


@pytest.mark.parametrize(
    ("topic_filter", "qos", "message"),
    [("s/#/x", 1, "topic filter"), ("s/+x", 1, "topic filter"), ("s/#", 3, "qos")],
)
def test_bad_filters_and_qos_are_config_errors(topic_filter: str, qos: int, message: str) -> None:
    subs, _ = make()
    with pytest.raises(ConfigError, match=message):
        subs.add(topic_filter, qos, lambda _m: None, connected=False)


def test_one_subscriber_per_routed_filter() -> None:
    subs, _ = make()
    subs.add("s/#", 1, lambda _m: None, connected=False)
    with pytest.raises(ConfigError, match="already delivers"):
        subs.add("$share/g/s/#", 1, lambda _m: None, connected=False)
