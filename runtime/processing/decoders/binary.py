"""Raw packed binary payloads: one record (or N back-to-back records) of a ``struct`` format.

``fields`` names every value of the format, in order. With ``timestamp_index`` that value is the
reading time and is left out of the reading's values.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterable, Sequence
from typing import ClassVar, Literal, Self

import numpy as np
from pydantic import Field, field_validator, model_validator

from runtime.config.base import PluginConfig
from runtime.messages import SensorReading
from runtime.processing.decoders.base import (
    DECODERS,
    KEY_PART_PATTERN,
    KEY_PART_RE,
    DecodeError,
    Decoder,
    DecoderConfig,
    DecoderOptions,
)

NUMERIC_CODES = "xbBhHiIlLqQefd"
_FORMAT_CHARS = re.compile(rf"[\s0-9{NUMERIC_CODES}]*")


def compile_format(fmt: str, byte_order: Literal["little", "big"]) -> tuple[struct.Struct, int]:
    """The struct for ``fmt`` in ``byte_order`` and how many values one record unpacks to."""
    body = fmt.strip()
    if body[:1] in ("@", "=", "<", ">", "!"):
        raise ValueError(
            f"binary: format {fmt!r} must not start with a byte order prefix; set byte_order"
        )
    if not _FORMAT_CHARS.fullmatch(body):
        bad = sorted({c for c in body if not (c.isspace() or c.isdigit() or c in NUMERIC_CODES)})
        raise ValueError(
            f"binary: format {fmt!r} has unsupported codes {''.join(bad)!r}; "
            f"expected numeric codes from {NUMERIC_CODES!r} with optional counts"
        )
    try:
        compiled = struct.Struct(("<" if byte_order == "little" else ">") + body)
    except struct.error as exc:
        raise ValueError(f"binary: format {fmt!r} is not a valid struct format: {exc}") from None
    count = len(compiled.unpack(bytes(compiled.size)))
    if count == 0:
        raise ValueError(f"binary: format {fmt!r} holds no values")
    return compiled, count


class BinaryDecoderConfig(DecoderConfig):
    type: Literal["binary"]
    format: str = Field(
        description="struct format without byte order prefix, e.g. '3f', 'h h h', 'Qd'"
    )
    byte_order: Literal["little", "big"] = "little"
    fields: list[str] = Field(min_length=1, description="one name per value of the format")
    timestamp_index: int | None = Field(
        None, description="which value (0-based, negative from the end) is the reading time"
    )
    repeat: bool = Field(False, description="the payload is N back-to-back records → N readings")

    @field_validator("fields")
    @classmethod
    def _check_fields(cls, value: list[str]) -> list[str]:
        check_names(value)
        return value

    @model_validator(mode="after")
    def _check_layout(self) -> Self:
        _, count = compile_format(self.format, self.byte_order)
        check_layout(self.format, count, self.fields, self.timestamp_index)
        if self.key_from != "topic" or self.key_field is not None:
            raise ValueError("binary: payloads carry no key field; use key_from: topic")
        if self.timestamp_field is not None:
            raise ValueError("binary: use timestamp_index, not timestamp_field")
        if self.timestamp_index is not None and self.timestamp_format == "iso8601":
            raise ValueError("binary: timestamp_format iso8601 needs text; use an epoch_* format")
        return self


def check_names(names: Sequence[str]) -> None:
    for name in names:
        if not KEY_PART_RE.fullmatch(name):
            raise ValueError(f"field name {name!r} must match {KEY_PART_PATTERN}")
    if len(set(names)) != len(names):
        raise ValueError(f"field names must be unique, got {list(names)}")


def check_layout(fmt: str, count: int, fields: Sequence[str], timestamp_index: int | None) -> None:
    if len(fields) != count:
        raise ValueError(
            f"binary: format {fmt!r} unpacks to {count} values but fields names {len(fields)}: "
            f"{list(fields)}; name every value"
        )
    if timestamp_index is not None:
        if not -count <= timestamp_index < count:
            raise ValueError(
                f"binary: timestamp_index {timestamp_index} is outside the {count} values"
            )
        if count == 1:
            raise ValueError("binary: the only value is the timestamp; no values would be left")


@DECODERS.register("binary")
class BinaryDecoder(Decoder):
    config_type: ClassVar[type[PluginConfig]] = BinaryDecoderConfig

    def __init__(
        self,
        format: str,
        fields: Sequence[str],
        *,
        byte_order: Literal["little", "big"] = "little",
        timestamp_index: int | None = None,
        repeat: bool = False,
        options: DecoderOptions | None = None,
    ) -> None:
        self._struct, count = compile_format(format, byte_order)
        check_names(fields)
        check_layout(format, count, fields, timestamp_index)
        self.options = options or DecoderOptions()
        if self.options.key_from != "topic":
            raise ValueError("binary decoder: payloads carry no key field; use key_from=topic")
        if timestamp_index is not None and self.options.timestamp_format == "iso8601":
            raise ValueError("binary decoder: iso8601 timestamps need text; use an epoch format")
        self._ts_idx = None if timestamp_index is None else timestamp_index % count
        self._value_idx = tuple(i for i in range(count) if i != self._ts_idx)
        self._names = tuple(fields[i] for i in self._value_idx)
        self.repeat = repeat

    @classmethod
    def from_config(cls, config: PluginConfig) -> BinaryDecoder:
        if not isinstance(config, BinaryDecoderConfig):
            raise TypeError(
                f"binary decoder: expected a BinaryDecoderConfig, got {type(config).__name__}"
            )
        return cls(
            config.format,
            config.fields,
            byte_order=config.byte_order,
            timestamp_index=config.timestamp_index,
            repeat=config.repeat,
            options=DecoderOptions.from_config(config),
        )

    @property
    def record_size(self) -> int:
        return self._struct.size

    def decode(
        self, topic: str, payload: bytes, received_at_ns: int, received_mono_ns: int
    ) -> list[SensorReading]:
        opts = self.options
        opts.check_size(payload)
        key = opts.key_from_topic(topic)
        size = self._struct.size
        records: Iterable[tuple[int | float, ...]]
        if self.repeat:
            if not payload or len(payload) % size:
                raise DecodeError(
                    "wrong_length",
                    f"payload is {len(payload)} bytes; expected a non-zero multiple of {size}",
                )
            records = self._struct.iter_unpack(payload)
        else:
            if len(payload) != size:
                raise DecodeError(
                    "wrong_length", f"payload is {len(payload)} bytes; expected {size}"
                )
            records = (self._struct.unpack(payload),)
        readings = []
        for number, record in enumerate(records):
            values = [record[i] for i in self._value_idx]
            for name, value in zip(self._names, values, strict=True):
                if not math.isfinite(value):
                    raise DecodeError("non_finite", f"record {number} field {name!r} is {value!r}")
            ts_ns = received_at_ns
            if self._ts_idx is not None:
                ts_ns = opts.check_time(
                    opts.timestamp_ns(
                        record[self._ts_idx],
                        coerce_strings=False,
                        what=f"record {number} timestamp",
                    ),
                    received_at_ns,
                )
            readings.append(
                SensorReading(
                    key=key,
                    ts_ns=ts_ns,
                    received_mono_ns=received_mono_ns,
                    fields=self._names,
                    values=np.array(values, dtype=np.float64),
                )
            )
        return readings
