"""Sensor payload decoders (json, csv, binary): tables of payload → readings or drop reason, config
validation, and hypothesis properties: any payload gives valid readings or a DecodeError."""

from __future__ import annotations

import json
import re
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from runtime.config.base import config_union
from runtime.errors import ConfigError, SourceError
from runtime.messages import SensorReading
from runtime.processing.decoders.base import (
    DECODERS,
    DROP_REASONS,
    DecodeError,
    Decoder,
    DecoderOptions,
)
from runtime.processing.decoders.binary import BinaryDecoder
from runtime.processing.decoders.csv_line import CsvDecoder
from runtime.processing.decoders.json_payload import JsonDecoder, parse_path
from runtime.registry import import_submodules

import_submodules("runtime.processing.decoders")

S = 10**9
NOW_S = 1_700_000_000
NOW = NOW_S * S  # the wall-clock arrival time every test message gets
MONO = 42_000
KEY_RE = re.compile(r"[A-Za-z0-9_.:-]+(/[A-Za-z0-9_.:-]+)*")

Expected = list[tuple[str, int, dict[str, float]]]  # (key, ts_ns, {field: value}) per reading


def config(data: dict[str, Any]) -> Any:
    return TypeAdapter(config_union(DECODERS.items())).validate_python(data)


def decoder(data: dict[str, Any]) -> Decoder:
    cfg = config(data)
    return DECODERS.get(cfg.type).from_config(cfg)


def run(data: dict[str, Any], topic: str, payload: bytes) -> Expected:
    readings = decoder(data).decode(topic, payload, NOW, MONO)
    for r in readings:
        assert r.received_mono_ns == MONO
    return [(r.key, r.ts_ns, dict(zip(r.fields, r.values.tolist(), strict=True))) for r in readings]


def reason_of(data: dict[str, Any], topic: str, payload: bytes) -> str:
    with pytest.raises(DecodeError) as info:
        decoder(data).decode(topic, payload, NOW, MONO)
    err = info.value
    assert err.reason in DROP_REASONS
    assert str(err) == f"{err.reason}: {err.detail}"
    return err.reason


def check_valid(readings: list[SensorReading], dec: Decoder) -> None:
    assert isinstance(readings, list)
    for r in readings:
        assert isinstance(r, SensorReading)
        assert r.fields == dec.fields
        assert r.values.dtype == np.float64 and r.values.shape == (len(dec.fields),)
        assert np.isfinite(r.values).all()
        assert KEY_RE.fullmatch(r.key), r.key
        assert isinstance(r.ts_ns, int)
        assert NOW - 3600 * S <= r.ts_ns <= NOW + 300 * S


def test_registry_has_the_three_decoders_and_names_them_for_an_unknown_type() -> None:
    assert DECODERS.keys() == ["binary", "csv", "json"]
    with pytest.raises(
        ConfigError, match="unknown decoder 'xml'; expected one of: binary, csv, json"
    ):
        DECODERS.get("xml")
    assert issubclass(DecodeError, SourceError)


# ---------------------------------------------------------------- json

VIB = {"type": "json", "fields": {"x": "vib.x", "y": "vib.y"}}


