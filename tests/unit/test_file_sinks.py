"""Console and JSONL sinks: what they write, and errors that name the file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from runtime.errors import SinkError
from runtime.sinks.base import SinkContext
from runtime.sinks.console import ConsoleSink
from runtime.sinks.jsonl import JsonlSink, JsonlSinkConfig
from tests.factories import make_alert

CONTEXT = SinkContext(device_id="gw", topic_prefix="ew", mqtt=None)


def test_jsonl_appends_one_line_per_alert_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "alerts.jsonl"
    sink = JsonlSink.from_config(JsonlSinkConfig(type="jsonl", path=str(path)), CONTEXT)
    sink.start()
    sink.publish(make_alert(seq=1))
    sink.stop()
    sink = JsonlSink.from_config(JsonlSinkConfig(type="jsonl", path=str(path)), CONTEXT)
    sink.start()
    sink.publish(make_alert(seq=2))
    sink.stop()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["seq"] for r in rows] == [1, 2]
    assert rows[0] == make_alert(seq=1).as_dict()


def test_jsonl_unwritable_path_names_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    sink = JsonlSink(blocker / "alerts.jsonl")
    with pytest.raises(SinkError, match=r"alerts\.jsonl"):
        sink.start()


def test_jsonl_publish_before_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match="before start"):
        JsonlSink(tmp_path / "a.jsonl").publish(make_alert(seq=1))


def test_console_logs_one_line_per_alert(caplog: pytest.LogCaptureFixture) -> None:
    sink = ConsoleSink.from_config(ConsoleSink.config_type(type="console"), CONTEXT)
    alert = make_alert(seq=3, pipeline="line1", rule="fire", severity="critical")
    with caplog.at_level(logging.INFO):
        sink.publish(alert)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "line1" in lines[0] and "fire" in lines[0] and "critical" in lines[0].lower()
