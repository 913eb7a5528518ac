"""/metrics and /healthz of a real App: real video, real model, real Mosquitto, real HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from runtime.app import App
from runtime.backends.onnxruntime import OrtBackendConfig
from runtime.config.loader import load_config
from runtime.model import LoadedModel
from tests.brokers import MosquittoBroker, wait_until
from tests.fixture_models import build_colour_bundle, build_sensor_bundle, sensor_feature_names
from tests.integration.test_end_to_end import write_video
from tests.integration.test_sensor_pipeline import (
    WINDOW,
    CollectSink,
    ListSource,
    interleaved,
    make_pipeline,
    signal,
)

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    build_colour_bundle(tmp_path / "models", "colour")
    broken = build_colour_bundle(tmp_path / "models", "broken")
    (broken / "model.onnx").write_bytes((broken / "model.onnx").read_bytes() + b"\x00")
    write_video(tmp_path / "video.mp4", [("blue", 10), ("red", 10)])
    return tmp_path


def pipeline(name: str, uri: str = "video.mp4", model: str = "colour", **source: Any) -> Any:
    return {
        "name": name,
        "source": {"type": "camera", "uri": uri, "pace": "native", "loop": True, **source},
        "model": model,
        "rules": {"red": {"type": "threshold", "labels": ["red"], "raise_score": 0.9}},
    }


@pytest.fixture
def make_app(workdir: Path) -> Iterator[Any]:
    apps: list[App] = []

    def make(pipelines: list[Any], broker: MosquittoBroker | None = None) -> App:
        config: dict[str, Any] = {
            "device": {"id": "gw"},
            "models": {
                "colour": {"bundle": "models/colour/1.0.0"},
                "broken": {"bundle": "models/broken/1.0.0"},
            },
            "pipelines": pipelines,
            "sinks": [{"type": "jsonl", "path": "alerts.jsonl"}],
            "metrics": {"enabled": True, "port": 0},
        }
        if broker is not None:
            config["mqtt"] = {
                "host": broker.host,
                "port": broker.port,
                "reconnect_min_s": 0.1,
                "reconnect_max_s": 0.5,
            }
            outbox = {"path": str(workdir / "outbox.sqlite")}
            config["sinks"].append({"type": "mqtt", "outbox": outbox})
        (workdir / "device.yaml").write_text(yaml.safe_dump(config))
        app = App.from_config(load_config(workdir / "device.yaml", {}))
        apps.append(app)
        return app

    try:
        yield make
    finally:
        for app in apps:
            app.stop()


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int) -> Samples:
    code, text = get(port, "/metrics")
    assert code == 200, text
    return parse(text)


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), -1.0)


def health(port: int) -> tuple[int, dict[str, Any]]:
    code, text = get(port, "/healthz")
    doc: dict[str, Any] = json.loads(text)
    return code, doc


def test_metrics_while_frames_flow_and_the_broker_goes_away(
    make_app: Any, broker: MosquittoBroker
) -> None:
    app = make_app([pipeline("line1")], broker)
    app.start()
    port = app.metrics_port
    assert port is not None and port > 0

    def processed(s: Samples) -> float:
        return sample(s, "edgewatch_frames_processed_total", pipeline="line1")

    wait_until(
        lambda: (
            sample(scrape(port), "edgewatch_mqtt_connected") == 1 and processed(scrape(port)) > 0
        ),
        timeout_s=10,
        what="connected and frames processed",
    )
    first = scrape(port)
    wait_until(lambda: processed(scrape(port)) > processed(first), what="more frames")
    second = scrape(port)
    captured = "edgewatch_frames_captured_total"
    assert sample(second, captured, pipeline="line1") > sample(first, captured, pipeline="line1")
    infer = {"pipeline": "line1", "stage": "infer"}
    assert sample(second, "edgewatch_stage_latency_seconds_count", **infer) > 0
    assert 0 < sample(second, "edgewatch_stage_latency_seconds_sum", **infer) < 60
    assert sample(second, "edgewatch_inferences_total", pipeline="line1") == processed(second)
    backend = {
        "pipeline": "line1",
        "model": "colour",
        "model_version": "1.0.0",
        "backend": "onnxruntime",
        "provider": "CPUExecutionProvider",
    }
    assert sample(second, "edgewatch_backend_info", **backend) == 1
    assert sample(second, "edgewatch_healthy") == 1

    wait_until(
        lambda: (
            sample(scrape(port), "edgewatch_capture_to_puback_seconds_count", pipeline="line1") > 0
        ),
        timeout_s=10,
        what="an alert acknowledged by the broker (red frames raise one)",
    )
    latency = app.status()["pipelines"][0]["latency_ms"]
    assert latency["infer"]["p50"] > 0 and latency["puback"]["p99"] >= latency["puback"]["p50"]

    code, doc = health(port)
    assert (code, doc["status"], doc["mqtt"]) == (200, "ok", {"connected": True})

    broker.stop()
    wait_until(
        lambda: sample(scrape(port), "edgewatch_mqtt_connected") == 0,
        timeout_s=10,
        what="the gauge to see the broker gone",
    )
    code, doc = health(port)
    assert (code, doc["status"], doc["mqtt"]) == (200, "ok", {"connected": False}), doc
    wait_until(
        lambda: sample(scrape(port), "edgewatch_outbox_depth", sink="MqttSink") > 0,
        timeout_s=10,
        what="alerts raised while offline waiting in the outbox",
    )
    offline = scrape(port)
    assert sample(offline, "edgewatch_outbox_bytes", sink="MqttSink") > 0
    assert sample(offline, "edgewatch_outbox_oldest_age_seconds", sink="MqttSink") > 0
    acks = sample(offline, "edgewatch_capture_to_puback_seconds_count", pipeline="line1")
    connects = sample(offline, "edgewatch_mqtt_connects_total")

    broker.start()
    wait_until(
        lambda: sample(scrape(port), "edgewatch_mqtt_connected") == 1,
        timeout_s=10,
        what="reconnected",
    )
    assert sample(scrape(port), "edgewatch_mqtt_connects_total") == connects + 1
    wait_until(
        lambda: (
            sample(scrape(port), "edgewatch_capture_to_puback_seconds_count", pipeline="line1")
            > acks
        ),
        timeout_s=10,
        what="the outbox delivered after reconnecting",
    )

    app.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_healthz_is_503_with_the_reasons_when_pipelines_failed_to_start(make_app: Any) -> None:
    app = make_app(
        [pipeline("good"), pipeline("nocam", uri="absent.mp4"), pipeline("bad", model="broken")]
    )
    app.start()
    port = app.metrics_port
    assert port is not None
    code, doc = health(port)
    assert code == 503 and doc["status"] == "unhealthy"
    assert doc["pipelines"] == {"good": "ok", "nocam": "unhealthy", "bad": "unhealthy"}
    reasons = "\n".join(doc["reasons"])
    assert "pipeline nocam: failed:" in reasons and "absent.mp4" in reasons
    assert "pipeline bad: failed:" in reasons and "sha256" in reasons
    assert "good" not in reasons
    assert doc["mqtt"] == {"connected": None}

    s = scrape(port)
    assert sample(s, "edgewatch_healthy") == 0
    assert sample(s, "edgewatch_pipeline_healthy", pipeline="good") == 1
    assert sample(s, "edgewatch_pipeline_healthy", pipeline="nocam") == 0
    assert not [k for k in s if k[0].startswith("edgewatch_mqtt_")], "no mqtt configured"
    assert get(port, "/nothing")[0] == 404


def test_a_pipeline_whose_source_ended_is_not_healthy(make_app: Any) -> None:
    app = make_app([pipeline("once", loop=False, pace="max")])
    app.start()
    port = app.metrics_port
    assert port is not None
    assert app.wait(timeout_s=15), "the video plays to its end"
    code, doc = health(port)
    assert code == 503
    assert doc["reasons"] == ["pipeline once: not running (source ended)"]
    s = scrape(port)
    assert sample(s, "edgewatch_frames_processed_total", pipeline="once") == 20
    assert sample(s, "edgewatch_stage_latency_seconds_count", pipeline="once", stage="total") == 20


def test_two_apps_in_one_process_serve_their_own_metrics(make_app: Any, workdir: Path) -> None:
    first = make_app([pipeline("one", loop=False, pace="max")])
    second = make_app([pipeline("two", loop=False, pace="max")])
    first.start()
    second.start()
    assert first.wait(timeout_s=15) and second.wait(timeout_s=15)
    assert first.metrics_port != second.metrics_port
    one, two = scrape(first.metrics_port), scrape(second.metrics_port)
    assert sample(one, "edgewatch_frames_processed_total", pipeline="one") == 20
    assert sample(one, "edgewatch_frames_processed_total", pipeline="two") == -1
    assert sample(two, "edgewatch_frames_processed_total", pipeline="two") == 20


def test_sensor_batches_feed_the_stage_histograms(tmp_path: Path) -> None:
    n = len(sensor_feature_names())
    bundle = build_sensor_bundle(tmp_path, mean=np.zeros(n), std=np.ones(n), threshold=0.0)
    model = LoadedModel.load(bundle, OrtBackendConfig(type="onnxruntime"))
    sink = CollectSink()
    pipeline = make_pipeline(model, ListSource([]), sink, raise_above=0.0)
    app = App("gw", None, [sink], [pipeline], [], pipeline.alerts, [model])
    pipeline.process(interleaved({f"k{i}": signal(i, 2 * WINDOW, seed=3) for i in range(3)}))
    s = parse(generate_latest(app.metrics.registry).decode())
    windows = 3 * ((2 * WINDOW - WINDOW) // 8 + 1)
    assert sample(s, "edgewatch_inferences_total", pipeline="pumps") == windows
    assert sample(s, "edgewatch_model_calls_total", pipeline="pumps") == 1
    for stage in ("queue", "preprocess", "infer", "postprocess", "total"):
        labels = {"pipeline": "pumps", "stage": stage}
        assert sample(s, "edgewatch_stage_latency_seconds_count", **labels) == 1, stage
    assert sink.alerts, "threshold 0 raises"
    count = sample(s, "edgewatch_capture_to_alert_seconds_count", pipeline="pumps")
    assert count == len(sink.alerts)
