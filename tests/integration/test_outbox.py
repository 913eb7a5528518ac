"""The durable outbox between MqttSink and a real Mosquitto: PUBACK deletes, outages, restarts,
bounds. (Whole-process fault injection is in test_fault_injection.py.)"""

from __future__ import annotations

import json
import logging
import time
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from pydantic import ValidationError

from runtime.errors import SinkError
from runtime.mqtt_link import MqttLink
from runtime.sinks._outbox_store import OutboxStore
from runtime.sinks.base import SinkContext
from runtime.sinks.mqtt import MqttSink, MqttSinkConfig
from runtime.sinks.outbox import Outbox, OutboxConfig
from tests.brokers import (
    BrokerFactory,
    BrokerOptions,
    LinkFactory,
    MosquittoBroker,
    SubscriberFactory,
    wait_until,
)
from tests.factories import make_alert

pytestmark = pytest.mark.integration

ALERTS = "edgewatch/gw01/alerts/#"


@pytest.fixture
def broker(make_broker: BrokerFactory) -> MosquittoBroker:
    """Persistence on: a persistent subscriber's session, and what is queued for it, survives
    the broker's restarts, so the tests don't race the subscriber's own reconnect."""
    return make_broker(BrokerOptions(persistence=True))


def schema() -> Draft202012Validator:
    text = resources.files("runtime").joinpath("schemas/alert.schema.json").read_text()
    return Draft202012Validator(json.loads(text))


def connected(make_link: LinkFactory, broker: MosquittoBroker, **settings: Any) -> MqttLink:
    link = make_link(broker.port, **settings)
    assert link.wait_connected(5), link.last_error
    return link


def outbox_sink(link: MqttLink, path: Path, **options: Any) -> MqttSink:
    sink = MqttSink(link, outbox=OutboxConfig(path=str(path), **options))
    sink.start()
    return sink


def outbox_status(sink: MqttSink) -> dict[str, Any]:
    status = sink.status()["outbox"]
    assert isinstance(status, dict)
    return status


def test_live_alerts_leave_the_outbox_on_puback(
    tmp_path: Path, broker: MosquittoBroker, subscriber: SubscriberFactory, make_link: LinkFactory
) -> None:
    sub = subscriber(broker, ALERTS)
    sink = outbox_sink(connected(make_link, broker), tmp_path / "o.sqlite")
    alerts = [make_alert(seq=i, captured_mono_ns=time.monotonic_ns()) for i in range(50)]
    for alert in alerts:
        sink.publish(alert)

    received = [m.json() for m in sub.wait_for(50)]
    assert [a["alert_id"] for a in received] == [a.alert_id for a in alerts]
    assert all(a["replayed"] is False for a in received)
    assert not [e for a in received for e in schema().iter_errors(a)]
    wait_until(lambda: outbox_status(sink)["depth"] == 0, what="acked alerts deleted")
    status = outbox_status(sink)
    assert (status["written"], status["acked"], status["dropped"]) == (50, 50, {})
    assert sink.status()["acked"] == 50 and len(sink.ack_latencies_ms()) == 50
    sink.stop()


def test_alerts_written_during_an_outage_are_replayed_in_order(
    tmp_path: Path, broker: MosquittoBroker, subscriber: SubscriberFactory, make_link: LinkFactory
) -> None:
    sub = subscriber(broker, ALERTS, persistent=True, client_id="outage-sub")
    link = connected(make_link, broker)
    sink = outbox_sink(link, tmp_path / "o.sqlite")
    sink.publish(make_alert(seq=0))
    sub.wait_for(1)

    broker.stop()
    wait_until(lambda: not link.connected, what="the link to notice")
    for seq in range(1, 41):
        sink.publish(make_alert(seq=seq, pipeline="door" if seq % 2 else "yard"))
    wait_until(lambda: outbox_status(sink)["depth"] == 40, what="40 alerts on disk")
    assert outbox_status(sink)["inflight"] == 0  # nothing handed to paho while offline

    broker.start()
    got = [m.json() for m in sub.wait_for(41, timeout_s=10)]
    assert [a["seq"] for a in got] == list(range(41))
    assert [a["replayed"] for a in got] == [False] + [True] * 40
    wait_until(lambda: outbox_status(sink)["depth"] == 0, what="replayed alerts deleted")
    assert outbox_status(sink)["replayed"] == 40
    sink.stop()


