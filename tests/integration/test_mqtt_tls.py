"""MqttLink over real TLS (mutual TLS, wrong CA, missing client cert) and with broker passwords.

Certificates are made once per session by ``tests.certs`` (openssl CLI); every test runs its own
Mosquitto on a free loopback port.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from runtime.mqtt_link import MqttLink
from runtime.mqtt_settings import TlsSettings
from tests.brokers import (
    LINK_DEVICE,
    BrokerFactory,
    BrokerOptions,
    LinkFactory,
    MosquittoBroker,
    Received,
    wait_until,
    write_password_file,
)
from tests.certs import Pki, make_pki

pytestmark = pytest.mark.integration

DEVICE = LINK_DEVICE  # the device id make_link (tests/conftest.py) uses
PREFIX = "edgewatch"
STATUS_TOPIC = f"{PREFIX}/{DEVICE}/status"
ALERTS_FILTER = f"{PREFIX}/{DEVICE}/alerts/#"
CLIENT_CN = "edgewatch-client"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def mtls_broker(make_broker: BrokerFactory, pki: Pki) -> MosquittoBroker:
    """A TLS-only Mosquitto that requires a client certificate signed by the test CA."""
    return make_broker(
        BrokerOptions(
            cafile=pki.ca,
            certfile=pki.server_cert,
            keyfile=pki.server_key,
            require_certificate=True,
        )
    )


def client_tls(pki: Pki, ca: Path | None = None) -> TlsSettings:
    """The device's TLS settings: CA (the test CA unless ``ca``), client cert and key."""
    return TlsSettings(
        ca_file=str(ca or pki.ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key)
    )


class TlsSubscriber:
    """A real paho client (MQTT 3.1.1) over mutual TLS, subscribed to one filter."""

    def __init__(self, broker: MosquittoBroker, pki: Pki, topic_filter: str, name: str) -> None:
        self.topic_filter = topic_filter
        self._broker = broker
        self._cond = threading.Condition()
        self._messages: list[Received] = []
        self._subscribed = False
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"tls-sub-{name}", protocol=mqtt.MQTTv311
        )
        client.tls_set(
            ca_certs=str(pki.ca), certfile=str(pki.client_cert), keyfile=str(pki.client_key)
        )
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client

    def start(self, timeout_s: float = 5.0) -> TlsSubscriber:
        self._client.connect(self._broker.host, self._broker.port, keepalive=30)
        self._client.loop_start()
        with self._cond:
            if not self._cond.wait_for(lambda: self._subscribed, timeout_s):
                raise AssertionError(
                    f"TLS subscriber {self.topic_filter!r} not subscribed within {timeout_s} s; "
                    f"broker log:\n{self._broker.log_text()[-3000:]}"
                )
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def wait_for(self, n: int, timeout_s: float = 5.0) -> list[Received]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._messages) >= n, timeout_s):
                raise AssertionError(
                    f"TLS subscriber {self.topic_filter!r}: expected {n} message(s) within "
                    f"{timeout_s} s, got {[(m.topic, m.payload) for m in self._messages]}"
                )
            return list(self._messages[:n])

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if not reason_code.is_failure:
            client.subscribe(self.topic_filter, 1)

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _mid: int,
        _reason_codes: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        with self._cond:
            self._subscribed = True
            self._cond.notify_all()

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self._messages.append(
                Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain))
            )
            self._cond.notify_all()


class TlsSubscriberFactory(Protocol):
    def __call__(self, broker: MosquittoBroker, topic_filter: str) -> TlsSubscriber: ...


@pytest.fixture
def tls_subscriber(pki: Pki) -> Iterator[TlsSubscriberFactory]:
    """Makes started ``TlsSubscriber`` clients; all are stopped after the test."""
    subs: list[TlsSubscriber] = []

    def make(broker: MosquittoBroker, topic_filter: str) -> TlsSubscriber:
        sub = TlsSubscriber(broker, pki, topic_filter, name=f"{len(subs)}-{time.monotonic_ns()}")
        subs.append(sub)
        return sub.start()

    try:
        yield make
    finally:
        for sub in subs:
            sub.stop()


def link_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "runtime.mqtt_link" and r.levelno == logging.WARNING
    ]