@pytest.mark.parametrize(
    ("cfg", "topic", "payload", "expected"),
    [
        pytest.param(
            VIB,
            "plant/line1/vib/m1",
            b'{"vib": {"x": 1.5, "y": -2}}',
            [("m1", NOW, {"x": 1.5, "y": -2.0})],
            id="nested-fields-key-from-last-level",
        ),
        pytest.param(
            {**VIB, "key_topic_levels": [1, -1]},
            "plant/line1/vib/m1",
            b'{"vib": {"x": 1, "y": 2}, "extra": "ignored"}',
            [("line1/m1", NOW, {"x": 1.0, "y": 2.0})],
            id="key-from-two-levels",
        ),
        pytest.param(
            {"type": "json", "fields": {"z": "axes[2]", "t0": "data.temps[0]"}},
            "s/a",
            b'{"axes": [0, 1, 7.25], "data": {"temps": [21.5, 22]}}',
            [("a", NOW, {"z": 7.25, "t0": 21.5})],
            id="array-indexes",
        ),
        pytest.param(
            {"type": "json", "fields": {"v": "[1]"}},
            "s/a",
            b"[10, 20]",
            [("a", NOW, {"v": 20.0})],
            id="top-level-array",
        ),
        pytest.param(
            {**VIB, "key_from": "field", "key_field": "meta.id"},
            "anything",
            b'{"meta": {"id": "pump-7"}, "vib": {"x": 0, "y": 0}}',
            [("pump-7", NOW, {"x": 0.0, "y": 0.0})],
            id="key-from-field",
        ),
        pytest.param(
            {**VIB, "key_from": "field", "key_field": "id"},
            "anything",
            b'{"id": 17, "vib": {"x": 0, "y": 0}}',
            [("17", NOW, {"x": 0.0, "y": 0.0})],
            id="integer-key-field",
        ),
        pytest.param(
            {**VIB, "timestamp_field": "ts"},
            "s/a",
            f'{{"ts": {NOW_S - 10}, "vib": {{"x": 1, "y": 2}}}}'.encode(),
            [("a", NOW - 10 * S, {"x": 1.0, "y": 2.0})],
            id="timestamp-field",
        ),
        pytest.param(
            {**VIB, "coerce_strings": True},
            "s/a",
            b'{"vib": {"x": "1.5", "y": " -3 "}}',
            [("a", NOW, {"x": 1.5, "y": -3.0})],
            id="coerce-strings",
        ),
        pytest.param(
            {
                "type": "json",
                "fields": {"a": "v[0]", "b": "v[1]"},
                "array_field": "samples",
                "timestamp_field": "t",
                "timestamp_format": "epoch_ms",
            },
            "s/a",
            json.dumps(
                {
                    "samples": [
                        {"t": NOW_S * 1000 - 20, "v": [1, 2]},
                        {"t": NOW_S * 1000 - 10, "v": [3, 4]},
                    ]
                }
            ).encode(),
            [
                ("a", NOW - 20_000_000, {"a": 1.0, "b": 2.0}),
                ("a", NOW - 10_000_000, {"a": 3.0, "b": 4.0}),
            ],
            id="batched-array",
        ),
        pytest.param(
            {
                "type": "json",
                "fields": {"v": "v"},
                "array_field": "readings",
                "key_from": "field",
                "key_field": "sensor",
                "timestamp_field": "t",
            },
            "s",
            json.dumps(
                {
                    "sensor": "fan",
                    "t": NOW_S - 5,
                    "readings": [{"v": 1}, {"v": 2, "sensor": "fan2", "t": NOW_S - 1}],
                }
            ).encode(),
            [("fan", NOW - 5 * S, {"v": 1.0}), ("fan2", NOW - S, {"v": 2.0})],
            id="batch-key-and-time-from-element-else-message",
        ),
        pytest.param(
            {"type": "json", "fields": {"v": "v"}, "array_field": "r"},
            "s/a",
            b'{"r": []}',
            [],
            id="empty-batch",
        ),
    ],
)
def test_json_decodes(cfg: dict[str, Any], topic: str, payload: bytes, expected: Expected) -> None:
    assert run(cfg, topic, payload) == expected


BIG_INT = b"1" + b"0" * 400