def test_unacknowledged_alerts_survive_a_restart(
    tmp_path: Path,
    broker: MosquittoBroker,
    subscriber: SubscriberFactory,
    make_link: LinkFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "o.sqlite"
    sub = subscriber(broker, ALERTS, persistent=True, client_id="restart-sub")
    broker.stop()
    first_link = make_link(broker.port)
    first = outbox_sink(first_link, path)
    for seq in range(30):
        first.publish(make_alert(seq=seq))
    caplog.set_level(logging.WARNING, logger="runtime.sinks.outbox")
    first.stop()  # the broker is down: nothing acknowledged, everything kept
    first_link.stop()
    assert "keeps 30 alert(s)" in caplog.text
    with pytest.raises(SinkError, match="stopped"):
        first.publish(make_alert(seq=99))

    broker.start()
    second = outbox_sink(connected(make_link, broker), path)
    second.publish(make_alert(seq=30))
    got = [m.json() for m in sub.wait_for(31, timeout_s=10)]
    assert [a["seq"] for a in got] == list(range(31))
    assert all(a["replayed"] for a in got[:30]) and got[30]["replayed"] is False
    wait_until(lambda: outbox_status(second)["depth"] == 0, what="replays acknowledged")
    second.stop()


def test_full_outbox_drops_lowest_priority_oldest_and_keeps_running(
    tmp_path: Path,
    broker: MosquittoBroker,
    subscriber: SubscriberFactory,
    make_link: LinkFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sub = subscriber(broker, ALERTS, persistent=True, client_id="cap-sub")
    link = connected(make_link, broker)
    sink = outbox_sink(link, tmp_path / "o.sqlite", max_bytes=2**16)
    broker.stop()
    wait_until(lambda: not link.connected, what="the link to notice")

    severities = ["info", "critical", "info", "warning"]  # half of them info
    fits = 2**16 // len(make_alert(seq=100).to_json())
    n = fits * 3 // 2 // 4 * 4  # too many by a third: only infos need to go
    alerts = [make_alert(seq=i, severity=severities[i % 4]) for i in range(n)]
    for alert in alerts:
        sink.publish(alert)
    wait_until(lambda: outbox_status(sink)["written"] == n, what="all written")
    status = outbox_status(sink)
    dropped = status["dropped"]["full"]
    assert status["bytes"] <= 2**16 and status["depth"] == n - dropped
    assert n // 4 < dropped < n // 2
    assert "dropped an alert of pipeline door (full)" in caplog.text

    broker.start()
    got = [m.json() for m in sub.wait_for(n - dropped, timeout_s=15)]
    kept = {a["alert_id"] for a in got}
    lost = [a for a in alerts if a.alert_id not in kept]
    assert {a.severity for a in lost} == {"info"}
    assert [a.seq for a in lost] == [a.seq for a in alerts if a.severity == "info"][:dropped]
    assert [a["seq"] for a in got] == sorted(a["seq"] for a in got)
    sink.publish(make_alert(seq=1000))  # still running after the drops
    assert sub.wait_for(n + 1 - dropped)[-1].json()["seq"] == 1000
    sink.stop()


def test_oversized_alert_is_dropped_and_counted(
    tmp_path: Path, broker: MosquittoBroker, make_link: LinkFactory
) -> None:
    sink = outbox_sink(connected(make_link, broker), tmp_path / "o.sqlite", max_alert_bytes=1024)
    sink.publish(make_alert(seq=1, label="x" * 2000))
    sink.publish(make_alert(seq=2))
    wait_until(lambda: outbox_status(sink)["acked"] == 1, what="the small alert acked")
    assert outbox_status(sink)["dropped"] == {"too_large": 1}
    sink.stop()


def test_backlog_that_expired_during_an_outage_leaves_the_dispatcher_idle(
    tmp_path: Path, broker: MosquittoBroker, subscriber: SubscriberFactory, make_link: LinkFactory
) -> None:
    """Every unsent row expires while the broker is away: after the reconnect there is nothing
    to send, and the dispatcher must wait, not spin; the next alert still goes out."""
    sub = subscriber(broker, ALERTS, persistent=True, client_id="expiry-sub")
    skew = [0]  # moves the wall and the monotonic clock together: time passes, no step
    link = connected(make_link, broker)
    outbox = Outbox(
        OutboxStore(tmp_path / "o.sqlite"),
        link,
        max_age_s=60,
        clock_ns=lambda: time.time_ns() + skew[0],
        mono_ns=lambda: time.monotonic_ns() + skew[0],
    )
    outbox.start()
    broker.stop()
    wait_until(lambda: not link.connected, what="the link to notice")
    for seq in range(5):
        outbox.put(make_alert(seq=seq))
    wait_until(lambda: outbox.status()["written"] == 5, what="written")
    skew[0] = 120 * 10**9  # two minutes later
    wait_until(lambda: outbox.status()["dropped"] == {"expired": 5}, timeout_s=5)

    broker.start()
    assert link.wait_connected(5)
    time.sleep(0.3)
    cpu = time.process_time()
    time.sleep(1.0)
    assert time.process_time() - cpu < 0.5, "the dispatcher spins with nothing to send"
    outbox.put(make_alert(seq=5))
    assert [m.json()["seq"] for m in sub.wait_for(1)] == [5]
    outbox.stop(2.0)


def test_a_wall_clock_step_does_not_expire_the_backlog(
    tmp_path: Path,
    broker: MosquittoBroker,
    make_link: LinkFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A device without a real-time clock comes online and NTP steps its clock by years."""
    wall = [0]  # 1970
    link = make_link(broker.port)
    broker.stop()
    outbox = Outbox(
        OutboxStore(tmp_path / "o.sqlite"), link, max_age_s=60, clock_ns=lambda: wall[0]
    )
    outbox.start()
    for seq in range(3):
        outbox.put(make_alert(seq=seq))
    wait_until(lambda: outbox.status()["written"] == 3, what="written")
    caplog.set_level(logging.INFO, logger="runtime.sinks.outbox")
    wall[0] = time.time_ns()  # the step; the monotonic clock barely moved
    wait_until(lambda: "wall clock stepped" in caplog.text, timeout_s=5, what="the step noticed")
    time.sleep(1.5)  # another sweep
    status: dict[str, Any] = outbox.status()
    assert status["depth"] == 3 and status["dropped"] == {}
    assert status["oldest_age_s"] is not None and status["oldest_age_s"] < 10
    outbox.stop(0.5)


def test_alert_above_the_brokers_maximum_packet_size_is_dropped_not_resent_forever(
    tmp_path: Path,
    make_broker: Any,
    subscriber: SubscriberFactory,
    make_link: LinkFactory,
) -> None:
    broker = make_broker(BrokerOptions(extra_config=("max_packet_size 20000",)))
    sub = subscriber(broker, ALERTS)
    link = connected(make_link, broker)
    assert link.broker_max_packet_bytes == 20000
    sink = outbox_sink(link, tmp_path / "o.sqlite")
    sink.publish(make_alert(seq=1, label="x" * 30_000))  # under max_alert_bytes, over the broker's
    sink.publish(make_alert(seq=2))
    assert [m.json()["seq"] for m in sub.wait_for(1)] == [2]
    wait_until(lambda: outbox_status(sink)["dropped"] == {"too_large": 1}, what="counted")
    assert link.stats().connects == 1, "the broker never had to drop the connection"
    wait_until(lambda: outbox_status(sink)["depth"] == 0, what="both rows gone")
    sink.stop()


def test_qos_0_with_the_outbox_is_refused() -> None:
    with pytest.raises(ValidationError, match="qos 0 has no PUBACK"):
        MqttSinkConfig(type="mqtt", qos=0, outbox={"path": "/tmp/o.sqlite"})
    assert MqttSinkConfig(type="mqtt", qos=0, outbox=None).qos == 0


def test_default_outbox_file_is_per_device_next_to_the_config(
    tmp_path: Path, make_link: LinkFactory
) -> None:
    """Two device configs in one directory (two processes on one gateway) get two outboxes."""
    paths = []
    for device in ("gw-a", "gw-b"):
        config = MqttSinkConfig.model_validate({"type": "mqtt"}, context={"base_dir": tmp_path})
        link = make_link(1, device_id=device, start=False)
        sink = MqttSink.from_config(config, SinkContext(device, "edgewatch", link))
        assert isinstance(sink, MqttSink) and sink.outbox is not None
        paths.append(sink.outbox.status()["path"])
        sink.stop()
    assert paths == [str(tmp_path / f"edgewatch-outbox-{d}.sqlite") for d in ("gw-a", "gw-b")]