def assert_keeps_retrying(link: MqttLink, what: str) -> None:
    """At least 2 failed connects, then 3 more within 2 s; never connected meanwhile."""
    wait_until(
        lambda: link.stats().failed_connects >= 2,
        timeout_s=3.0,
        what=f"2 failed connects ({what}); link status: {link.status()}",
    )
    first = link.stats().failed_connects
    wait_until(
        lambda: link.stats().failed_connects >= first + 3,
        timeout_s=2.0,
        what=f"3 more failed connects ({what}); link status: {link.status()}",
    )
    stats = link.stats()
    assert not stats.connected
    assert stats.connects == 0


def assert_stops_promptly(link: MqttLink) -> None:
    started = time.monotonic()
    link.stop()
    assert time.monotonic() - started < 1.5
    assert not link.connected


# ------------------------------------------------------------------- mutual TLS


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])  # the server cert's two SANs
def test_mutual_tls_link_delivers_qos1_alert_and_retained_online_status(
    mtls_broker: MosquittoBroker,
    pki: Pki,
    make_link: LinkFactory,
    tls_subscriber: TlsSubscriberFactory,
    host: str,
) -> None:
    alerts = tls_subscriber(mtls_broker, ALERTS_FILTER)
    link = make_link(mtls_broker.port, host=host, tls=client_tls(pki))
    assert link.wait_connected(5), (
        f"mTLS link never connected: {link.last_error}; broker log:\n"
        f"{mtls_broker.log_text()[-3000:]}"
    )

    acked = threading.Event()
    topic = link.alert_topic("door")
    link.publish(topic, b'{"rule":"door-open"}', qos=1, on_ack=acked.set)
    assert acked.wait(5), "the broker never acknowledged the QoS 1 alert"
    [alert] = alerts.wait_for(1)
    assert (alert.topic, alert.payload, alert.qos) == (topic, b'{"rule":"door-open"}', 1)

    assert link.flush(5)  # the online status is acknowledged, so it is retained by now
    [status] = tls_subscriber(mtls_broker, STATUS_TOPIC).wait_for(1)
    assert status.retain
    assert status.json() == {"state": "online", "device_id": DEVICE}

    stats = link.stats()
    assert (stats.connects, stats.failed_connects, stats.last_error) == (1, 0, None)
    # The broker really authenticated the client certificate (its CN became the username).
    assert f"u'{CLIENT_CN}'" in mtls_broker.log_text()


