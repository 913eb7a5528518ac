"""Metrics: the status collector, the health verdict, latency histograms and their summary."""

from __future__ import annotations

import re
import socket
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

import runtime
from runtime.app import App
from runtime.errors import ConfigError
from runtime.healthcheck import Health, assess
from runtime.messages import Alert, StageTimes
from runtime.metrics import HISTOGRAMS, SPECS, Metrics, bucket_quantile, collect_status
from runtime.metrics_http import MetricsServer
from runtime.pipeline import AlertFactory
from runtime.sinks.base import Sink, SinkContext
from tests.factories import make_alert

REPO = Path(__file__).resolve().parents[2]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


class Fixed(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics


def scrape_status(status: Mapping[str, object], health: Health | None = None) -> Samples:
    registry = CollectorRegistry()
    registry.register(Fixed(collect_status(status, health or assess(status, lambda _: True))))
    return parse(generate_latest(registry).decode())


FRAME_PIPELINE: dict[str, Any] = {
    "name": "door",
    "source": {
        "name": "cam0",
        "kind": "camera",
        "state": "running",
        "frames_captured": 120,
        "frames_dropped": 7,
        "reconnects": 2,
        "last_error": None,
    },
    "model": {"name": "colour", "version": "1.0.0", "sha256": "ab", "backend": "onnxruntime"},
    "providers": {"requested": ["CUDAExecutionProvider"], "active": ["CPUExecutionProvider"]},
    "backend": {"runtime": "onnxruntime 1.20", "fallback": "CUDA not available"},
    "state": "running",
    "frames_processed": 100,
    "frames_dropped": 10,
    "frame_errors": 3,
    "alerts": 4,
    "errors_by_stage": {"inference": 2, "preprocess": 1, "sink:MqttSink": 5},
    "sink_errors": 5,
    "last_error": "sink:MqttSink: offline",
    "restarts": 1,
    "health": {
        "state": "running",
        "stuck": {"inference": 2},
        "restarts": 1,
        "last_progress_age_s": 0.25,
        "busy_s": {},
        "last_stuck": "inference stuck for 31.2 s (timeout 30 s): run cancelled, restarting",
    },
}

SENSOR_PIPELINE: dict[str, Any] = {
    "name": "pumps",
    "kind": "sensor",
    "source": {
        "type": "mqtt",
        "state": "reconnecting",
        "received": 500,
        "readings": 480,
        "dropped": {"decode": 15, "queue_full": 5},
        "last_error": None,
    },
    "model": {"name": "pump", "version": "2.0.0", "sha256": "cd", "backend": "litert"},
    "providers": {"requested": ["XNNPACK"], "active": ["XNNPACK", "CPU"]},
    "backend": {"runtime": "litert"},
    "state": "running",
    "windower": {"keys": 3, "dropped": {"late": 6, "non_finite": 0}, "overflow": {}},
    "readings": 480,
    "windows": 40,
    "windows_scored": 38,
    "windows_skipped": {"partial": 2},
    "model_calls": 9,
    "gaps": 1,
    "alerts": 2,
    "errors_by_stage": {},
    "sink_errors": 0,
    "last_error": None,
    "restarts": 0,
}

STATUS: dict[str, Any] = {
    "state": "online",
    "device_id": "gw01",
    "boot_id": "b00t",
    "version": "0.1.0",
    "started_at_ns": 1_767_225_600_000_000_000,
    "pipelines": [
        FRAME_PIPELINE,
        SENSOR_PIPELINE,
        {"name": "yard", "state": "failed", "last_error": "camera yard: absent.mp4"},
    ],
    "sinks": [
        {
            "type": "MqttSink",
            "published": 6,
            "acked": 5,
            "unacked": 1,
            "outbox": {
                "depth": 3,
                "bytes": 2048,
                "oldest_age_s": 12.5,
                "dropped": {"full": 4, "expired": 1},
                "replayed": 8,
                "inflight": 1,
            },
        },
        {"type": "JsonlSink"},
        {"type": "MqttSink", "published": 1, "acked": 1, "unacked": 0},
    ],
    "mqtt": {
        "connected": False,
        "connects": 3,
        "disconnects": 2,
        "failed_connects": 7,
        "published": 30,
        "acked": 28,
        "rejected": 0,
        "pending": 2,
        "last_error": "connection refused",
    },
}


def test_frame_pipeline_counters_come_from_the_status() -> None:
    s = scrape_status(STATUS)
    assert value(s, "edgewatch_frames_captured_total", pipeline="door") == 120
    assert value(s, "edgewatch_frames_processed_total", pipeline="door") == 100
    assert value(s, "edgewatch_inferences_total", pipeline="door") == 100
    dropped = {
        reason: value(s, "edgewatch_frames_dropped_total", pipeline="door", reason=reason)
        for reason in ("source_overrun", "pipeline_overrun", "error")
    }
    assert dropped == {"source_overrun": 7, "pipeline_overrun": 10, "error": 3}
    assert value(s, "edgewatch_errors_total", pipeline="door", stage="sink:MqttSink") == 5
    assert value(s, "edgewatch_alerts_total", pipeline="door") == 4
    assert value(s, "edgewatch_source_reconnects_total", pipeline="door") == 2
    assert value(s, "edgewatch_source_up", pipeline="door") == 1
    assert value(s, "edgewatch_pipeline_restarts_total", pipeline="door") == 1
    assert value(s, "edgewatch_pipeline_stuck_total", pipeline="door", stage="inference") == 2
    assert value(s, "edgewatch_pipeline_last_progress_age_seconds", pipeline="door") == 0.25


def test_active_provider_and_fallback_are_exported() -> None:
    s = scrape_status(STATUS)
    door = {
        "pipeline": "door",
        "model": "colour",
        "model_version": "1.0.0",
        "backend": "onnxruntime",
        "provider": "CPUExecutionProvider",
    }
    assert value(s, "edgewatch_backend_info", **door) == 1
    assert value(s, "edgewatch_backend_fallback", pipeline="door") == 1
    pumps = {
        "pipeline": "pumps",
        "model": "pump",
        "model_version": "2.0.0",
        "backend": "litert",
        "provider": "XNNPACK,CPU",
    }
    assert value(s, "edgewatch_backend_info", **pumps) == 1
    assert ("edgewatch_backend_fallback", frozenset({("pipeline", "pumps")})) not in s


def test_sensor_pipeline_counters_and_drop_reasons() -> None:
    s = scrape_status(STATUS)
    assert value(s, "edgewatch_sensor_messages_total", pipeline="pumps") == 500
    assert value(s, "edgewatch_sensor_messages_dropped_total", pipeline="pumps", reason="decode")
    assert value(s, "edgewatch_sensor_readings_total", pipeline="pumps") == 480
    assert value(s, "edgewatch_sensor_readings_dropped_total", pipeline="pumps", reason="late") == 6
    assert value(s, "edgewatch_windows_skipped_total", pipeline="pumps", reason="partial") == 2
    assert value(s, "edgewatch_inferences_total", pipeline="pumps") == 38
    assert value(s, "edgewatch_model_calls_total", pipeline="pumps") == 9
    assert value(s, "edgewatch_source_up", pipeline="pumps") == 0
    assert not [k for k in s if k[0] == "edgewatch_frames_processed_total" and "pumps" in str(k)]


def test_outbox_mqtt_and_device_gauges() -> None:
    s = scrape_status(STATUS)
    assert value(s, "edgewatch_outbox_depth", sink="MqttSink") == 3
    assert value(s, "edgewatch_outbox_bytes", sink="MqttSink") == 2048
    assert value(s, "edgewatch_outbox_oldest_age_seconds", sink="MqttSink") == 12.5
    assert value(s, "edgewatch_outbox_inflight", sink="MqttSink") == 1
    assert value(s, "edgewatch_outbox_replayed_total", sink="MqttSink") == 8
    assert value(s, "edgewatch_alerts_dropped_total", sink="MqttSink", reason="full") == 4
    assert value(s, "edgewatch_alerts_dropped_total", sink="MqttSink", reason="expired") == 1
    assert value(s, "edgewatch_sink_unacked", sink="MqttSink") == 1
    assert value(s, "edgewatch_sink_published_total", sink="MqttSink-2") == 1, "two of a type"
    assert ("edgewatch_outbox_depth", frozenset({("sink", "MqttSink-2")})) not in s
    assert value(s, "edgewatch_mqtt_connected") == 0
    assert value(s, "edgewatch_mqtt_connects_total") == 3
    assert value(s, "edgewatch_mqtt_failed_connects_total") == 7
    assert value(s, "edgewatch_mqtt_pending") == 2
    assert value(s, "edgewatch_start_time_seconds") == 1_767_225_600
    assert value(s, "edgewatch_build_info", device_id="gw01", version="0.1.0", boot_id="b00t")


def test_an_empty_outbox_has_age_zero_and_a_status_without_mqtt_has_no_mqtt_metrics() -> None:
    outbox: dict[str, Any] = {
        "depth": 0,
        "bytes": 0,
        "oldest_age_s": None,
        "dropped": {},
        "replayed": 0,
    }
    status = {**STATUS, "mqtt": None, "sinks": [{"type": "MqttSink", "outbox": outbox}]}
    s = scrape_status(status)
    assert value(s, "edgewatch_outbox_oldest_age_seconds", sink="MqttSink") == 0
    assert not [k for k in s if k[0].startswith("edgewatch_mqtt_")]


def test_failed_pipelines_are_unhealthy_and_export_no_counters() -> None:
    s = scrape_status(STATUS)
    assert value(s, "edgewatch_pipeline_healthy", pipeline="yard") == 0
    assert value(s, "edgewatch_pipeline_healthy", pipeline="door") == 1
    assert value(s, "edgewatch_healthy") == 0
    assert not [k for k in s if ("pipeline", "yard") in k[1] and "healthy" not in k[0]]


def running(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "state": "running", "source": {"state": "running"}, **extra}


@pytest.mark.parametrize(
    ("pipelines", "dead", "reasons"),
    [
        ([running("a"), running("b")], set(), []),
        (
            [running("a"), {"name": "b", "state": "failed", "last_error": "bad model"}],
            set(),
            ["pipeline b: failed: bad model"],
        ),
        (
            [running("a", source={"state": "ended"})],
            {"a"},
            ["pipeline a: not running (source ended)"],
        ),
        (
            [running("a", health={"state": "stuck", "last_stuck": "inference stuck for 31 s"})],
            set(),
            ["pipeline a: stuck: inference stuck for 31 s"],
        ),
        (
            [running("a", health={"state": "restarting", "last_stuck": None})],
            set(),
            ["pipeline a: restarting"],
        ),
        ([running("a", health={"state": "running", "stuck": {"inference": 3}})], set(), []),
        ([], set(), ["no pipeline configured"]),
    ],
)
def test_health_verdict(
    pipelines: list[dict[str, Any]], dead: set[str], reasons: list[str]
) -> None:
    health = assess({"pipelines": pipelines, "mqtt": None}, lambda name: name not in dead)
    assert list(health.reasons) == reasons
    assert health.healthy == (not reasons)
    assert health.as_dict()["status"] == ("ok" if not reasons else "unhealthy")


def test_mqtt_offline_alone_is_healthy_but_reported() -> None:
    health = assess({"pipelines": [running("a")], "mqtt": {"connected": False}}, lambda _: True)
    assert health.healthy
    assert health.as_dict()["mqtt"] == {"connected": False}


@pytest.mark.parametrize(
    ("buckets", "q", "expected"),
    [
        ([(1.0, 0), (2.0, 0), (float("inf"), 0)], 0.5, None),
        ([(1.0, 10), (2.0, 10), (float("inf"), 10)], 0.5, 0.5),
        ([(1.0, 0), (2.0, 10), (float("inf"), 10)], 0.5, 1.5),
        ([(1.0, 50), (2.0, 100), (float("inf"), 100)], 0.99, 1.98),
        ([(1.0, 0), (2.0, 0), (float("inf"), 4)], 0.5, 2.0),
        ([], 0.5, None),
    ],
)
def test_bucket_quantile_interpolates_like_histogram_quantile(
    buckets: list[tuple[float, float]], q: float, expected: float | None
) -> None:
    got = bucket_quantile(buckets, q)
    assert got == (None if expected is None else pytest.approx(expected))


def times_ms(queue: float, prep: float, infer: float, post: float) -> StageTimes:
    marks = [0.0, queue, prep, infer, post]
    total = 0.0
    ns = []
    for m in marks:
        total += m
        ns.append(int(total * 1e6))
    return StageTimes(*ns)


def test_stage_histograms_bucket_each_stage_and_the_summary_reads_them() -> None:
    metrics = Metrics(lambda: {"pipelines": []}, lambda _: True)
    observer = metrics.pipeline("door")
    alert = make_alert(captured_mono_ns=0)
    for _ in range(10):
        observer.observe(times_ms(0.05, 1.5, 3.0, 0.3), [], int(6e6))
    observer.observe(times_ms(0.05, 1.5, 40.0, 0.3), [alert], int(45e6))
    s = parse(generate_latest(metrics.registry).decode())

    def bucket(stage: str, le: str) -> float:
        return value(
            s, "edgewatch_stage_latency_seconds_bucket", pipeline="door", stage=stage, le=le
        )

    assert value(s, "edgewatch_stage_latency_seconds_count", pipeline="door", stage="infer") == 11
    assert (bucket("infer", "0.002"), bucket("infer", "0.005"), bucket("infer", "0.05")) == (
        0,
        10,
        11,
    )
    assert bucket("queue", "0.0001") == 11
    assert (bucket("preprocess", "0.001"), bucket("preprocess", "0.002")) == (0, 11)
    assert value(s, "edgewatch_stage_latency_seconds_sum", pipeline="door", stage="total") == (
        pytest.approx(10 * 0.006 + 0.045)
    )
    assert value(s, "edgewatch_capture_to_alert_seconds_count", pipeline="door") == 1
    assert value(s, "edgewatch_capture_to_puback_seconds_count", pipeline="door") == 0

    summary = metrics.latency_summary()["door"]
    assert set(summary) == {"queue", "preprocess", "infer", "postprocess", "total", "alert"}
    assert 2.0 <= (summary["infer"]["p50"] or 0) <= 5.0
    assert 20.0 <= (summary["infer"]["p99"] or 0) <= 50.0


class AckingSink(Sink):
    """Stands in for a sink that reports capture->PUBACK (the MQTT sink)."""

    config_type = None  # type: ignore[assignment]

    def __init__(self) -> None:
        self.ack_observer: Any = None

    @classmethod
    def from_config(cls, config: object, context: SinkContext) -> AckingSink:
        return cls()

    def publish(self, alert: Alert) -> None:
        assert self.ack_observer is not None
        self.ack_observer(alert.pipeline, 0.25)


class PlainSink(AckingSink):
    def __init__(self) -> None:
        """No ``ack_observer`` at all."""

    def publish(self, alert: Alert) -> None:
        """Nothing to report."""


def test_apps_have_their_own_registries_and_wire_ack_observers() -> None:
    sinks = [AckingSink(), AckingSink()]
    first = App("gw1", None, [sinks[0]], [], [], AlertFactory("gw1"), [])
    second = App("gw2", None, [sinks[1], PlainSink()], [], [], AlertFactory("gw2"), [])
    assert first.metrics.registry is not second.metrics.registry
    sinks[0].publish(make_alert(pipeline="door"))
    sinks[0].publish(make_alert(pipeline="door"))
    s1 = parse(generate_latest(first.metrics.registry).decode())
    s2 = parse(generate_latest(second.metrics.registry).decode())
    assert value(s1, "edgewatch_capture_to_puback_seconds_count", pipeline="door") == 2
    assert value(s1, "edgewatch_capture_to_puback_seconds_bucket", pipeline="door", le="0.2") == 0
    assert value(s1, "edgewatch_capture_to_puback_seconds_bucket", pipeline="door", le="0.5") == 2
    assert (
        "edgewatch_capture_to_puback_seconds_count",
        frozenset({("pipeline", "door")}),
    ) not in s2
    assert not hasattr(PlainSink(), "ack_observer")
    build = {"device_id": "gw2", "version": runtime.__version__, "boot_id": second.alerts.boot_id}
    assert value(s2, "edgewatch_build_info", **build) == 1


def test_the_readme_documents_every_metric() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Observability") :]
    section = section[: section.index("\n## ", 1)]
    documented = set(re.findall(r"`(edgewatch_[a-z_]+)`", section))
    exported = {
        name + ("_total" if spec.kind == "counter" else "_info" if spec.kind == "info" else "")
        for name, spec in SPECS.items()
    } | set(HISTOGRAMS)
    assert exported - documented == set(), "add them to README.md § Observability"
    assert documented - exported == set(), "README.md names metrics that don't exist"


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_a_failing_scrape_is_a_500_and_the_server_goes_on() -> None:
    calls: list[int] = []

    def status() -> Mapping[str, object]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("status exploded")
        return {"pipelines": [running("a")], "mqtt": None}

    server = MetricsServer(Metrics(status, lambda _: True), port=0)
    server.start()
    try:
        code, body = http_get(server.port, "/metrics")
        assert (code, body) == (500, "RuntimeError: status exploded\n")
        code, body = http_get(server.port, "/metrics")
        assert code == 200 and 'edgewatch_pipeline_healthy{pipeline="a"} 1.0' in body
        assert http_get(server.port, "/healthz")[0] == 200
    finally:
        server.stop()


def test_a_port_in_use_is_a_config_error_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"metrics: cannot listen on 127.0.0.1:{port}"):
            MetricsServer(Metrics(dict, lambda _: True), port=port)