@pytest.mark.parametrize(
    ("cfg", "topic", "payload", "reason"),
    [
        (VIB, "s/a", b'{"vib": {"x": 1, "y": 2', "malformed"),
        (VIB, "s/a", b"\xff\xfe{}", "malformed"),
        (VIB, "s/a", b"", "malformed"),
        (VIB, "s/a", b"[" * 50_000 + b"]" * 50_000, "too_large"),
        ({**VIB, "max_payload_bytes": 200_000}, "s/a", b"[" * 50_000 + b"]" * 50_000, "malformed"),
        (VIB, "s/a", b"1" * 5000, "malformed"),  # beyond Python's int digit limit
        (VIB, "s/a", b'{"vib": {"x": 1}}', "missing_field"),
        (VIB, "s/a", b'{"vib": 3}', "missing_field"),
        (VIB, "s/a", b"null", "missing_field"),
        ({"type": "json", "fields": {"v": "a[3]"}}, "s/a", b'{"a": [1, 2]}', "missing_field"),
        (VIB, "s/a", b'{"vib": {"x": NaN, "y": 1}}', "non_finite"),
        (VIB, "s/a", b'{"vib": {"x": 1, "y": -Infinity}}', "non_finite"),
        (VIB, "s/a", b'{"vib": {"x": 1e400, "y": 1}}', "non_finite"),
        (VIB, "s/a", b'{"vib": {"x": ' + BIG_INT + b', "y": 1}}', "non_finite"),
        (VIB, "s/a", b'{"vib": {"x": "1.5", "y": 1}}', "not_a_number"),
        (VIB, "s/a", b'{"vib": {"x": true, "y": 1}}', "not_a_number"),
        (VIB, "s/a", b'{"vib": {"x": null, "y": 1}}', "not_a_number"),
        (VIB, "s/a", b'{"vib": {"x": [1], "y": 1}}', "not_a_number"),
        ({**VIB, "coerce_strings": True}, "s/a", b'{"vib": {"x": "abc", "y": 1}}', "not_a_number"),
        ({**VIB, "coerce_strings": True}, "s/a", b'{"vib": {"x": "nan", "y": 1}}', "non_finite"),
        ({**VIB, "coerce_strings": True}, "s/a", b'{"vib": {"x": "", "y": 1}}', "missing_field"),
        ({**VIB, "max_payload_bytes": 10}, "s/a", b'{"vib": {"x": 1, "y": 2}}', "too_large"),
        (VIB, "s/bad key", b'{"vib": {"x": 1, "y": 2}}', "bad_key"),
        (VIB, "s/", b'{"vib": {"x": 1, "y": 2}}', "bad_key"),
        ({**VIB, "key_topic_levels": [5]}, "s/a", b'{"vib": {"x": 1, "y": 2}}', "bad_key"),
        ({**VIB, "key_topic_levels": [-3]}, "s/a", b'{"vib": {"x": 1, "y": 2}}', "bad_key"),
        (
            {**VIB, "key_from": "field", "key_field": "id"},
            "s/a",
            b'{"id": "a/b", "vib": {"x": 1, "y": 2}}',
            "bad_key",
        ),
        (
            {**VIB, "key_from": "field", "key_field": "id"},
            "s/a",
            b'{"id": true, "vib": {"x": 1, "y": 2}}',
            "bad_key",
        ),
        (
            {**VIB, "key_from": "field", "key_field": "id"},
            "s/a",
            b'{"id": 1' + b"0" * 200 + b', "vib": {"x": 1, "y": 2}}',
            "bad_key",
        ),
        (
            {**VIB, "key_from": "field", "key_field": "id"},
            "s/a",
            b'{"vib": {"x": 1, "y": 2}}',
            "missing_field",
        ),
        (
            {**VIB, "timestamp_field": "ts"},
            "s/a",
            f'{{"ts": {NOW_S + 301}, "vib": {{"x": 1, "y": 2}}}}'.encode(),
            "timestamp_out_of_range",
        ),
        (
            {**VIB, "timestamp_field": "ts"},
            "s/a",
            f'{{"ts": {NOW_S - 3601}, "vib": {{"x": 1, "y": 2}}}}'.encode(),
            "timestamp_out_of_range",
        ),
        (
            {**VIB, "timestamp_field": "ts"},
            "s/a",
            b'{"ts": 1e300, "vib": {"x": 1, "y": 2}}',
            "timestamp_out_of_range",
        ),
        ({**VIB, "timestamp_field": "ts"}, "s/a", b'{"vib": {"x": 1, "y": 2}}', "missing_field"),
        (
            {**VIB, "timestamp_field": "ts"},
            "s/a",
            b'{"ts": "yesterday", "vib": {"x": 1, "y": 2}}',
            "not_a_number",
        ),
        (
            {**VIB, "timestamp_field": "ts"},
            "s/a",
            b'{"ts": NaN, "vib": {"x": 1, "y": 2}}',
            "non_finite",
        ),
        (
            {**VIB, "timestamp_field": "ts", "timestamp_format": "iso8601"},
            "s/a",
            b'{"ts": "not a date", "vib": {"x": 1, "y": 2}}',
            "malformed",
        ),
        (
            {**VIB, "timestamp_field": "ts", "timestamp_format": "iso8601"},
            "s/a",
            b'{"ts": 1700000000, "vib": {"x": 1, "y": 2}}',
            "malformed",
        ),
        (
            {"type": "json", "fields": {"v": "v"}, "array_field": "r"},
            "s/a",
            b'{"r": {"v": 1}}',
            "malformed",
        ),
        ({"type": "json", "fields": {"v": "v"}, "array_field": "r"}, "s/a", b"{}", "missing_field"),
        (
            {"type": "json", "fields": {"v": "v"}, "array_field": "r"},
            "s/a",
            b'{"r": [{"v": 1}, {"v": "x"}]}',
            "not_a_number",
        ),
    ],
)
def test_json_drops_with_reason(
    cfg: dict[str, Any], topic: str, payload: bytes, reason: str
) -> None:
    assert reason_of(cfg, topic, payload) == reason


