"""Sensor payload decoders: one MQTT message → zero or more SensorReadings, or a DecodeError.

A decoder never raises anything but :class:`DecodeError` for any payload bytes; its ``reason`` is a
short stable key the source counts drops by. The parts every decoder shares live here: the payload
size limit, the sensor key (from topic levels or a payload field), and the reading timestamp (from a
payload field in one of several formats, checked against the arrival time).
"""

from __future__ import annotations

import abc
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import ClassVar, Literal, get_args

import numpy as np
from pydantic import Field

from runtime.config.base import PluginConfig
from runtime.errors import SourceError
from runtime.messages import SensorReading
from runtime.registry import Registry

DropReason = Literal[
    "malformed",
    "missing_field",
    "not_a_number",
    "non_finite",
    "too_large",
    "wrong_length",
    "timestamp_out_of_range",
    "bad_key",
]
DROP_REASONS: tuple[DropReason, ...] = get_args(DropReason)

TimestampFormat = Literal["epoch_s", "epoch_ms", "epoch_us", "epoch_ns", "iso8601"]
NS_PER_UNIT: dict[str, int] = {
    "epoch_s": 10**9,
    "epoch_ms": 10**6,
    "epoch_us": 10**3,
    "epoch_ns": 1,
}

KEY_PART_PATTERN = r"[A-Za-z0-9_.:-]+"
KEY_PART_RE = re.compile(KEY_PART_PATTERN)
MAX_KEY_CHARS = 128
EXCERPT_CHARS = 60
_MAX_NUMBER_TEXT = 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_SCALE_DIGITS = {10**9: 9, 10**6: 6, 10**3: 3, 1: 0}
_TOPIC_KEY_CACHE = 4096


