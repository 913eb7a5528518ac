"""Sensor sources without a broker: config validation, the mqtt source's queue and drop counting
(its subscription callback driven directly), replay pacing, restamping, bad rows and looping."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from pydantic import ValidationError

from runtime.errors import ConfigError, SourceError
from runtime.messages import SensorReading
from runtime.mqtt_link import MessageCallback, MqttLink, ReceivedMessage, routing_filter
from runtime.processing.decoders.base import DROP_REASONS
from runtime.processing.decoders.json_payload import JsonDecoder
from runtime.record import record_line
from runtime.sources._replay_files import parse_record
from runtime.sources.mqtt_sensor import MqttSensorSource, MqttSensorSourceConfig
from runtime.sources.replay import ReplaySource, ReplaySourceConfig
from runtime.sources.sensor_base import SENSOR_SOURCES, SensorSource, SensorSourceContext

S = 10**9
JSON_DECODER = {"type": "json", "fields": {"x": "x"}}


def mqtt_config(**overrides: Any) -> MqttSensorSourceConfig:
    data: dict[str, Any] = {"type": "mqtt", "topics": ["sensors/#"], "decoder": JSON_DECODER}
    return MqttSensorSourceConfig.model_validate(data | overrides)


# ------------------------------------------------------------------------- mqtt config


@pytest.mark.parametrize(
    "topic", ["sensors/#", "plant/+/vib", "$share/g/sensors/#", "$share/edge-1/a/+/b", "#"]
)
def test_valid_topics_are_accepted(topic: str) -> None:
    assert mqtt_config(topics=[topic]).topics == [topic]


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        ("sensors/#/x", "'#' only the whole last level"),
        ("sensors/a+", "'\\+' is a whole level"),
        ("", "topic filter ''"),
        ("$share/g", "expected '\\$share/<group>/<filter>'"),
        ("$share//sensors/#", "shared subscription group ''"),
        ("$share/g+h/sensors/#", "shared subscription group 'g\\+h'"),
        ("$share/g/sensors/#/x", "topic filter 'sensors/#/x'"),
    ],
)
def test_bad_topics_are_rejected_with_the_reason(topic: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        mqtt_config(topics=[topic])


@pytest.mark.parametrize(
    "overrides",
    [
        {"topics": []},
        {"topics": ["a/#", "a/#"]},
        {"qos": 3},
        {"queue_size": 0},
        {"decoder": {"type": "xml", "fields": ["x"]}},
    ],
)
def test_other_bad_mqtt_settings_are_rejected(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        mqtt_config(**overrides)


def test_mqtt_source_needs_an_mqtt_section() -> None:
    with pytest.raises(ConfigError, match="needs a top-level `mqtt` section"):
        SENSOR_SOURCES.get("mqtt").from_config(mqtt_config(), SensorSourceContext(mqtt=None))


def test_shared_subscriptions_route_by_the_real_topic() -> None:
    assert routing_filter("$share/g/sensors/#") == "sensors/#"
    assert routing_filter("sensors/#") == "sensors/#"


# ------------------------------------------------------------ mqtt queue and decoding


def nonzero_drops(source: SensorSource) -> dict[str, int]:
    dropped = cast(dict[str, int], source.status()["dropped"])
    return {reason: n for reason, n in dropped.items() if n}


class FakeLink:
    """Stands in for an MqttLink: records subscriptions; tests call the callbacks themselves."""

    def __init__(self) -> None:
        self.callbacks: dict[str, MessageCallback] = {}
        self.unsubscribed: list[str] = []
        self.connected = True
        self.last_error: str | None = None

    def subscribe(self, topic_filter: str, qos: int, callback: MessageCallback) -> None:
        self.callbacks[topic_filter] = callback

    def unsubscribe(self, topic_filter: str, *, keep_in_session: bool = False) -> None:
        self.unsubscribed.append(topic_filter)
        del self.callbacks[topic_filter]

    def deliver(self, topic_filter: str, topic: str, payload: bytes) -> None:
        self.callbacks[topic_filter](ReceivedMessage(topic, payload, 1, False, time.monotonic_ns()))


def mqtt_source(queue_size: int = 100, topics: list[str] | None = None) -> tuple[Any, FakeLink]:
    link = FakeLink()
    source = MqttSensorSource(
        cast(MqttLink, link),
        topics or ["sensors/#"],
        JsonDecoder({"x": "x"}),
        queue_size=queue_size,
    )
    source.start()
    return source, link


def test_a_full_queue_drops_new_messages_and_counts_them() -> None:
    source, link = mqtt_source(queue_size=3)
    for i in range(5):
        link.deliver("sensors/#", f"sensors/s{i}", json.dumps({"x": i}).encode())

    status = source.status()
    assert status["received"] == 5 and status["queue_depth"] == 3
    assert status["dropped"]["queue_full"] == 2
    readings = source.read(0.0)
    assert [(r.key, r.values.tolist()) for r in readings] == [
        ("s0", [0.0]),
        ("s1", [1.0]),
        ("s2", [2.0]),
    ]
    link.deliver("sensors/#", "sensors/s5", b'{"x": 5}')  # room again
    assert [r.key for r in source.read(0.0)] == ["s5"]
    assert source.status()["queue_depth"] == 0


def test_bad_payloads_are_counted_by_reason_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    source, link = mqtt_source()
    payloads = [b"not json", b"not json either", b'{"x": "7"}', b'{"y": 1}', b'{"x": 1.5}']
    for payload in payloads:
        link.deliver("sensors/#", "sensors/a", payload)

    readings = source.read(0.0)
    assert [r.values.tolist() for r in readings] == [[1.5]]
    status = source.status()
    assert set(status["dropped"]) == {*DROP_REASONS, "queue_full"}
    assert nonzero_drops(source) == {
        "malformed": 2,
        "not_a_number": 1,
        "missing_field": 1,
    }
    assert status["readings"] == 1 and status["received"] == 5
    malformed_logs = [r for r in caplog.records if "(malformed)" in r.getMessage()]
    assert len(malformed_logs) == 1  # rate-limited per reason
    assert "sensors/a" in malformed_logs[0].getMessage()
    assert "not json" in malformed_logs[0].getMessage()
    assert str(status["last_error"]).startswith("missing_field at topic sensors/a")


def test_read_respects_max_readings_and_keeps_the_rest() -> None:
    source, link = mqtt_source()
    for i in range(10):
        link.deliver("sensors/#", "sensors/a", json.dumps({"x": i}).encode())
    first = source.read(0.0, max_readings=4)
    rest = source.read(0.0)
    assert [r.values[0] for r in first + rest] == list(range(10))
    assert len(first) == 4


def test_read_waits_for_a_message_from_another_thread() -> None:
    source, link = mqtt_source()
    assert source.read(0.01) == []
    sender = threading.Timer(0.05, link.deliver, ("sensors/#", "sensors/late", b'{"x": 3}'))
    sender.start()
    readings = source.read(5.0)
    sender.join()
    assert [r.key for r in readings] == ["late"]


def test_stop_unsubscribes_is_idempotent_and_wakes_a_waiting_reader() -> None:
    source, link = mqtt_source(topics=["a/#", "$share/g/b/#"])
    result: list[list[SensorReading]] = []
    reader = threading.Thread(target=lambda: result.append(source.read(30.0)))
    reader.start()
    time.sleep(0.05)
    source.stop()
    reader.join(5.0)
    assert not reader.is_alive() and result == [[]]
    source.stop()
    assert link.unsubscribed == ["a/#", "$share/g/b/#"]
    assert source.status()["state"] == "stopped"
    assert source.ended is False


# ------------------------------------------------------------------------ replay config


def replay_config(**data: Any) -> ReplaySourceConfig:
    return ReplaySourceConfig.model_validate({"type": "replay", **data})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"path": "a.csv", "fields": ["x"], "speed": -1}, "greater than or equal to 0"),
        ({"path": "a.csv", "fields": ["x"], "key": "k", "key_column": "id"}, "not both"),
        ({"path": "a.csv"}, "give `fields`"),
        ({"path": "a.txt", "fields": ["x"]}, "is not a table"),
        ({"path": "a.csv", "fields": ["x", "x"]}, "must all differ"),
        ({"path": "a.csv", "fields": ["x"], "timestamp_column": "x"}, "must all differ"),
        ({"path": "a.csv", "fields": ["x y"]}, "must match"),
        ({"path": "a.csv", "fields": ["x"], "rate_hz": 0}, "greater than 0"),
        ({"path": "r.jsonl", "decoder": JSON_DECODER, "fields": ["x"]}, "apply to tables"),
        ({"path": "r.jsonl", "decoder": JSON_DECODER, "rate_hz": 5}, "apply to tables"),
    ],
)
def test_bad_replay_configs_are_rejected(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        replay_config(**data)


def test_replay_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = ReplaySourceConfig.model_validate(
        {"type": "replay", "path": "data/a.csv", "fields": ["x"]},
        context={"base_dir": str(tmp_path)},
    )
    assert cfg.path == str(tmp_path / "data" / "a.csv")


def test_a_missing_file_fails_at_start_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    source = replay(path=str(path), fields=["x"])
    with pytest.raises(SourceError, match=str(path)):
        source.start()


def test_a_csv_without_a_configured_column_fails_at_start(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "x,y\n1,2\n")
    source = replay(path=str(path), fields=["x", "z"])
    with pytest.raises(SourceError, match=r"no column 'z'.*columns: x, y"):
        source.start()


# ------------------------------------------------------------------------ replay reading


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def replay(clock_ns: tuple[int, int] | None = None, **data: Any) -> ReplaySource:
    """Built from config; ``clock_ns`` (wall, monotonic) fixes the replay start for exact times."""
    source = SENSOR_SOURCES.get("replay").from_config(
        replay_config(**data), SensorSourceContext(mqtt=None)
    )
    assert isinstance(source, ReplaySource)
    if clock_ns is None:
        return source
    return ReplaySource(
        source.file,
        speed=source.speed,
        loop=source.loop,
        restamp=source.restamp,
        clock_ns=clock_ns,
    )


def read_all(source: ReplaySource, limit: int = 10_000) -> list[SensorReading]:
    out: list[SensorReading] = []
    while not source.ended and len(out) < limit:
        out += source.read(1.0)
    return out


def rows(readings: list[SensorReading]) -> list[tuple[str, int, list[float]]]:
    return [(r.key, r.ts_ns, r.values.tolist()) for r in readings]


WALL0 = 1_800_000_000 * S


def test_speed_0_reads_everything_losslessly_counting_bad_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    path = write(
        tmp_path / "a.csv",
        "t,id,x,y\n"
        "100.0,m1,1,2\n"
        "100.5,m1,abc,2\n"  # line 3: not_a_number
        "101.0,m2,nan,2\n"  # line 4: non_finite
        "101.5,m2,,2\n"  # line 5: missing_field
        "102.0,m2,1,2,9\n"  # line 6: malformed (extra cell)
        "\n"
        "102.5,m1,3,4\n",
    )
    source = replay(
        clock_ns=(WALL0, 0),
        path=str(path),
        fields=["x", "y"],
        key_column="id",
        timestamp_column="t",
        speed=0,
    )
    assert source.lossless
    source.start()
    got = read_all(source)
    assert rows(got) == [("m1", WALL0, [1.0, 2.0]), ("m1", WALL0 + int(2.5 * S), [3.0, 4.0])]
    status = source.status()
    assert nonzero_drops(source) == {
        "not_a_number": 1,
        "non_finite": 1,
        "missing_field": 1,
        "malformed": 1,
    }
    assert (status["state"], status["received"], status["readings"]) == ("ended", 6, 2)
    assert source.read(0.01) == []
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert f"{path}:3" in logged and f"{path}:6" in logged


def test_jsonl_rows_with_iso_times_and_a_constant_key(tmp_path: Path) -> None:
    lines = [
        {"ts": "2027-01-15T08:00:00Z", "temp": 20.5},
        {"ts": "2027-01-15T08:00:01.250+00:00", "temp": "21"},
        ["not", "an", "object"],
        {"ts": "2027-01-15T08:00:02Z", "temp": True},
    ]
    path = write(tmp_path / "a.jsonl", "".join(json.dumps(d) + "\n" for d in lines))
    source = replay(
        path=str(path), fields=["temp"], key="oven", timestamp_column="ts", restamp=False, speed=0
    )
    source.start()
    base = 1_800_000_000 * S  # 2027-01-15T08:00:00Z
    assert rows(read_all(source)) == [
        ("oven", base, [20.5]),
        ("oven", base + 1_250_000_000, [21.0]),
    ]
    assert nonzero_drops(source) == {"malformed": 1, "not_a_number": 1}


def test_restamping_keeps_the_spacing_scaled_by_speed(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "t,x\n1000,1\n1004,2\n1010,3\n")
    started = time.monotonic_ns() - 3600 * S  # started an hour ago: every row is already due
    source = replay(
        clock_ns=(WALL0, started), path=str(path), fields=["x"], timestamp_column="t", speed=2
    )
    source.start()
    got = read_all(source)
    assert [r.ts_ns for r in got] == [WALL0, WALL0 + 2 * S, WALL0 + 5 * S]
    assert all(r.received_mono_ns > started for r in got)


def test_rows_not_yet_due_are_not_delivered(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "t,x\n1000,1\n2000,2\n")
    source = replay(path=str(path), fields=["x"], timestamp_column="t", speed=1)
    source.start()
    assert [r.values[0] for r in source.read(0.05)] == [1.0]
    assert source.read(0.05) == []  # due in 1000 s
    assert not source.ended and source.status()["state"] == "running"


def test_stop_wakes_a_reader_waiting_for_the_next_row(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "t,x\n1000,1\n2000,2\n")
    source = replay(path=str(path), fields=["x"], timestamp_column="t", speed=1)
    source.start()
    source.read(0.05)
    result: list[list[SensorReading]] = []
    reader = threading.Thread(target=lambda: result.append(source.read(60.0)))
    reader.start()
    time.sleep(0.05)
    source.stop()
    reader.join(5.0)
    assert not reader.is_alive() and result == [[]]
    assert source.status()["state"] == "stopped"
    source.stop()


def test_rows_without_timestamps_are_rate_hz_apart(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "x\n1\n2\n3\n")
    source = replay(clock_ns=(WALL0, 0), path=str(path), fields=["x"], rate_hz=4, speed=0)
    source.start()
    got = read_all(source)
    assert [r.ts_ns for r in got] == [WALL0, WALL0 + S // 4, WALL0 + S // 2]
    assert {r.key for r in got} == {"replay"}


def test_loop_continues_the_timeline_one_row_spacing_on(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "x\n1\n2\n3\n")
    source = replay(
        clock_ns=(WALL0, 0), path=str(path), fields=["x"], rate_hz=10, speed=0, loop=True
    )
    source.start()
    got: list[SensorReading] = []
    while len(got) < 8:
        got += source.read(1.0, max_readings=8 - len(got))
    assert [r.values[0] for r in got] == [1, 2, 3, 1, 2, 3, 1, 2]
    assert np.all(np.diff([r.ts_ns for r in got]) == S // 10)
    status = source.status()
    assert (status["loops"], status["position"], source.ended) == (2, 2, False)


def test_loop_over_a_file_without_good_rows_ends(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "x\nabc\n")
    source = replay(path=str(path), fields=["x"], speed=0, loop=True)
    source.start()
    assert read_all(source) == []
    assert source.ended and "no readable rows" in str(source.status()["last_error"])


# --------------------------------------------------------------------- replay a recording


def test_recording_lines_round_trip_text_and_binary_payloads() -> None:
    for payload in (b'{"x": 1}', "température".encode(), b"\xff\x00\x80"):
        line = record_line(1_700_000_000_123_456_000, "a/b", payload, 1, True)
        assert line.endswith("\n") and line.count("\n") == 1
        assert parse_record(line) == (1_700_000_000_123_456_000, "a/b", payload)
    assert "payload_b64" in record_line(0, "t", b"\xff", 0, False)


def test_a_recording_is_decoded_with_its_arrival_times_and_restamped(tmp_path: Path) -> None:
    t0 = 1_700_000_000 * S
    lines = [
        record_line(t0, "plant/m1", b'{"x": 1, "ts": 1700000000}', 1, False),
        record_line(t0 + S, "plant/m2", b'{"x": 2, "ts": 1700000000.5}', 1, False),
        "{not json\n",
        record_line(t0 + 2 * S, "plant/m1", b'{"y": 3}', 1, False),
        record_line(t0 + 3 * S, "plant/m1", b"\xff", 1, False),
    ]
    path = write(tmp_path / "rec.jsonl", "".join(lines))
    decoder = JSON_DECODER | {"timestamp_field": "ts"}
    source = replay(clock_ns=(WALL0, 0), path=str(path), decoder=decoder, speed=0)
    source.start()
    got = read_all(source)
    assert rows(got) == [("m1", WALL0, [1.0]), ("m2", WALL0 + S // 2, [2.0])]
    assert nonzero_drops(source) == {"malformed": 2, "missing_field": 1}