@pytest.mark.parametrize(
    ("fmt", "value", "expected_ns"),
    [
        ("epoch_s", NOW_S - 1, NOW - S),
        ("epoch_s", NOW_S - 0.25, NOW - S // 4),
        ("epoch_s", NOW_S + 0.1, NOW + S // 10),
        ("epoch_ms", NOW_S * 1000 + 0.5, NOW + 500_000),
        ("epoch_ms", NOW_S * 1000 - 1, NOW - 1_000_000),
        ("epoch_us", NOW_S * 10**6 - 1, NOW - 1000),
        ("epoch_ns", NOW - 1, NOW - 1),
        ("iso8601", "2023-11-14T22:13:19Z", NOW - S),
        ("iso8601", "2023-11-14T22:13:19.5Z", NOW - S // 2),
        ("iso8601", "2023-11-15T00:13:19+02:00", NOW - S),
        ("iso8601", "2023-11-14T16:43:19.000250-05:30", NOW - S + 250_000),
        ("iso8601", "2023-11-14T22:13:19", NOW - S),  # no offset: UTC
        ("iso8601", "2023-11-14 22:13:19+00:00", NOW - S),
    ],
)
def test_timestamp_formats(fmt: str, value: object, expected_ns: int) -> None:
    cfg = {"type": "json", "fields": {"v": "v"}, "timestamp_field": "t", "timestamp_format": fmt}
    payload = json.dumps({"t": value, "v": 1}).encode()
    assert run(cfg, "s/a", payload) == [("a", expected_ns, {"v": 1.0})]


@pytest.mark.parametrize(
    ("skew_s", "age_s", "offset_s", "ok"),
    [
        (0, 10, 0, True),
        (0, 10, 1, False),
        (5, 10, 5, True),
        (5, 10, -10, True),
        (5, 10, -11, False),
    ],
)
def test_clock_skew_and_age_limits_are_inclusive(
    skew_s: float, age_s: float, offset_s: int, ok: bool
) -> None:
    cfg = {
        "type": "json",
        "fields": {"v": "v"},
        "timestamp_field": "t",
        "max_clock_skew_s": skew_s,
        "max_age_s": age_s,
    }
    payload = json.dumps({"t": NOW_S + offset_s, "v": 1}).encode()
    if ok:
        assert run(cfg, "s/a", payload)[0][1] == NOW + offset_s * S
    else:
        assert reason_of(cfg, "s/a", payload) == "timestamp_out_of_range"


def test_details_quote_at_most_a_short_excerpt_of_the_payload() -> None:
    long = "z" * 10_000
    cases: list[tuple[dict[str, Any], str, bytes]] = [
        (VIB, "s/a", json.dumps({"vib": {"x": long, "y": 1}}).encode()),
        ({**VIB, "coerce_strings": True}, "s/a", json.dumps({"vib": {"x": long, "y": 1}}).encode()),
        ({**VIB, "key_from": "field", "key_field": "k"}, "s/a", json.dumps({"k": long}).encode()),
        ({**VIB, "key_from": "field", "key_field": "k"}, "s/a", json.dumps({"k": [long]}).encode()),
        (VIB, "s/a", (long + "{").encode()),
        (VIB, "s/" + long, b"{}"),
        ({"type": "csv", "columns": ["a"], "fields": ["a"]}, "s/a", long.encode()),
        ({"type": "csv", "columns": ["a"], "fields": ["a"]}, "s/a", ("1x" + long).encode()),
        (
            {"type": "csv", "columns": ["a", "t"], "fields": ["a"], "timestamp_column": "t"},
            "s/a",
            ("1," + long).encode(),
        ),
    ]
    for cfg, topic, payload in cases:
        with pytest.raises(DecodeError) as info:
            decoder({**cfg, "max_payload_bytes": 100_000}).decode(topic, payload, NOW, MONO)
        assert "z" * 81 not in info.value.detail
        assert len(info.value.detail) < 200, info.value.detail


# ---------------------------------------------------------------- csv

CSV = {"type": "csv", "columns": ["t", "id", "x", "y"], "fields": ["x", "y"]}


@pytest.mark.parametrize(
    ("cfg", "topic", "payload", "expected"),
    [
        pytest.param(
            CSV, "s/m1", b"0,a,1.5,2\n", [("m1", NOW, {"x": 1.5, "y": 2.0})], id="one-line"
        ),
        pytest.param(
            {**CSV, "timestamp_column": "t", "key_column": "id"},
            "s",
            f"{NOW_S - 2},m1,1,2\r\n{NOW_S - 1},m2, 3 ,4\n\n".encode(),
            [("m1", NOW - 2 * S, {"x": 1.0, "y": 2.0}), ("m2", NOW - S, {"x": 3.0, "y": 4.0})],
            id="multi-line-crlf-key-and-time-columns",
        ),
        pytest.param(
            {**CSV, "header": True},
            "s/m1",
            b"t,id,x,y\n0,a,1,2\n0,a,3,4",
            [("m1", NOW, {"x": 1.0, "y": 2.0}), ("m1", NOW, {"x": 3.0, "y": 4.0})],
            id="header-skipped",
        ),
        pytest.param(
            {**CSV, "header": True},
            "s/m1",
            b"0,a,1,2",
            [("m1", NOW, {"x": 1.0, "y": 2.0})],
            id="header-optional-in-later-messages",
        ),
        pytest.param({**CSV, "header": True}, "s/m1", b"t,id,x,y\n", [], id="header-only"),
        pytest.param(
            {**CSV, "delimiter": ";", "timestamp_column": "t", "timestamp_format": "iso8601"},
            "s/m1",
            b"2023-11-14T22:13:19Z;a;1e3;-0.5",
            [("m1", NOW - S, {"x": 1000.0, "y": -0.5})],
            id="semicolon-iso-time",
        ),
        pytest.param(
            {**CSV, "delimiter": "\t", "timestamp_column": "t", "timestamp_format": "epoch_ms"},
            "s/m1",
            f"{NOW_S * 1000 - 1}\ta\t1\t2".encode(),
            [("m1", NOW - 1_000_000, {"x": 1.0, "y": 2.0})],
            id="tab-epoch-ms",
        ),
    ],
)
def test_csv_decodes(cfg: dict[str, Any], topic: str, payload: bytes, expected: Expected) -> None:
    assert run(cfg, topic, payload) == expected


@pytest.mark.parametrize(
    ("cfg", "payload", "reason"),
    [
        (CSV, b"0,a,1", "wrong_length"),
        (CSV, b"0,a,1,2,3", "wrong_length"),
        (CSV, b"0,a,1,2\n0,a,1", "wrong_length"),
        ({**CSV, "header": True}, b"t;id;x;y\n0,a,1,2", "wrong_length"),
        (CSV, b"0,a,one,2", "not_a_number"),
        (CSV, b"0,a,0x10,2", "not_a_number"),
        (CSV, b"0,a,,2", "missing_field"),
        (CSV, b"0,a,nan,2", "non_finite"),
        (CSV, b"0,a,1,-inf", "non_finite"),
        (CSV, b"0,a,1e999,2", "non_finite"),
        (CSV, b"0,a,\xff,2", "malformed"),
        ({**CSV, "max_payload_bytes": 4}, b"0,a,1,2", "too_large"),
        ({**CSV, "key_column": "id"}, b"0,a b,1,2", "bad_key"),
        ({**CSV, "key_column": "id"}, b"0,,1,2", "bad_key"),
        ({**CSV, "timestamp_column": "t"}, b",a,1,2", "missing_field"),
        ({**CSV, "timestamp_column": "t"}, b"soon,a,1,2", "not_a_number"),
        (
            {**CSV, "timestamp_column": "t"},
            f"{NOW_S + 400},a,1,2".encode(),
            "timestamp_out_of_range",
        ),
        ({**CSV, "timestamp_column": "t"}, b"0,a,1,2", "timestamp_out_of_range"),
        ({**CSV, "timestamp_column": "t", "timestamp_format": "iso8601"}, b"0,a,1,2", "malformed"),
    ],
)
def test_csv_drops_with_reason(cfg: dict[str, Any], payload: bytes, reason: str) -> None:
    assert reason_of(cfg, "s/m1", payload) == reason


# ---------------------------------------------------------------- binary


@pytest.mark.parametrize(
    ("cfg", "payload", "expected"),
    [
        pytest.param(
            {"type": "binary", "format": "3f", "fields": ["x", "y", "z"]},
            struct.pack("<3f", 1.5, -2.0, 0.25),
            [("m1", NOW, {"x": 1.5, "y": -2.0, "z": 0.25})],
            id="little-floats",
        ),
        pytest.param(
            {"type": "binary", "format": "h h h", "byte_order": "big", "fields": ["x", "y", "z"]},
            struct.pack(">hhh", -1, 256, 7),
            [("m1", NOW, {"x": -1.0, "y": 256.0, "z": 7.0})],
            id="big-shorts",
        ),
        pytest.param(
            {"type": "binary", "format": "h h h", "fields": ["x", "y", "z"]},
            struct.pack(">hhh", -1, 256, 7),
            [("m1", NOW, {"x": -1.0 * 256 + 255, "y": 1.0, "z": 7.0 * 256})],
            id="same-bytes-read-little",
        ),
        pytest.param(
            {
                "type": "binary",
                "format": "Qd",
                "fields": ["t", "v"],
                "timestamp_index": 0,
                "timestamp_format": "epoch_ns",
            },
            struct.pack("<Qd", NOW - 5, 3.5),
            [("m1", NOW - 5, {"v": 3.5})],
            id="timestamp-index-exact-ns",
        ),
        pytest.param(
            {
                "type": "binary",
                "format": "2x B I",
                "byte_order": "big",
                "fields": ["level", "t"],
                "timestamp_index": -1,
                "repeat": True,
            },
            struct.pack(">2xBI", 9, NOW_S - 1) + struct.pack(">2xBI", 10, NOW_S),
            [("m1", NOW - S, {"level": 9.0}), ("m1", NOW, {"level": 10.0})],
            id="repeat-with-padding-and-last-value-timestamp",
        ),
        pytest.param(
            {"type": "binary", "format": "e", "fields": ["v"], "repeat": True},
            struct.pack("<3e", 0.5, 1.0, -2.0),
            [("m1", NOW, {"v": 0.5}), ("m1", NOW, {"v": 1.0}), ("m1", NOW, {"v": -2.0})],
            id="repeat-half-floats",
        ),
    ],
)
def test_binary_decodes(cfg: dict[str, Any], payload: bytes, expected: Expected) -> None:
    assert run(cfg, "s/m1", payload) == expected


F3 = {"type": "binary", "format": "3f", "fields": ["x", "y", "z"]}
TS = {"type": "binary", "format": "dd", "fields": ["t", "v"], "timestamp_index": 0}


@pytest.mark.parametrize(
    ("cfg", "topic", "payload", "reason"),
    [
        (F3, "s/m1", b"", "wrong_length"),
        (F3, "s/m1", struct.pack("<2f", 1, 2), "wrong_length"),
        (F3, "s/m1", struct.pack("<4f", 1, 2, 3, 4), "wrong_length"),
        ({**F3, "repeat": True}, "s/m1", b"", "wrong_length"),
        ({**F3, "repeat": True}, "s/m1", struct.pack("<4f", 1, 2, 3, 4), "wrong_length"),
        (F3, "s/m1", struct.pack("<3f", 1, float("nan"), 3), "non_finite"),
        (
            {**F3, "repeat": True},
            "s/m1",
            struct.pack("<6f", 1, 2, 3, 4, float("inf"), 6),
            "non_finite",
        ),
        ({**F3, "max_payload_bytes": 8}, "s/m1", struct.pack("<3f", 1, 2, 3), "too_large"),
        (F3, "s/m 1", struct.pack("<3f", 1, 2, 3), "bad_key"),
        (TS, "s/m1", struct.pack("<dd", NOW_S + 1000, 1), "timestamp_out_of_range"),
        (TS, "s/m1", struct.pack("<dd", 0, 1), "timestamp_out_of_range"),
        (TS, "s/m1", struct.pack("<dd", float("inf"), 1), "non_finite"),
        (TS, "s/m1", struct.pack("<dd", 1e308, 1), "timestamp_out_of_range"),
    ],
)
def test_binary_drops_with_reason(
    cfg: dict[str, Any], topic: str, payload: bytes, reason: str
) -> None:
    assert reason_of(cfg, topic, payload) == reason


# ---------------------------------------------------------------- config validation


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"type": "json", "fields": {}}, "at least 1 item"),
        ({"type": "json", "fields": {"x": "a..b"}}, "bad JSON path 'a..b'"),
        ({"type": "json", "fields": {"x": "a[-1]"}}, "bad JSON path"),
        ({"type": "json", "fields": {"x": ""}}, "bad JSON path"),
        ({"type": "json", "fields": {"bad name": "a"}}, "field name 'bad name' must match"),
        ({"type": "json", "fields": {"x": "a"}, "array_field": "r."}, "bad JSON path 'r.'"),
        ({"type": "json", "fields": {"x": "a"}, "key_from": "field"}, "needs key_field"),
        ({"type": "json", "fields": {"x": "a"}, "key_topic_levels": []}, "at least 1 item"),
        (
            {"type": "json", "fields": {"x": "a"}, "max_payload_bytes": 0},
            "greater than or equal to 1",
        ),
        ({"type": "json", "fields": {"x": "a"}, "max_age_s": 0}, "greater than 0"),
        ({"type": "json", "fields": {"x": "a"}, "timestamp_format": "epoch_min"}, "epoch_s"),
        ({"type": "json", "fields": {"x": "a"}, "colour": 1}, "Extra inputs are not permitted"),
        ({**CSV, "fields": ["x", "w"]}, "field 'w' is not a column; columns: t, id, x, y"),
        ({**CSV, "fields": ["x", "x"]}, "fields must be unique"),
        ({**CSV, "columns": ["a", "a"], "fields": ["a"]}, "column names must be unique"),
        ({**CSV, "timestamp_column": "time"}, "timestamp_column 'time' is not a column"),
        ({**CSV, "key_column": "name"}, "key_column 'name' is not a column"),
        ({**CSV, "key_column": "x"}, "can't also be a numeric field"),
        ({**CSV, "key_column": "id", "key_from": "topic"}, "key_from is topic"),
        ({**CSV, "key_from": "field"}, "needs key_column"),
        ({**CSV, "timestamp_field": "t"}, "use key_column and timestamp_column"),
        ({**CSV, "delimiter": ",,"}, "at most 1 character"),
        ({**CSV, "delimiter": "\n"}, "line break"),
        (
            {"type": "binary", "format": "3f", "fields": ["x", "y"]},
            "unpacks to 3 values but fields names 2",
        ),
        ({"type": "binary", "format": "<3f", "fields": ["x", "y", "z"]}, "byte order prefix"),
        ({"type": "binary", "format": "4s", "fields": ["x"]}, "unsupported codes 's'"),
        ({"type": "binary", "format": "?", "fields": ["x"]}, "unsupported codes '?'"),
        ({"type": "binary", "format": "3", "fields": ["x"]}, "not a valid struct format"),
        ({"type": "binary", "format": "4x", "fields": ["x"]}, "holds no values"),
        ({**F3, "timestamp_index": 3}, "timestamp_index 3 is outside the 3 values"),
        ({"type": "binary", "format": "d", "fields": ["t"], "timestamp_index": 0}, "no values"),
        ({**TS, "timestamp_format": "iso8601"}, "iso8601 needs text"),
        ({**F3, "key_from": "field", "key_field": "x"}, "use key_from: topic"),
        ({**F3, "fields": ["x", "y", "y"]}, "field names must be unique"),
        ({"type": "yaml", "fields": ["x"]}, "expected tags: 'binary', 'csv', 'json'"),
    ],
)
def test_config_errors_say_what_is_wrong(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        config(data)
    assert message in str(info.value)


def test_csv_key_column_implies_key_from_field() -> None:
    cfg = config({**CSV, "key_column": "id"})
    assert cfg.key_from == "field"


def test_constructors_check_what_configs_check() -> None:
    with pytest.raises(ValueError, match="bad JSON path"):
        JsonDecoder({"x": "a[b]"})
    with pytest.raises(ValueError, match="needs key_field"):
        JsonDecoder({"x": "a"}, options=DecoderOptions(key_from="field"))
    with pytest.raises(ValueError, match="not a column"):
        CsvDecoder(["a"], ["b"])
    with pytest.raises(ValueError, match="exactly when key_from=field"):
        CsvDecoder(["a", "k"], ["a"], key_column="k")
    with pytest.raises(ValueError, match="unpacks to 2 values"):
        BinaryDecoder("hh", ["a"])
    with pytest.raises(ValueError, match="key_topic_levels"):
        DecoderOptions(key_topic_levels=())
    with pytest.raises(TypeError, match="expected a JsonDecoderConfig"):
        JsonDecoder.from_config(config(CSV))
    assert parse_path("data.temps[0][1].a b") == ("data", "temps", 0, 1, "a b")
    assert BinaryDecoder("Qd", ["t", "v"], timestamp_index=0).fields == ("v",)


def test_decoders_built_directly_match_from_config() -> None:
    dec = JsonDecoder({"x": "vib.x"}, options=DecoderOptions(key_topic_levels=(0, 2)))
    [r] = dec.decode("a/b/c", b'{"vib": {"x": 2}}', NOW, MONO)
    assert (r.key, r.ts_ns, r.fields, r.values.tolist()) == ("a/c", NOW, ("x",), [2.0])


# ---------------------------------------------------------------- properties: nothing else escapes

JSON_DEC = decoder(
    {
        "type": "json",
        "fields": {"a": "a", "b": "b[0]"},
        "key_from": "field",
        "key_field": "k",
        "timestamp_field": "t",
        "coerce_strings": True,
    }
)
JSON_BATCH = decoder(
    {"type": "json", "fields": {"a": "a"}, "array_field": "r", "timestamp_field": "t"}
)
JSON_ISO = decoder(
    {"type": "json", "fields": {"a": "a"}, "timestamp_field": "t", "timestamp_format": "iso8601"}
)
CSV_DEC = decoder(
    {
        "type": "csv",
        "columns": ["t", "k", "a", "b"],
        "fields": ["a", "b"],
        "timestamp_column": "t",
        "key_column": "k",
        "header": True,
    }
)
CSV_ISO = decoder({**CSV, "timestamp_column": "t", "timestamp_format": "iso8601", "delimiter": " "})
BIN_DECS = [
    decoder({"type": "binary", "format": "3f", "fields": ["x", "y", "z"]}),
    decoder({"type": "binary", "format": "Qe", "fields": ["t", "v"], "timestamp_index": 0}),
    decoder(
        {
            "type": "binary",
            "format": "dbH",
            "byte_order": "big",
            "fields": ["t", "a", "b"],
            "timestamp_index": 0,
            "timestamp_format": "epoch_s",
            "repeat": True,
        }
    ),
]
ALL_DECS = [JSON_DEC, JSON_BATCH, JSON_ISO, CSV_DEC, CSV_ISO, *BIN_DECS]


def decode_or_drop(dec: Decoder, topic: str, payload: bytes) -> list[SensorReading] | None:
    try:
        readings = dec.decode(topic, payload, NOW, MONO)
    except DecodeError as err:
        assert err.reason in DROP_REASONS
        assert len(err.detail) < 300
        return None
    check_valid(readings, dec)
    return readings


TOPICS = st.one_of(st.just("plant/m1"), st.text(max_size=20))


@settings(max_examples=150, deadline=None)
@given(payload=st.binary(max_size=200), topic=TOPICS)
def test_any_bytes_give_readings_or_a_decode_error(payload: bytes, topic: str) -> None:
    for dec in ALL_DECS:
        decode_or_drop(dec, topic, payload)


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["1.5", "nan", "", "m1", "a/b", "2023-11-14T22:13:19Z", str(NOW_S)]),
    st.integers(min_value=NOW_S - 4000, max_value=NOW_S + 400),
    st.text(max_size=10),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "k", "t", "r", "x"]), inner, max_size=5),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_any_json_value_gives_readings_or_a_decode_error(value: object) -> None:
    payload = json.dumps(value).encode()
    for dec in (JSON_DEC, JSON_BATCH, JSON_ISO):
        decode_or_drop(dec, "plant/m1", payload)


