"""A pump fleet publishing over a real Mosquitto → an edgewatch sensor pipeline (the committed demo
pump model) → alerts on the broker: the faulty pump alerts, bad payloads are counted and change
nothing, and sensors that stop reporting raise silence alerts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from runtime.app import App
from runtime.config.loader import load_config
from tests.brokers import (
    BrokerFactory,
    BrokerOptions,
    MosquittoBroker,
    SubscriberFactory,
    wait_until,
)
from tools.sensor_data import Fault, PumpSimulator

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
KEYS = ("pump-1", "pump-2", "pump-3")
FAULT_S = 12.0
SECONDS = 24.0
BAD_PAYLOADS = {
    b"{not json": "malformed",
    b'{"ts": 1, "vib": "loud", "amps": 10}': "not_a_number",
    b'{"vib": 0.1}': "missing_field",
    b"x" * 5000: "too_large",
}


RATE_MSG_S = 3000.0  # 20x real time for three pumps at 50 Hz


@pytest.fixture
def broker(make_broker: BrokerFactory) -> MosquittoBroker:
    """Mosquitto queues at most 1000 messages per subscriber by default and drops the rest; a
    fleet that must not lose readings raises that (this test checks edgewatch, not the broker)."""
    return make_broker(BrokerOptions(extra_config=("max_queued_messages 100000",)))


@pytest.fixture
def publisher(broker: MosquittoBroker) -> Iterator[mqtt.Client]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pump-fleet")
    client.max_inflight_messages_set(1000)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def write_config(tmp_path: Path, broker: MosquittoBroker) -> Path:
    config: dict[str, Any] = {
        "device": {"id": "gw-e2e"},
        "mqtt": {"host": broker.host, "port": broker.port},
        "models": {"pumps": {"bundle": str(REPO / "models/demo-pump-anomaly/1.0.0")}},
        "sensor_pipelines": [
            {
                "name": "pumps",
                "source": {
                    "type": "mqtt",
                    "topics": ["$share/edge/plant/+/pump"],
                    "decoder": {
                        "type": "json",
                        "fields": {"vibration": "vib", "current": "amps"},
                        "key_topic_levels": [1],
                        "timestamp_field": "ts",
                        "max_payload_bytes": 4096,
                    },
                },
                "model": "pumps",
                "max_lateness_s": 0,
                "silence_after_s": 1.5,
                "rules": {
                    "bearing": {"type": "threshold", "for_windows": 2, "severity": "critical"},
                    "quiet": {"type": "silence"},
                },
            }
        ],
        "sinks": [{"type": "mqtt", "qos": 1}],
        "status_interval_s": 60,
    }
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def publish_fleet(client: mqtt.Client) -> int:
    """SECONDS of readings of every pump, oldest first, timestamps in the recent past."""
    epoch_s = int(time.time()) - int(SECONDS) - 5
    sim = PumpSimulator(KEYS, seed=99, fault=Fault("pump-3", start_s=FAULT_S), epoch_s=epoch_s)
    sent = 0
    last = None
    started = time.monotonic()
    for i, reading in enumerate(sim.rows(0.0, SECONDS)):
        ahead = started + i / RATE_MSG_S - time.monotonic()
        if ahead > 0.002:
            time.sleep(ahead)
        vib, amps = reading.values["vibration"], reading.values["current"]
        payload = json.dumps({"ts": reading.ts_s, "vib": vib, "amps": amps})
        last = client.publish(f"plant/{reading.key}/pump", payload, qos=1)
        sent += 1
        if i % 500 == 0:
            for bad in BAD_PAYLOADS:  # garbage mixed into the stream
                client.publish("plant/pump-2/pump", bad, qos=1)
    assert last is not None
    last.wait_for_publish(20)
    return sent


def test_fleet_over_mqtt_alerts_on_the_fault_counts_garbage_and_notices_silence(
    tmp_path: Path,
    broker: MosquittoBroker,
    subscriber: SubscriberFactory,
    publisher: mqtt.Client,
) -> None:
    alerts = subscriber(broker, "edgewatch/gw-e2e/alerts/#")
    app = App.from_config(load_config(write_config(tmp_path, broker), {}))
    assert app.failed == []
    app.start()
    try:
        assert app.link is not None and app.link.wait_connected(5)
        wait_until(lambda: "Sending SUBACK" in broker.log_text(), what="subscribed")
        sent = publish_fleet(publisher)
        (pipeline,) = app.pipelines

        def processed() -> int:
            status: dict[str, Any] = pipeline.status()
            return int(status["readings"])  # type: ignore[call-overload]

        wait_until(lambda: processed() == sent, timeout_s=30, what="every reading processed")
        # the stream has stopped: every pump goes silent
        received = alerts.wait_for(1 + len(KEYS), timeout_s=10)
        status = pipeline.status()
    finally:
        app.stop()
    docs = [m.json() for m in received]
    anomaly = [a for a in docs if a["rule"] == "bearing"]
    silence = [a for a in docs if a["rule"] == "quiet"]
    assert [(a["state"], a["sensor"]["key"]) for a in anomaly] == [("raised", "pump-3")]
    assert anomaly[0]["sensor"]["value"] > anomaly[0]["sensor"]["threshold"]
    assert sorted(a["sensor"]["key"] for a in silence) == sorted(KEYS)
    assert all(a["state"] == "raised" and a["label"] == "silence" for a in silence)
    dropped = status["source"]["dropped"]  # type: ignore[index]
    batches = sent // 500 + (sent % 500 > 0)
    for reason in BAD_PAYLOADS.values():
        assert dropped[reason] == batches, (reason, dropped)
    assert dropped["queue_full"] == 0
    assert status["windows_scored"] > 0 and status["mean_batch"] >= 1  # type: ignore[operator]
