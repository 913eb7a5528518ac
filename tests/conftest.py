"""Shared fixtures: a real Mosquitto per test, and real paho subscribers that collect messages."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokers import (
    BrokerError,
    BrokerFactory,
    BrokerOptions,
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
