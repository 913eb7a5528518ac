"""JSON payloads: fields selected by path (``vib.x``, ``axes[2]``, ``data.temps[0]``), optionally a
batch of readings in one message (``array_field``)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import ClassVar, Literal, Self

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
    excerpt,
    key_from_value,
    make_reading,
    to_float,
)

JsonPath = tuple[str | int, ...]

_NAME = r"[^.\[\]]+"
_PATH = re.compile(rf"(?:{_NAME}|\[\d+\])(?:\.{_NAME}|\[\d+\])*")
_TOKEN = re.compile(rf"({_NAME})|\[(\d+)\]")
_MISSING = object()


def parse_path(path: str) -> JsonPath:
    """``"data.temps[0]"`` → ``("data", "temps", 0)``; a clear ValueError for a bad path."""
    if not _PATH.fullmatch(path):
        raise ValueError(
            f"bad JSON path {path!r}: expected names joined by '.' with optional [index] "
            f"suffixes, e.g. 'vib.x', 'axes[2]', 'data.temps[0]'"
        )
    return tuple(int(m[2]) if m[2] is not None else m[1] for m in _TOKEN.finditer(path))


def find(doc: object, path: JsonPath) -> object:
    """The value at ``path`` in a parsed JSON document, or ``_MISSING``."""
    current = doc
    for part in path:
        if isinstance(part, int):
            if not isinstance(current, list) or part >= len(current):
                return _MISSING
            current = current[part]
        else:
            if not isinstance(current, dict) or part not in current:
                return _MISSING
            current = current[part]
    return current


class JsonDecoderConfig(DecoderConfig):
    type: Literal["json"]
    fields: dict[str, str] = Field(
        min_length=1, description="output field name → JSON path, e.g. {x: vib.x, t0: temps[0]}"
    )
    array_field: str | None = Field(
        None,
        description="path of a list of objects, one reading each; field paths are then "
        "relative to an element (key and timestamp fields: the element, else the message)",
    )
    coerce_strings: bool = Field(
        False, description='accept numbers written as strings ("1.5"); else not_a_number'
    )

    @field_validator("fields")
    @classmethod
    def _check_fields(cls, value: dict[str, str]) -> dict[str, str]:
        for name, path in value.items():
            if not KEY_PART_RE.fullmatch(name):
                raise ValueError(f"field name {name!r} must match {KEY_PART_PATTERN}")
            parse_path(path)
        return value

    @field_validator("array_field", "key_field", "timestamp_field")
    @classmethod
    def _check_path(cls, value: str | None) -> str | None:
        if value is not None:
            parse_path(value)
        return value

    @model_validator(mode="after")
    def _check_key(self) -> Self:
        if self.key_from == "field" and self.key_field is None:
            raise ValueError("key_from: field needs key_field (the JSON path of the key)")
        return self


@DECODERS.register("json")
class JsonDecoder(Decoder):
    """Numbers only: ``true`` is not a number, and ``"1.5"`` is one only with ``coerce_strings``.

    A batched message is all-or-nothing: one bad element drops the whole message.
    """

    config_type: ClassVar[type[PluginConfig]] = JsonDecoderConfig

    def __init__(
        self,
        fields: Mapping[str, str],
        *,
        array_field: str | None = None,
        key_field: str | None = None,
        timestamp_field: str | None = None,
        coerce_strings: bool = False,
        options: DecoderOptions | None = None,
    ) -> None:
        if not fields:
            raise ValueError("json decoder: fields must name at least one field")
        self.options = options or DecoderOptions()
        if self.options.key_from == "field" and key_field is None:
            raise ValueError("json decoder: key_from=field needs key_field")
        self._names = tuple(fields)
        self._paths = tuple((path, parse_path(path)) for path in fields.values())
        self._whats = tuple(f"field {name!r}" for name in fields)  # error-message prefixes
        self._array = None if array_field is None else (array_field, parse_path(array_field))
        self._key = None if key_field is None else (key_field, parse_path(key_field))
        self._ts = (
            None if timestamp_field is None else (timestamp_field, parse_path(timestamp_field))
        )
        self._ts_what = f"timestamp field {timestamp_field!r}"
        self.coerce_strings = coerce_strings

    @classmethod
    def from_config(cls, config: PluginConfig) -> JsonDecoder:
        if not isinstance(config, JsonDecoderConfig):
            raise TypeError(
                f"json decoder: expected a JsonDecoderConfig, got {type(config).__name__}"
            )
        return cls(
            config.fields,
            array_field=config.array_field,
            key_field=config.key_field if config.key_from == "field" else None,
            timestamp_field=config.timestamp_field,
            coerce_strings=config.coerce_strings,
            options=DecoderOptions.from_config(config),
        )

    def decode(
        self, topic: str, payload: bytes, received_at_ns: int, received_mono_ns: int
    ) -> list[SensorReading]:
        opts = self.options
        opts.check_size(payload)
        topic_key = opts.key_from_topic(topic) if opts.key_from == "topic" else None
        doc = parse_json(payload)
        if self._array is None:
            return [self._reading(doc, doc, topic_key, received_at_ns, received_mono_ns)]
        text, path = self._array
        elements = find(doc, path)
        if elements is _MISSING:
            raise DecodeError("missing_field", f"array_field {text!r} not in the message")
        if not isinstance(elements, list):
            raise DecodeError(
                "malformed", f"array_field {text!r}: expected a list, got {excerpt(elements)}"
            )
        return [
            self._reading(element, doc, topic_key, received_at_ns, received_mono_ns)
            for element in elements
        ]

    def _reading(
        self,
        element: object,
        root: object,
        topic_key: str | None,
        received_at_ns: int,
        received_mono_ns: int,
    ) -> SensorReading:
        values = []
        for what, (text, path) in zip(self._whats, self._paths, strict=True):
            value = find(element, path)
            if value is _MISSING:
                raise DecodeError("missing_field", f"{what} (path {text!r}) not in the message")
            values.append(to_float(value, what, coerce_strings=self.coerce_strings))
        if topic_key is not None:
            key = topic_key
        else:
            assert self._key is not None  # the constructor checked key_field for key_from=field
            key = key_from_value(_lookup(element, root, self._key), f"key field {self._key[0]!r}")
        ts_ns = received_at_ns
        if self._ts is not None:
            raw = _lookup(element, root, self._ts)
            ts_ns = self.options.check_time(
                self.options.timestamp_ns(
                    raw, coerce_strings=self.coerce_strings, what=self._ts_what
                ),
                received_at_ns,
            )
        return make_reading(key, ts_ns, received_mono_ns, self._names, values)


def _lookup(element: object, root: object, spec: tuple[str, JsonPath]) -> object:
    """A key or timestamp field: looked up in the batch element, then in the whole message."""
    value = find(element, spec[1])
    if value is _MISSING and root is not element:
        value = find(root, spec[1])
    if value is _MISSING:
        raise DecodeError("missing_field", f"field {spec[0]!r} not in the message")
    return value


def parse_json(payload: bytes) -> object:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("malformed", f"payload is not UTF-8 (bad byte at {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DecodeError(
            "malformed", f"payload is not JSON: {exc.msg} at char {exc.pos}"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise DecodeError("malformed", f"payload is not usable JSON: {excerpt(str(exc))}") from None
