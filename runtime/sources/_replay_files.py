"""The files the ``replay`` source reads: tabular rows (.csv with a header line, or .jsonl objects)
and recordings made by ``edgewatch record`` (JSONL, one MQTT message a line).

A file yields, in file order, an :class:`Item` per good row or message (its readings stamped on
the file's own clock) and a :class:`Drop` per bad one; pacing and restamping are the source's job.
"""

from __future__ import annotations

import abc
import base64
import binascii
import csv
import io
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from runtime.errors import SourceError
from runtime.messages import SensorReading
from runtime.processing.decoders.base import (
    DecodeError,
    Decoder,
    DecoderOptions,
    DropReason,
    excerpt,
    iso8601_ns,
    key_from_value,
    make_reading,
    to_float,
)

TABULAR_SUFFIXES = (".csv", ".jsonl", ".ndjson")
_NUMBER = re.compile(r"\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")
_EPOCH_S = DecoderOptions(timestamp_format="epoch_s")


@dataclass(frozen=True, slots=True)
class Item:
    """One good row or message: its time on the file's clock and its readings (whose
    ``received_mono_ns`` is set when they are delivered)."""

    line: int
    ts_ns: int
    readings: list[SensorReading]


@dataclass(frozen=True, slots=True)
class Drop:
    line: int
    reason: DropReason
    detail: str


class ReplayFile(abc.ABC):
    """An open replay file. ``open`` raises SourceError naming the path; ``items`` reads on."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: io.TextIOWrapper | None = None

    def open(self) -> None:
        self.close()
        try:
            self._file = open(self.path, encoding="utf-8", newline="")  # noqa: SIM115 - closed by close()
            self._opened(self._file)
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            self.close()
            detail = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise SourceError(f"replay file {self.path}: can't read it: {detail}") from e

    @abc.abstractmethod
    def _opened(self, file: io.TextIOWrapper) -> None:
        """Read what precedes the data (a header); SourceError if it doesn't fit."""

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def items(self) -> Iterator[Item | Drop]:
        if self._file is None:
            raise RuntimeError(f"replay file {self.path} is not open")
        try:
            yield from self._items(self._file)
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise SourceError(f"replay file {self.path}: read failed: {e}") from e

    @abc.abstractmethod
    def _items(self, file: io.TextIOWrapper) -> Iterator[Item | Drop]: ...


@dataclass(frozen=True, slots=True)
class TabularLayout:
    fields: tuple[str, ...]
    key: str
    key_column: str | None
    timestamp_column: str | None
    period_ns: int
    """Spacing of rows without a timestamp column: row ``i`` is at ``i * period_ns``."""

    def columns(self) -> list[str]:
        extra = (self.key_column, self.timestamp_column)
        return [*self.fields, *(c for c in extra if c is not None)]


class TabularFile(ReplayFile):
    """Rows of numbers: ``.csv`` (header line, then rows) or ``.jsonl`` (one object a line)."""

    def __init__(self, path: str, layout: TabularLayout) -> None:
        super().__init__(path)
        self.layout = layout
        self._header: list[str] = []
        self._csv = not path.lower().endswith((".jsonl", ".ndjson"))

    def _opened(self, file: io.TextIOWrapper) -> None:
        if not self._csv:
            return
        reader = csv.reader(file)
        header = next(reader, None)
        if header is None:
            raise SourceError(f"replay file {self.path}: empty; expected a header line")
        self._header = [name.strip() for name in header]
        missing = [c for c in self.layout.columns() if c not in self._header]
        if missing:
            raise SourceError(
                f"replay file {self.path}: no column {', '.join(map(repr, missing))} in the "
                f"header (columns: {', '.join(self._header)})"
            )

    def _items(self, file: io.TextIOWrapper) -> Iterator[Item | Drop]:
        for index, (line, row) in enumerate(self._rows(file)):
            try:
                if isinstance(row, DecodeError):
                    raise row
                yield Item(line, *self._reading(row, index))
            except DecodeError as e:
                yield Drop(line, e.reason, e.detail)

    def _rows(
        self, file: io.TextIOWrapper
    ) -> Iterator[tuple[int, Mapping[str, object] | DecodeError]]:
        if self._csv:
            reader = csv.reader(file)
            width = len(self._header)
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != width:
                    error = DecodeError(
                        "malformed", f"{len(row)} cells; the header has {width} columns"
                    )
                    yield reader.line_num + 1, error
                else:
                    yield reader.line_num + 1, dict(zip(self._header, row, strict=True))
            return
        for line, text in enumerate(file, start=1):
            if text.strip():
                yield line, _json_object(text)

    def _reading(self, row: Mapping[str, object], index: int) -> tuple[int, list[SensorReading]]:
        layout = self.layout
        values = [
            to_float(_cell(row, name), f"field {name!r}", coerce_strings=True)
            for name in layout.fields
        ]
        key = layout.key
        if layout.key_column is not None:
            key = key_from_value(_cell(row, layout.key_column), f"key column {layout.key_column!r}")
        if layout.timestamp_column is None:
            ts_ns = index * layout.period_ns
        else:
            ts_ns = time_ns(_cell(row, layout.timestamp_column), layout.timestamp_column)
        return ts_ns, [make_reading(key, ts_ns, 0, layout.fields, values)]


