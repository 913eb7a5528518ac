"""``edgewatch record`` (the real CLI in a subprocess, a real Mosquitto, real paho publishers) and
the ``replay`` source playing recordings and tables back."""

from __future__ import annotations

import itertools
import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from runtime.messages import SensorReading
from runtime.processing.decoders.base import DROP_REASONS
from runtime.processing.decoders.binary import BinaryDecoder, BinaryDecoderConfig
from runtime.sources.replay import ReplaySource, ReplaySourceConfig
from runtime.sources.sensor_base import SENSOR_SOURCES, SensorSourceContext
from tests.brokers import (
    BrokerFactory,
    BrokerOptions,
    MosquittoBroker,
    wait_until,
    write_password_file,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BINARY = {"type": "binary", "format": "ff", "fields": ["a", "b"]}


def start_record(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runtime", "record", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_subscribed(broker: MosquittoBroker, proc: subprocess.Popen[str]) -> None:
    def subscribed() -> bool:
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"edgewatch record exited with {proc.returncode}: {err}")
        return f"Sending SUBACK to edgewatch-record-{proc.pid}" in broker.log_text()

    wait_until(subscribed, 15, what="edgewatch record to subscribe")


def finish(proc: subprocess.Popen[str], timeout_s: float = 15) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"edgewatch record did not exit: {err}") from None
    assert proc.returncode == 0, err
    return out, err


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


def replay_source(**data: Any) -> ReplaySource:
    config = ReplaySourceConfig.model_validate({"type": "replay", **data})
    source = SENSOR_SOURCES.get("replay").from_config(config, SensorSourceContext(mqtt=None))
    assert isinstance(source, ReplaySource)
    source.start()
    return source


def read_all(source: ReplaySource, timeout_s: float = 20.0) -> list[SensorReading]:
    out: list[SensorReading] = []

    def ended() -> bool:
        out.extend(source.read(0.1))
        return source.ended

    wait_until(ended, timeout_s, "the end of the replay")
    return out


def test_record_then_replay_gives_the_same_readings(
    broker: MosquittoBroker, publisher: mqtt.Client, tmp_path: Path
) -> None:
    file = tmp_path / "rec.jsonl"
    proc = start_record("rec/#", str(file), "--port", str(broker.port), "--count", "5")
    wait_subscribed(broker, proc)
    sent = [
        ("rec/m1", struct.pack("<ff", 1.5, -2.0)),  # not UTF-8: recorded as payload_b64
        ("rec/m2", b"ABCDEFGH"),  # UTF-8 text, and two valid float32s
        ("rec/m1", b"\x00\x01"),  # wrong length for "ff"
        ("rec/m2", struct.pack("<ff", 3.25, 4.0)),
        ("rec/m1", struct.pack("<ff", 5.0, 6.5)),
    ]
    for topic, payload in sent:
        publisher.publish(topic, payload, qos=1).wait_for_publish(5)
    out, _ = finish(proc)
    total = sum(len(p) for _, p in sent)
    assert f"recorded 5 messages ({total} bytes)" in out

    lines = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines()]
    assert [(d["topic"], d["qos"], d["retain"]) for d in lines] == [(t, 1, False) for t, _ in sent]
    assert ["payload" in d for d in lines] == [False, True, True, False, False]
    assert lines[1]["payload"] == "ABCDEFGH"
    arrivals = [d["received_at"] for d in lines]
    assert arrivals == sorted(arrivals) and abs(arrivals[0] - time.time()) < 60

    source = replay_source(path=str(file), decoder=BINARY, speed=0)
    got = read_all(source)
    decoder = BinaryDecoder.from_config(BinaryDecoderConfig.model_validate(BINARY))
    expected = []
    for topic, payload in (sent[0], sent[1], sent[3], sent[4]):
        expected += decoder.decode(topic, payload, 0, 0)
    assert [(r.key, r.fields, r.values.tolist()) for r in got] == [
        (r.key, r.fields, r.values.tolist()) for r in expected
    ]
    assert source.status()["dropped"] == dict.fromkeys(DROP_REASONS, 0) | {"wrong_length": 1}
    # restamped: the recorded spacing of the arrivals is kept (speed 0 keeps it unscaled)
    good = [arrivals[i] for i in (0, 1, 3, 4)]
    spacing = [r.ts_ns - got[0].ts_ns for r in got]
    assert all(abs(s / 1e9 - (t - good[0])) < 1e-5 for s, t in zip(spacing, good, strict=True)), (
        spacing,
        good,
    )