def test_wrong_ca_is_reported_as_a_certificate_error_and_retried(
    mtls_broker: MosquittoBroker,
    pki: Pki,
    make_link: LinkFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    link = make_link(mtls_broker.port, tls=client_tls(pki, ca=pki.wrong_ca))

    assert_keeps_retrying(link, "broker cert signed by an unknown CA")
    error = link.last_error
    assert error is not None
    assert "certificate verify failed" in error.lower(), error
    assert link.status()["last_error"] == error
    warnings = link_warnings(caplog)
    assert len(warnings) == 1, warnings  # once per outage, not once per attempt
    assert "certificate verify failed" in warnings[0].lower()
    assert isinstance(link.publish(link.alert_topic("door"), b"{}", qos=1), int)  # queued

    assert mtls_broker.running
    assert_stops_promptly(link)
    # The broker is unharmed: a correctly configured device still gets in.
    good = make_link(mtls_broker.port, device_id="gw-good", tls=client_tls(pki))
    assert good.wait_connected(5), good.last_error


def test_missing_client_certificate_is_reported_and_retried(
    mtls_broker: MosquittoBroker,
    pki: Pki,
    make_link: LinkFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    link = make_link(mtls_broker.port, tls=TlsSettings(ca_file=str(pki.ca)))

    assert_keeps_retrying(link, "no client certificate for a broker that requires one")
    error = link.last_error
    assert error is not None
    assert "certificate" in error.lower(), error
    warnings = link_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "certificate" in warnings[0].lower()

    assert mtls_broker.running
    assert_stops_promptly(link)


# -------------------------------------------------------------------- passwords

GOOD_PASSWORD = "correct-horse-7f3a91"
BAD_PASSWORD = "wrong-battery-staple-42"


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_password_broker_accepts_the_right_password_and_never_leaks_either(
    make_broker: BrokerFactory,
    pki: Pki,
    make_link: LinkFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    transport: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    passwd = write_password_file(tmp_path / "passwd", {"edge": GOOD_PASSWORD})
    tls_options: dict[str, Any] = {}
    link_tls: dict[str, Any] = {}
    if transport == "tls":  # server-authenticated TLS, password instead of a client cert
        tls_options = {"certfile": pki.server_cert, "keyfile": pki.server_key}
        link_tls = {"tls": TlsSettings(ca_file=str(pki.ca))}
    broker = make_broker(BrokerOptions(password_file=passwd, **tls_options))

    bad = make_link(
        broker.port,
        device_id="gw-bad",
        username="edge",
        password_env="MQTT_PW",
        password=BAD_PASSWORD,
        **link_tls,
    )
    good = make_link(
        broker.port, username="edge", password_env="MQTT_PW", password=GOOD_PASSWORD, **link_tls
    )
    assert good.wait_connected(5), good.last_error

    assert_keeps_retrying(bad, "wrong password")
    error = bad.last_error
    assert error is not None
    assert "not authorized" in error.lower() or "bad user name or password" in error.lower(), error
    warnings = link_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert broker.running

    good.stop()
    bad.stop()
    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    for secret in (GOOD_PASSWORD, BAD_PASSWORD):
        assert secret not in logged
        assert secret not in json.dumps(good.status()) + json.dumps(bad.status())


# ------------------------------------------------------------- recovery after a fix


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A second, unrelated PKI: CA, server and client certificates the first CA didn't sign."""
    return make_pki(tmp_path_factory.mktemp("pki-other"))


def mtls_options(pki: Pki) -> BrokerOptions:
    return BrokerOptions(
        cafile=pki.ca, certfile=pki.server_cert, keyfile=pki.server_key, require_certificate=True
    )


def assert_recovers(link: MqttLink, broker: MosquittoBroker, failed_before: int) -> None:
    """Connected after the broker-side fix, delivers an alert, and kept retrying all along."""
    assert link.wait_connected(5), (
        f"never connected after the fix: {link.last_error}; broker log:\n"
        f"{broker.log_text()[-2000:]}"
    )
    acked = threading.Event()
    link.publish(link.alert_topic("door"), b'{"rule":"door-open"}', qos=1, on_ack=acked.set)
    assert acked.wait(5), "the alert published after recovery was never acknowledged"
    stats = link.stats()
    assert stats.connects == 1
    assert stats.failed_connects >= failed_before >= 5


def test_a_broker_cert_from_an_unknown_ca_is_retried_until_the_broker_presents_a_trusted_one(
    make_broker: BrokerFactory,
    pki: Pki,
    other_pki: Pki,
    make_link: LinkFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    broker = make_broker(mtls_options(pki))
    # the device was provisioned for the other PKI: it trusts neither the broker's certificate
    # nor would the broker trust its client certificate
    link = make_link(
        broker.port,
        tls=TlsSettings(
            ca_file=str(other_pki.ca),
            cert_file=str(other_pki.client_cert),
            key_file=str(other_pki.client_key),
        ),
    )
    assert_keeps_retrying(link, "broker cert signed by a CA the device doesn't trust")
    error = link.last_error
    assert error is not None and "certificate verify failed" in error.lower(), error
    failed = link.stats().failed_connects

    broker.options = mtls_options(other_pki)  # the operator installs the right certificates
    broker.restart()
    assert_recovers(link, broker, failed)
    warnings = link_warnings(caplog)
    assert len(warnings) == 1, warnings  # one outage, reported once
    assert f"u'{CLIENT_CN}'" in broker.log_text()


def test_a_wrong_password_is_retried_until_the_broker_accepts_it(
    make_broker: BrokerFactory,
    make_link: LinkFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    passwd = write_password_file(tmp_path / "passwd", {"edge": BAD_PASSWORD})
    broker = make_broker(BrokerOptions(password_file=passwd))
    link = make_link(broker.port, username="edge", password_env="MQTT_PW", password=GOOD_PASSWORD)
    assert_keeps_retrying(link, "a password the broker doesn't know yet")
    error = link.last_error
    assert error is not None
    assert "not authorized" in error.lower() or "bad user name or password" in error.lower(), error
    failed = link.stats().failed_connects

    write_password_file(passwd, {"edge": GOOD_PASSWORD})  # the operator fixes the broker side
    broker.restart()
    assert_recovers(link, broker, failed)
    assert len(link_warnings(caplog)) == 1
    assert GOOD_PASSWORD not in caplog.text + json.dumps(link.status())