def _json_object(text: str) -> Mapping[str, object] | DecodeError:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        return DecodeError("malformed", f"not JSON: {excerpt(str(e))}")
    if not isinstance(doc, dict):
        return DecodeError("malformed", f"expected a JSON object, got {excerpt(doc)}")
    return doc


def _cell(row: Mapping[str, object], name: str) -> object:
    value = row.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DecodeError("missing_field", f"no value for {name!r}")
    return value


def time_ns(value: object, column: str) -> int:
    """Seconds since the epoch (a number, or a number written as text) or an ISO-8601 string."""
    what = f"timestamp column {column!r}"
    if isinstance(value, str) and not _NUMBER.fullmatch(value):
        return iso8601_ns(value, what)
    return _EPOCH_S.timestamp_ns(value, coerce_strings=True, what=what)


class RecordingFile(ReplayFile):
    """Messages recorded by ``edgewatch record``, each decoded as if it had just arrived."""

    def __init__(self, path: str, decoder: Decoder) -> None:
        super().__init__(path)
        self.decoder = decoder

    def _opened(self, file: io.TextIOWrapper) -> None:
        """A recording has no header."""

    def _items(self, file: io.TextIOWrapper) -> Iterator[Item | Drop]:
        for line, text in enumerate(file, start=1):
            if not text.strip():
                continue
            try:
                received_at_ns, topic, payload = parse_record(text)
                readings = self.decoder.decode(topic, payload, received_at_ns, 0)
            except DecodeError as e:
                yield Drop(line, e.reason, e.detail)
                continue
            yield Item(line, received_at_ns, readings)


def parse_record(text: str) -> tuple[int, str, bytes]:
    """One recorded line → (received_at_ns, topic, payload); DecodeError("malformed") if bad."""
    doc = _json_object(text)
    if isinstance(doc, DecodeError):
        raise doc
    topic = doc.get("topic")
    if not isinstance(topic, str):
        raise DecodeError("malformed", f"recording line: no string 'topic' in {excerpt(doc)}")
    try:
        received_at_ns = _EPOCH_S.timestamp_ns(
            doc.get("received_at"), coerce_strings=False, what="received_at"
        )
    except DecodeError as e:
        raise DecodeError("malformed", f"recording line: {e.detail}") from None
    return received_at_ns, topic, _payload(doc)


def _payload(doc: Mapping[str, object]) -> bytes:
    text, b64 = doc.get("payload"), doc.get("payload_b64")
    if isinstance(text, str) and b64 is None:
        return text.encode("utf-8")
    if isinstance(b64, str) and text is None:
        try:
            return base64.b64decode(b64, validate=True)
        except binascii.Error as e:
            raise DecodeError("malformed", f"recording line: bad payload_b64: {e}") from None
    raise DecodeError(
        "malformed", "recording line: expected a string 'payload' or 'payload_b64' (one of them)"
    )


def check_tabular_path(path: str, fields: Sequence[str] | None) -> None:
    """ValueError when a tabular replay names no fields or a file of an unknown kind."""
    if not fields:
        raise ValueError("replay: give `fields` (numeric columns) or a `decoder` for a recording")
    if not path.lower().endswith(TABULAR_SUFFIXES):
        raise ValueError(
            f"replay: {path!r} is not a table ({', '.join(TABULAR_SUFFIXES)}); a file made by "
            "`edgewatch record` needs a `decoder`"
        )