class DecodeError(SourceError):
    """A payload that can't become readings. ``reason`` is one of :data:`DROP_REASONS`."""

    def __init__(self, reason: DropReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: DropReason = reason
        self.detail = detail


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """``repr`` of a payload fragment, cut to ``limit`` characters so a detail stays short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class DecoderConfig(PluginConfig):
    """The part of the config every decoder shares."""

    max_payload_bytes: int = Field(
        65536, ge=1, description="larger payloads are dropped (reason too_large)"
    )
    key_from: Literal["topic", "field"] = Field(
        "topic", description="the sensor key comes from topic levels or from a payload field"
    )
    key_topic_levels: list[int] = Field(
        default_factory=lambda: [-1],
        min_length=1,
        description="topic levels (0-based, negative from the end) joined with / as the key",
    )
    key_field: str | None = Field(
        None, description="payload field holding the key (key_from=field)"
    )
    timestamp_field: str | None = Field(
        None, description="payload field holding the reading time; absent: the arrival time"
    )
    timestamp_format: TimestampFormat = "epoch_s"
    max_clock_skew_s: float = Field(
        300.0, ge=0, description="readings further than this in the future are dropped"
    )
    max_age_s: float = Field(3600.0, gt=0, description="readings older than this are dropped")


@dataclass(frozen=True, slots=True)
class DecoderOptions:
    """The shared settings of :class:`DecoderConfig` as plain values a decoder is built with."""

    max_payload_bytes: int = 65536
    key_from: Literal["topic", "field"] = "topic"
    key_topic_levels: tuple[int, ...] = (-1,)
    timestamp_format: TimestampFormat = "epoch_s"
    max_clock_skew_s: float = 300.0
    max_age_s: float = 3600.0
    _skew_ns: float = field(init=False, repr=False)
    _age_ns: float = field(init=False, repr=False)
    _topic_keys: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_payload_bytes < 1:
            raise ValueError(f"max_payload_bytes must be >= 1, got {self.max_payload_bytes}")
        if not self.key_topic_levels:
            raise ValueError("key_topic_levels must name at least one topic level")
        if not self.max_clock_skew_s >= 0 or not self.max_age_s > 0:
            raise ValueError(
                f"expected max_clock_skew_s >= 0 and max_age_s > 0, "
                f"got {self.max_clock_skew_s} and {self.max_age_s}"
            )
        object.__setattr__(self, "_skew_ns", self.max_clock_skew_s * 1e9)
        object.__setattr__(self, "_age_ns", self.max_age_s * 1e9)
        object.__setattr__(self, "_topic_keys", {})

    @classmethod
    def from_config(cls, config: DecoderConfig) -> DecoderOptions:
        return cls(
            max_payload_bytes=config.max_payload_bytes,
            key_from=config.key_from,
            key_topic_levels=tuple(config.key_topic_levels),
            timestamp_format=config.timestamp_format,
            max_clock_skew_s=config.max_clock_skew_s,
            max_age_s=config.max_age_s,
        )

    def check_size(self, payload: bytes) -> None:
        if len(payload) > self.max_payload_bytes:
            raise DecodeError(
                "too_large",
                f"payload is {len(payload)} bytes; the limit is {self.max_payload_bytes}",
            )

    def key_from_topic(self, topic: str) -> str:
        """The configured topic levels joined with ``/``; each level must be a valid key part.

        Sensors publish on a few topics over and over: valid keys are remembered per topic (up to
        ``_TOPIC_KEY_CACHE`` topics; the cache starts afresh when full)."""
        cache = self._topic_keys
        key = cache.get(topic)
        if key is None:
            key = self._key_from_topic(topic)
            if len(cache) >= _TOPIC_KEY_CACHE:
                cache.clear()
            cache[topic] = key
        return key

    def _key_from_topic(self, topic: str) -> str:
        levels = topic.split("/")
        parts: list[str] = []
        for index in self.key_topic_levels:
            if not -len(levels) <= index < len(levels):
                raise DecodeError(
                    "bad_key",
                    f"topic {excerpt(topic)} has {len(levels)} levels; no level {index}",
                )
            parts.append(levels[index])
        for part in parts:
            check_key_part(part, f"topic {excerpt(topic)} level")
        key = "/".join(parts)
        if len(key) > MAX_KEY_CHARS:
            raise DecodeError("bad_key", f"key from topic is {len(key)} chars; max {MAX_KEY_CHARS}")
        return key

    def check_time(self, ts_ns: int, received_at_ns: int) -> int:
        """``ts_ns`` if it is within the allowed skew and age of the arrival time."""
        if ts_ns - received_at_ns > self._skew_ns:
            raise DecodeError(
                "timestamp_out_of_range",
                f"reading time is {_seconds(ts_ns - received_at_ns)} after its arrival; "
                f"max_clock_skew_s is {self.max_clock_skew_s:g}",
            )
        if received_at_ns - ts_ns > self._age_ns:
            raise DecodeError(
                "timestamp_out_of_range",
                f"reading is {_seconds(received_at_ns - ts_ns)} old at arrival; "
                f"max_age_s is {self.max_age_s:g}",
            )
        return ts_ns

    def timestamp_ns(self, value: object, *, coerce_strings: bool, what: str) -> int:
        """A payload timestamp value → epoch nanoseconds, per ``timestamp_format``.

        Integers and floats (as written, via their shortest repr) are converted exactly, to the
        nearest nanosecond. ISO-8601 strings
        without a UTC offset are taken as UTC.
        """
        fmt = self.timestamp_format
        if fmt == "iso8601":
            if not isinstance(value, str):
                raise DecodeError(
                    "malformed", f"{what}: expected an ISO-8601 string, got {excerpt(value)}"
                )
            return iso8601_ns(value, what)
        scale = NS_PER_UNIT[fmt]
        if isinstance(value, str) and coerce_strings:
            value = number_from_text(value, what)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DecodeError("not_a_number", f"{what}: expected a number, got {excerpt(value)}")
        if isinstance(value, int):
            return value * scale
        if not math.isfinite(value):
            raise DecodeError("non_finite", f"{what}: {value!r} is not a finite time")
        # via the shortest decimal repr: 1700000000.1 s is ...100000000 ns, not float noise
        text = repr(value)
        digits = _SCALE_DIGITS[scale]
        whole, _, fraction = text.partition(".")
        fraction = fraction.rstrip("0")
        if "e" not in text and len(fraction) <= digits:  # exact in integers, no rounding needed
            magnitude = int(whole.lstrip("-")) * scale + int(fraction.ljust(digits, "0") or "0")
            return -magnitude if text.startswith("-") else magnitude
        return int((Decimal(text) * scale).to_integral_value(ROUND_HALF_EVEN))


def _seconds(ns: int) -> str:
    return f"{ns / 1e9:.6g} s" if ns < 10**27 else "over 1e18 s"


def check_key_part(part: str, what: str) -> str:
    if not KEY_PART_RE.fullmatch(part):
        raise DecodeError(
            "bad_key", f"{what} {excerpt(part)} is not a valid key (expected {KEY_PART_PATTERN})"
        )
    return part


def key_from_value(value: object, what: str) -> str:
    """A key read from a payload field: a string (or an integer id) of key characters, no ``/``."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not -(10**MAX_KEY_CHARS) < value < 10**MAX_KEY_CHARS:
            raise DecodeError(
                "bad_key", f"{what}: integer key is longer than {MAX_KEY_CHARS} chars"
            )
        value = str(value)
    if not isinstance(value, str):
        raise DecodeError("bad_key", f"{what}: expected a string key, got {excerpt(value)}")
    if len(value) > MAX_KEY_CHARS:
        raise DecodeError("bad_key", f"{what}: key is {len(value)} chars; max {MAX_KEY_CHARS}")
    return check_key_part(value, what)


def number_from_text(text: str, what: str) -> int | float:
    """A decimal number written as text: an exact int when it is one, else a float."""
    s = text.strip()
    if not s:
        raise DecodeError("missing_field", f"{what}: empty")
    if len(s) > _MAX_NUMBER_TEXT:
        raise DecodeError("not_a_number", f"{what}: {excerpt(s)} is too long for a number")
    if _INT_TEXT.fullmatch(s):
        return int(s)
    try:
        return float(s)
    except ValueError:
        raise DecodeError("not_a_number", f"{what}: {excerpt(s)} is not a number") from None


def to_float(value: object, what: str, *, coerce_strings: bool = False) -> float:
    """A payload value → a finite float. ``bool`` is not a number; strings only when coercing."""
    if isinstance(value, str) and coerce_strings:
        value = number_from_text(value, what)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError("not_a_number", f"{what}: expected a number, got {excerpt(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise DecodeError("non_finite", f"{what}: integer too large for float64") from None
    if not math.isfinite(number):
        raise DecodeError("non_finite", f"{what}: {number!r} is not finite")
    return number


def iso8601_ns(text: str, what: str) -> int:
    """ISO-8601 (``Z`` or ``±hh:mm`` offsets; none means UTC) → epoch nanoseconds, exactly."""
    if len(text) > _MAX_NUMBER_TEXT:
        raise DecodeError("malformed", f"{what}: {excerpt(text)} is too long for a timestamp")
    try:
        dt = datetime.fromisoformat(text.strip())
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        delta = dt - _EPOCH
    except (ValueError, OverflowError):
        raise DecodeError("malformed", f"{what}: {excerpt(text)} is not an ISO-8601 time") from None
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def make_reading(
    key: str, ts_ns: int, received_mono_ns: int, fields: tuple[str, ...], values: Sequence[float]
) -> SensorReading:
    return SensorReading(
        key=key,
        ts_ns=ts_ns,
        received_mono_ns=received_mono_ns,
        fields=fields,
        values=np.array(values, dtype=np.float64),
    )


class Decoder(abc.ABC):
    """Turns one MQTT message into readings. Stateless and safe to share between threads."""

    config_type: ClassVar[type[PluginConfig]]
    _names: tuple[str, ...]  # set by each decoder's constructor

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: PluginConfig) -> Decoder: ...

    @property
    def fields(self) -> tuple[str, ...]:
        """The field names of every reading this decoder produces, in order."""
        return self._names

    @abc.abstractmethod
    def decode(
        self, topic: str, payload: bytes, received_at_ns: int, received_mono_ns: int
    ) -> list[SensorReading]:
        """The readings in one message (wall and monotonic arrival times in ns).

        Raises :class:`DecodeError` — and nothing else — for a payload that can't be decoded.
        """


DECODERS: Registry[type[Decoder]] = Registry("decoder")
