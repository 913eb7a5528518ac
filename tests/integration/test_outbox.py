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

from runtime.errors import SinkError
from runtime.mqtt_link import MqttLink
from runtime.sinks.mqtt import MqttSink
from runtime.sinks.outbox import OutboxConfig
from tests.brokers import LinkFactory, MosquittoBroker, SubscriberFactory, wait_until
from tests.factories import make_alert

pytestmark = pytest.mark.integration

ALERTS = "edgewatch/gw01/alerts/#"


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