@settings(max_examples=100, deadline=None)
@given(
    t=st.integers(min_value=NOW_S - 4000, max_value=NOW_S + 400),
    a=st.floats(allow_nan=False, allow_infinity=False, width=64),
    b=st.integers(min_value=-(10**6), max_value=10**6),
    k=st.from_regex(r"[A-Za-z0-9_.:-]{1,10}", fullmatch=True),
)
def test_well_formed_json_always_decodes_unless_the_time_is_out_of_range(
    t: int, a: float, b: int, k: str
) -> None:
    payload = json.dumps({"k": k, "t": t, "a": a, "b": [str(b)]}).encode()
    readings = decode_or_drop(JSON_DEC, "x", payload)
    in_range = NOW_S - 3600 <= t <= NOW_S + 300
    assert (readings is not None) == in_range
    if readings is not None:
        [r] = readings
        assert (r.key, r.ts_ns, r.values.tolist()) == (k, t * S, [a, float(b)])


csv_cells = st.one_of(
    st.sampled_from(["1", "-2.5", "nan", "inf", "", "m1", "x y", str(NOW_S), "1e999", "t", "k"]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\n"), max_size=8),
)
csv_lines = st.lists(csv_cells, min_size=0, max_size=6).map(",".join)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(csv_lines, max_size=5), sep=st.sampled_from(["\n", "\r\n"]))
def test_any_csv_text_gives_readings_or_a_decode_error(lines: list[str], sep: str) -> None:
    payload = sep.join(lines).encode()
    for dec in (CSV_DEC, CSV_ISO):
        readings = decode_or_drop(dec, "plant/m1", payload)
        if readings is not None:
            assert len(readings) <= len(lines)


