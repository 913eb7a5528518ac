"""CSV payloads: one or more delimited lines per message, one reading per line.

Plain delimited numbers, no quoting; cells are stripped of surrounding whitespace and blank lines
are skipped. A message is all-or-nothing: one bad line drops the whole message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Self

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
    key_from_value,
    make_reading,
    number_from_text,
    to_float,
)


class CsvDecoderConfig(DecoderConfig):
    type: Literal["csv"]
    columns: list[str] = Field(min_length=1, description="the column names, in order")
    fields: list[str] = Field(min_length=1, description="the columns that become reading values")
    timestamp_column: str | None = Field(None, description="column holding the reading time")
    key_column: str | None = Field(
        None, description="column holding the sensor key (implies key_from: field)"
    )
    delimiter: str = Field(",", min_length=1, max_length=1)
    header: bool = Field(False, description="skip a first line equal to the column names")

    @model_validator(mode="before")
    @classmethod
    def _key_column_implies_field(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("key_column") is not None and "key_from" not in data:
            return {**data, "key_from": "field"}
        return data

    @field_validator("columns")
    @classmethod
    def _check_columns(cls, value: list[str]) -> list[str]:
        for name in value:
            if not KEY_PART_RE.fullmatch(name):
                raise ValueError(f"column name {name!r} must match {KEY_PART_PATTERN}")
        if len(set(value)) != len(value):
            raise ValueError(f"column names must be unique, got {value}")
        return value

    @field_validator("delimiter")
    @classmethod
    def _check_delimiter(cls, value: str) -> str:
        if value in "\r\n":
            raise ValueError("the delimiter can't be a line break")
        return value

    @model_validator(mode="after")
    def _check_references(self) -> Self:
        check_layout(
            self.columns, self.fields, self.timestamp_column, self.key_column, self.delimiter
        )
        if self.key_field is not None or self.timestamp_field is not None:
            raise ValueError(
                "csv: use key_column and timestamp_column, not key_field/timestamp_field"
            )
        if self.key_from == "field" and self.key_column is None:
            raise ValueError("csv: key_from: field needs key_column")
        if self.key_from == "topic" and self.key_column is not None:
            raise ValueError("csv: key_column is set but key_from is topic; drop one of them")
        return self


def check_layout(
    columns: Sequence[str],
    fields: Sequence[str],
    timestamp_column: str | None,
    key_column: str | None,
    delimiter: str,
) -> None:
    """ValueError naming what's wrong when fields or special columns aren't columns."""
    known = ", ".join(columns)
    if not fields:
        raise ValueError("csv: fields must name at least one column")
    for name in fields:
        if name not in columns:
            raise ValueError(f"csv: field {name!r} is not a column; columns: {known}")
    if len(set(fields)) != len(fields):
        raise ValueError(f"csv: fields must be unique, got {list(fields)}")
    for what, column in (("timestamp_column", timestamp_column), ("key_column", key_column)):
        if column is not None and column not in columns:
            raise ValueError(f"csv: {what} {column!r} is not a column; columns: {known}")
    if key_column is not None and key_column in fields:
        raise ValueError(f"csv: key_column {key_column!r} can't also be a numeric field")
    if len(delimiter) != 1 or delimiter in "\r\n":
        raise ValueError(
            f"csv: delimiter must be one character other than a line break, got {delimiter!r}"
        )


@DECODERS.register("csv")
class CsvDecoder(Decoder):
    config_type: ClassVar[type[PluginConfig]] = CsvDecoderConfig

    def __init__(
        self,
        columns: Sequence[str],
        fields: Sequence[str],
        *,
        timestamp_column: str | None = None,
        key_column: str | None = None,
        delimiter: str = ",",
        header: bool = False,
        options: DecoderOptions | None = None,
    ) -> None:
        check_layout(columns, fields, timestamp_column, key_column, delimiter)
        self.options = options or DecoderOptions()
        if (self.options.key_from == "field") != (key_column is not None):
            raise ValueError("csv decoder: key_column is needed exactly when key_from=field")
        self.columns = tuple(columns)
        self._names = tuple(fields)
        self._field_idx = tuple(self.columns.index(name) for name in fields)
        self._ts_idx = None if timestamp_column is None else self.columns.index(timestamp_column)
        self._key_idx = None if key_column is None else self.columns.index(key_column)
        self.delimiter = delimiter
        self.header = header

    @classmethod
    def from_config(cls, config: PluginConfig) -> CsvDecoder:
        if not isinstance(config, CsvDecoderConfig):
            raise TypeError(
                f"csv decoder: expected a CsvDecoderConfig, got {type(config).__name__}"
            )
        return cls(
            config.columns,
            config.fields,
            timestamp_column=config.timestamp_column,
            key_column=config.key_column,
            delimiter=config.delimiter,
            header=config.header,
            options=DecoderOptions.from_config(config),
        )

    def decode(
        self, topic: str, payload: bytes, received_at_ns: int, received_mono_ns: int
    ) -> list[SensorReading]:
        opts = self.options
        opts.check_size(payload)
        topic_key = opts.key_from_topic(topic) if opts.key_from == "topic" else None
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(
                "malformed", f"payload is not UTF-8 (bad byte at {exc.start})"
            ) from None
        rows = [
            (number, [cell.strip() for cell in line.split(self.delimiter)])
            for number, line in enumerate(text.split("\n"), start=1)
            if line.strip()
        ]
        if self.header and rows and tuple(rows[0][1]) == self.columns:
            rows = rows[1:]
        readings = []
        for number, cells in rows:
            if len(cells) != len(self.columns):
                raise DecodeError(
                    "wrong_length",
                    f"line {number}: expected {len(self.columns)} columns, got {len(cells)}",
                )
            values = [
                to_float(
                    number_from_text(cells[i], f"line {number} column {self.columns[i]!r}"),
                    f"line {number} column {self.columns[i]!r}",
                )
                for i in self._field_idx
            ]
            if self._key_idx is None:
                assert topic_key is not None  # key_from=topic when there is no key column
                key = topic_key
            else:
                key = key_from_value(cells[self._key_idx], f"line {number} key column")
            ts_ns = received_at_ns
            if self._ts_idx is not None:
                ts_ns = opts.check_time(
                    opts.timestamp_ns(
                        cells[self._ts_idx],
                        coerce_strings=True,
                        what=f"line {number} timestamp column",
                    ),
                    received_at_ns,
                )
            readings.append(make_reading(key, ts_ns, received_mono_ns, self._names, values))
        return readings
