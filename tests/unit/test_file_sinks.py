"""Console and JSONL sinks: what they write, and errors that name the file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from runtime.errors import SinkError
from runtime.messages import Alert, ModelInfo
from runtime.sinks.base import SinkContext
from runtime.sinks.console import ConsoleSink
from runtime.sinks.jsonl import JsonlSink, JsonlSinkConfig

CONTEXT = SinkContext(device_id="gw", topic_prefix="ew", mqtt=None)


def alert(seq: int) -> Alert:
    return Alert(
        alert_id=f"id-{seq}",
        seq=seq,
        boot_id="boot",
        device_id="gw",
        pipeline="line1",
        rule="fire",
        state="raised",
        severity="critical",
        ts_ns=1_700_000_000_000_000_000,
        model=ModelInfo("m", "1", "0" * 64),
        label="fire",
        score=0.93,
        bbox=None,
        source="cam",
        frame_seq=7,
        captured_at_ns=1_700_000_000_000_000_000,
        captured_mono_ns=0,
        latency_ms={"total": 1.0},
    )


def test_jsonl_appends_one_line_per_alert_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "alerts.jsonl"
    sink = JsonlSink.from_config(JsonlSinkConfig(type="jsonl", path=str(path)), CONTEXT)
    sink.start()
    sink.publish(alert(1))
    sink.stop()
    sink = JsonlSink.from_config(JsonlSinkConfig(type="jsonl", path=str(path)), CONTEXT)
    sink.start()
    sink.publish(alert(2))
    sink.stop()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["seq"] for r in rows] == [1, 2]
    assert rows[0] == alert(1).as_dict()


def test_jsonl_unwritable_path_names_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    sink = JsonlSink(blocker / "alerts.jsonl")
    with pytest.raises(SinkError, match=r"alerts\.jsonl"):
        sink.start()


def test_jsonl_publish_before_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match="before start"):
        JsonlSink(tmp_path / "a.jsonl").publish(alert(1))


def test_console_logs_one_line_per_alert(caplog: pytest.LogCaptureFixture) -> None:
    sink = ConsoleSink.from_config(ConsoleSink.config_type(type="console"), CONTEXT)
    with caplog.at_level(logging.INFO):
        sink.publish(alert(3))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "line1" in lines[0] and "fire" in lines[0] and "critical" in lines[0].lower()