@settings(max_examples=200, deadline=None)
@given(
    records=st.lists(
        st.tuples(
            st.floats(width=64),
            st.integers(min_value=-128, max_value=127),
            st.integers(min_value=0, max_value=65535),
        ),
        max_size=6,
    ),
    tail=st.binary(max_size=12),
)
def test_any_binary_records_give_readings_or_a_decode_error(
    records: list[tuple[float, int, int]], tail: bytes
) -> None:
    dec = BIN_DECS[2]
    body = b"".join(struct.pack(">dbH", *r) for r in records)
    readings = decode_or_drop(dec, "plant/m1", body + tail)
    if not tail and records and all(NOW_S - 3600 <= r[0] <= NOW_S + 300 for r in records):
        assert readings is not None
        assert [r.values.tolist() for r in readings] == [
            [float(a), float(b)] for _, a, b in records
        ]
    if len(tail) % 11:
        assert readings is None


@given(
    value=st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12),
    fmt=st.sampled_from(["epoch_s", "epoch_ms", "epoch_us", "epoch_ns"]),
)
def test_float_timestamps_convert_exactly_via_their_shortest_repr(value: float, fmt: str) -> None:
    from decimal import ROUND_HALF_EVEN, Decimal

    from runtime.processing.decoders.base import NS_PER_UNIT, DecoderOptions

    options = DecoderOptions(timestamp_format=fmt)  # type: ignore[arg-type]
    scale = NS_PER_UNIT[fmt]
    expected = int((Decimal(repr(value)) * scale).to_integral_value(ROUND_HALF_EVEN))
    assert options.timestamp_ns(value, coerce_strings=False, what="ts") == expected


def test_topic_keys_are_remembered_but_bad_topics_fail_every_time() -> None:
    from runtime.processing.decoders.base import DecodeError, DecoderOptions

    options = DecoderOptions(key_topic_levels=(1,))
    assert options.key_from_topic("plant/pump-1/data") == "pump-1"
    assert options.key_from_topic("plant/pump-1/data") == "pump-1"
    for _ in range(2):
        with pytest.raises(DecodeError) as info:
            options.key_from_topic("plant/bad key/data")
        assert info.value.reason == "bad_key"
