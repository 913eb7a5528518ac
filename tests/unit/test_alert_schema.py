"""runtime/schemas/alert.schema.json describes exactly what Alert.as_dict() produces."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from importlib import resources
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from runtime.messages import Alert, BBox
from tests.factories import make_alert, make_sensor_detail

Payload = dict[str, Any]


def load_schema() -> dict[str, Any]:
    text = resources.files("runtime").joinpath("schemas/alert.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


SCHEMA = load_schema()
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)


def roundtrip(alert: Alert) -> Payload:
    payload: Payload = json.loads(alert.to_json())
    return payload


def errors(payload: Payload) -> list[str]:
    return [e.message for e in VALIDATOR.iter_errors(payload)]


def test_schema_is_valid_draft_2020_12() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(SCHEMA)


def test_schema_lists_every_field_of_the_alert_and_requires_them() -> None:
    keys = set(make_alert().as_dict())
    assert set(SCHEMA["properties"]) == keys | {"sensor", "replayed"}  # replayed: the outbox's
    assert set(SCHEMA["required"]) == keys
    sensor = make_sensor_detail().as_dict()
    assert set(SCHEMA["properties"]["sensor"]["properties"]) == set(sensor)
    assert set(SCHEMA["properties"]["sensor"]["required"]) == set(sensor)
    assert SCHEMA["additionalProperties"] is False
    assert SCHEMA["properties"]["model"]["additionalProperties"] is False


@pytest.mark.parametrize(
    "alert",
    [
        make_alert(),
        make_alert(bbox=None),
        make_alert(latency_ms={}),
        make_alert(score=0.0, seq=0),
        make_alert(device_id="gw-07.plant3", pipeline="door_cam", severity="critical"),
        make_alert(bbox=None, source="pump-3", sensor=make_sensor_detail()),
        make_alert(bbox=None, sensor=make_sensor_detail(threshold=None, top_features=())),
        make_alert(bbox=None, sensor=make_sensor_detail(value=float("inf"))),
    ],
    ids=["bbox", "no-bbox", "no-latency", "zero", "dotted-names", "sensor", "silence", "inf"],
)
def test_real_alerts_validate(alert: Alert) -> None:
    assert errors(roundtrip(alert)) == []


def _set(path: str, value: Any) -> Callable[[Payload], None]:
    *parents, leaf = path.split(".")

    def mutate(payload: Payload) -> None:
        target = payload
        for key in parents:
            target = target[key]
        target[leaf] = value

    return mutate


def _drop(key: str) -> Callable[[Payload], None]:
    def mutate(payload: Payload) -> None:
        del payload[key]

    return mutate


INVALID: dict[str, Callable[[Payload], None]] = {
    "missing alert_id": _drop("alert_id"),
    "missing model": _drop("model"),
    "missing bbox": _drop("bbox"),
    "extra field": _set("camera_ip", "10.0.0.7"),
    "extra model field": _set("model.path", "/models/x.onnx"),
    "schema_version 2": _set("schema_version", 2),
    "empty alert_id": _set("alert_id", ""),
    "seq as string": _set("seq", "3"),
    "negative seq": _set("seq", -1),
    "seq as float": _set("seq", 3.5),
    "device_id with slash": _set("device_id", "gw/07"),
    "pipeline with wildcard": _set("pipeline", "door#"),
    "unknown state": _set("state", "open"),
    "ts not ISO": _set("ts", "1767225600.123"),
    "ts without millis": _set("ts", "2026-01-01T00:00:00Z"),
    "captured_at with offset": _set("captured_at", "2026-01-01T00:00:00.100+01:00"),
    "score as string": _set("score", "0.91"),
    "score null": _set("score", None),
    "bbox with 3 numbers": _set("bbox", [1, 2, 3]),
    "bbox with 5 numbers": _set("bbox", [1, 2, 3, 4, 5]),
    "bbox with a string": _set("bbox", [1, 2, 3, "4"]),
    "bbox as object": _set("bbox", {"x1": 1}),
    "short sha256": _set("model.sha256", "abc123"),
    "uppercase sha256": _set("model.sha256", "ABCDEF0123456789" * 4),
    "frame_seq negative": _set("frame_seq", -5),
    "latency as string": _set("latency_ms.infer", "12.5"),
    "latency_ms as list": _set("latency_ms", [1.0]),
    "label as number": _set("label", 1),
}


SENSOR_INVALID: dict[str, Callable[[Payload], None]] = {
    "sensor without key": lambda p: p["sensor"].pop("key"),
    "sensor extra field": _set("sensor.raw", [1, 2]),
    "sensor window_end not ISO": _set("sensor.window_end", 1767225600),
    "sensor value as string": _set("sensor.value", "41.5"),
    "top feature without zscore": lambda p: p["sensor"]["top_features"][0].pop("zscore"),
    "top features as object": _set("sensor.top_features", {"a": 1}),
    "sensor null": _set("sensor", None),
}


@pytest.mark.parametrize("mutate", list(SENSOR_INVALID.values()), ids=list(SENSOR_INVALID))
def test_schema_rejects_malformed_sensor_details(mutate: Callable[[Payload], None]) -> None:
    payload = copy.deepcopy(roundtrip(make_alert(bbox=None, sensor=make_sensor_detail())))
    assert errors(payload) == []
    mutate(payload)
    assert errors(payload) != []


def test_sensor_detail_is_serialised_in_full() -> None:
    payload = roundtrip(make_alert(bbox=None, sensor=make_sensor_detail()))
    sensor = payload["sensor"]
    assert sensor["key"] == "pump-3"
    assert sensor["window_start"] == "2025-12-31T23:59:58.843Z"
    assert sensor["window_end"] == "2026-01-01T00:00:00.123Z"
    assert sensor["top_features"][0] == {
        "name": "vibration.kurtosis",
        "value": 7.5,
        "zscore": 18.25,
    }
    assert "sensor" not in roundtrip(make_alert())


@pytest.mark.parametrize("mutate", list(INVALID.values()), ids=list(INVALID))
def test_schema_rejects_malformed_payloads(mutate: Callable[[Payload], None]) -> None:
    payload = copy.deepcopy(roundtrip(make_alert()))
    assert errors(payload) == []
    mutate(payload)
    assert errors(payload) != []


finite = st.floats(allow_nan=False, allow_infinity=False, width=32)


@given(
    bbox=st.none() | st.tuples(finite, finite, finite, finite),
    score=finite,
    seq=st.integers(min_value=0, max_value=2**53),
    latency=st.dictionaries(st.sampled_from(["queue", "infer", "total"]), finite, max_size=3),
)
def test_any_well_formed_alert_validates(
    bbox: BBox | None, score: float, seq: int, latency: dict[str, float]
) -> None:
    alert = make_alert(bbox=bbox, score=score, seq=seq, latency_ms=latency)
    assert errors(roundtrip(alert)) == []