def test_ctrl_c_ends_a_recording_cleanly_with_every_line_written(
    broker: MosquittoBroker, publisher: mqtt.Client, tmp_path: Path
) -> None:
    file = tmp_path / "rec.jsonl"
    file.write_text('{"already": "here"}\n', encoding="utf-8")  # appended to, not replaced
    proc = start_record("live/+", str(file), "--port", str(broker.port), "--qos", "0")
    wait_subscribed(broker, proc)
    for i in range(3):
        publisher.publish(f"live/s{i}", json.dumps({"x": i}), qos=1).wait_for_publish(5)
    wait_until(lambda: len(file.read_text().splitlines()) == 4, what="3 lines, flushed as written")

    proc.send_signal(signal.SIGINT)
    out, _ = finish(proc)
    assert "recorded 3 messages" in out
    lines = file.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line).get("topic") for line in lines] == [
        None,
        "live/s0",
        "live/s1",
        "live/s2",
    ]


def test_record_takes_the_broker_and_credentials_from_a_device_config(
    make_broker: BrokerFactory, tmp_path: Path
) -> None:
    passwd = write_password_file(tmp_path / "passwd", {"edge": "correct-horse"})
    broker = make_broker(BrokerOptions(password_file=passwd))
    config = {
        "device": {"id": "gw01"},
        "mqtt": {"port": broker.port, "username": "edge", "password_env": "REC_TEST_PW"},
        "models": {"m": {"bundle": "models/m"}},
        "pipelines": [
            {
                "name": "cam",
                "source": {"type": "camera", "uri": "video.mp4"},
                "model": "m",
                "rules": {"r": {"type": "threshold", "labels": ["x"], "raise_score": 0.9}},
            }
        ],
    }
    device = tmp_path / "device.yaml"
    device.write_text(yaml.safe_dump(config), encoding="utf-8")
    file = tmp_path / "rec.jsonl"
    env = os.environ | {"REC_TEST_PW": "correct-horse"}
    args = ("t/#", str(file), "--config", str(device), "--seconds", "30", "--count", "1")
    proc = start_record(*args, env=env)
    wait_subscribed(broker, proc)

    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-publisher")
    pub.username_pw_set("edge", "correct-horse")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        pub.publish("t/a", b"hello", qos=1).wait_for_publish(5)
    finally:
        pub.disconnect()
        pub.loop_stop()
    out, _ = finish(proc)
    assert "recorded 1 messages (5 bytes)" in out
    assert json.loads(file.read_text())["payload"] == "hello"

    wrong = start_record(*args, env=os.environ | {"REC_TEST_PW": "wrong"})
    _, err = wrong.communicate(timeout=15)
    assert wrong.returncode == 1 and "refused the connection" in err


# ------------------------------------------------------------------------ tabular replay


def write_table(path: Path, rows: int) -> Path:
    lines = ["t,id,temp"] + [f"{1000 + i * 0.5},m{i % 2},{20 + i}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_table_at_speed_0_is_read_at_once(tmp_path: Path) -> None:
    path = write_table(tmp_path / "t.csv", 1000)
    source = replay_source(
        path=str(path), fields=["temp"], key_column="id", timestamp_column="t", speed=0
    )
    got = source.read(1.0, max_readings=5000)
    assert len(got) == 1000 and source.read(0.01) == [] and source.ended
    assert [r.values[0] for r in got] == [20 + i for i in range(1000)]
    assert {r.key for r in got} == {"m0", "m1"}
    assert all(b.ts_ns - a.ts_ns == 500_000_000 for a, b in itertools.pairwise(got))
    assert abs(got[0].ts_ns / 1e9 - time.time()) < 60  # restamped to now


def test_a_table_at_speed_20_takes_about_the_scaled_time(tmp_path: Path) -> None:
    path = write_table(tmp_path / "t.csv", 9)  # 4 s of data at 20x: about 0.2 s
    source = replay_source(
        path=str(path), fields=["temp"], key_column="id", timestamp_column="t", speed=20
    )
    started = time.monotonic()
    got = read_all(source)
    elapsed = time.monotonic() - started
    assert len(got) == 9 and source.ended
    assert elapsed >= 0.15  # paced, not instant
    received = [r.received_mono_ns for r in got]
    assert (received[-1] - received[0]) / 1e9 >= 0.15
    stamped = [r.ts_ns - got[0].ts_ns for r in got]
    assert stamped == [i * 25_000_000 for i in range(9)]  # 0.5 s / 20
