"""Shared fixtures: a real Mosquitto per test, and real paho subscribers that collect messages."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.mqtt_link import MqttLink
from runtime.mqtt_settings import MqttSettings
from tests.brokers import (
    LINK_DEVICE,
    BrokerError,
    BrokerFactory,
    BrokerOptions,
    LinkFactory,
    MosquittoBroker,
    Subscriber,
    SubscriberFactory,
)


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[BrokerFactory]:
    """Starts Mosquitto brokers with custom settings; all are stopped after the test."""
    brokers: list[MosquittoBroker] = []
    counter = itertools.count()

    def make(options: BrokerOptions | None = None) -> MosquittoBroker:
        broker = MosquittoBroker(tmp_path / f"mosquitto-{next(counter)}", options)
        brokers.append(broker)
        try:
            broker.start()
        except BrokerError as e:
            pytest.fail(str(e), pytrace=False)
        return broker

    try:
        yield make
    finally:
        for broker in brokers:
            broker.stop()


@pytest.fixture
def broker(make_broker: BrokerFactory) -> MosquittoBroker:
    """A started anonymous Mosquitto on a free loopback port (stopped after the test)."""
    return make_broker()


@pytest.fixture
def subscriber() -> Iterator[SubscriberFactory]:
    """Makes started, subscribed ``Subscriber`` clients; all are stopped after the test."""
    subs: list[Subscriber] = []
    counter = itertools.count()

    def make(
        broker: MosquittoBroker,
        topic_filter: str,
        *,
        qos: int = 1,
        persistent: bool = False,
        client_id: str | None = None,
    ) -> Subscriber:
        cid = client_id or f"test-sub-{time.monotonic_ns()}-{next(counter)}"
        sub = Subscriber(broker, topic_filter, qos=qos, client_id=cid, persistent=persistent)
        subs.append(sub)
        return sub.start()

    try:
        yield make
    finally:
        for sub in subs:
            sub.stop()


@pytest.fixture
def make_link() -> Iterator[LinkFactory]:
    """Links built by ``MqttLink.from_settings`` with fast reconnects; all stopped afterwards."""
    links: list[MqttLink] = []

    def make(
        port: int,
        *,
        device_id: str = LINK_DEVICE,
        password: str | None = None,
        start: bool = True,
        stop_timeout_s: float = 2.0,
        **settings: Any,
    ) -> MqttLink:
        options: dict[str, Any] = {"reconnect_min_s": 0.05, "reconnect_max_s": 0.2} | settings
        link = MqttLink.from_settings(
            MqttSettings(port=port, **options), device_id, password, stop_timeout_s=stop_timeout_s
        )
        links.append(link)
        if start:
            link.start()
        return link

    try:
        yield make
    finally:
        for link in links:
            link.stop()
