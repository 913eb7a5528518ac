"""Fault injection on real components, supervised by the App's watchdog: a model run that hangs
(real onnxruntime, cancelled), a network camera that goes away and comes back, a camera whose
stream hangs with the connection still up, and sensors that go silent on a real Mosquitto."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from runtime.app import App
from runtime.config.loader import load_config
from tests.brokers import MosquittoBroker, SubscriberFactory, wait_until
from tests.fixture_models import build_colour_bundle, build_sensor_bundle, sensor_feature_names
from tests.integration.mjpeg_camera import MjpegCamera
from tests.integration.test_end_to_end import write_video
from tests.slow_models import build_slow_colour_bundle

pytestmark = pytest.mark.integration

RED_RULE = {"red": {"type": "threshold", "labels": ["red"], "raise_score": 0.9}}


def start_app(tmp_path: Path, config: dict[str, Any]) -> App:
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump({"device": {"id": "gw"}, **config}))
    app = App.from_config(load_config(path, {}))
    assert app.failed == []
    app.start()
    return app


def pipeline_status(app: App, name: str) -> dict[str, Any]:
    pipelines: list[dict[str, Any]] = app.status()["pipelines"]  # type: ignore[assignment]
    return next(p for p in pipelines if p["name"] == name)


def health(app: App, name: str) -> dict[str, Any]:
    return pipeline_status(app, name)["health"]  # type: ignore[no-any-return]


def processed(app: App, name: str) -> int:
    return int(pipeline_status(app, name)["frames_processed"])


def alerts(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def messages(caplog: pytest.LogCaptureFixture, logger: str, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == level]


def threads_named(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


# -- a model run that hangs ---------------------------------------------------------------------


def test_a_hung_inference_is_cancelled_and_restarted_while_the_other_pipeline_keeps_alerting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Both pipelines share one onnxruntime session of a model that hangs on green frames. The
    watchdog cancels exactly the hung run (RunOptions.terminate, by thread), the pipeline
    restarts with backoff, and the other pipeline never notices."""
    build_slow_colour_bundle(tmp_path / "models")
    write_video(tmp_path / "green.mp4", [("green", 10)])
    write_video(tmp_path / "traffic.mp4", [("blue", 5), ("red", 5)])
    camera = {"type": "camera", "loop": True, "fps": 10}
    caplog.set_level(logging.INFO)
    app = start_app(
        tmp_path,
        {
            "models": {"slow": {"bundle": "models/slow-colour/1.0.0"}},
            "pipelines": [
                {
                    "name": "hang",
                    "source": {**camera, "uri": "green.mp4"},
                    "model": "slow",
                    "rules": RED_RULE,
                },
                {
                    "name": "steady",
                    "source": {**camera, "uri": "traffic.mp4"},
                    "model": "slow",
                    "rules": RED_RULE,
                },
            ],
            "sinks": [{"type": "jsonl", "path": "alerts.jsonl"}],
            "watchdog": {
                "check_interval_s": 0.1,
                "inference_timeout_s": 1.0,
                "cancel_grace_s": 3.0,
                "restart_initial_s": 0.3,
                "restart_max_s": 0.6,
            },
        },
    )
    try:
        wait_until(lambda: health(app, "hang")["restarts"] >= 1, timeout_s=10, what="restart")
        steady_then = processed(app, "steady")
        alerts_then = len(alerts(tmp_path / "alerts.jsonl"))
        wait_until(
            lambda: health(app, "hang")["stuck"].get("inference", 0) >= 2,
            timeout_s=10,
            what="stuck again on the next green frame after the restart",
        )
        hang, steady = pipeline_status(app, "hang"), pipeline_status(app, "steady")
        hang_threads = threads_named("pipeline-hang")
    finally:
        app.stop()
    assert steady["frames_processed"] >= steady_then + 10, "steady kept inferring meanwhile"
    assert len(alerts(tmp_path / "alerts.jsonl")) > alerts_then, "and kept alerting"
    assert steady["health"]["stuck"] == {} and steady["health"]["restarts"] == 0
    assert steady["health"]["state"] == "running"
    assert steady["errors_by_stage"] == {}, "its own runs on the shared session were not hit"

    assert hang["frames_processed"] == 0
    assert hang["errors_by_stage"]["inference"] >= 1
    assert hang["last_error"] == "inference: onnxruntime run cancelled"
    assert hang["restarts"] == hang["health"]["restarts"] >= 1
    assert len(hang_threads) == 1, "terminate ended the run: no thread was abandoned"

    errors = messages(caplog, "runtime.health", logging.ERROR)
    stuck = [m for m in errors if m.startswith("pipeline hang: inference stuck for 1.")]
    assert stuck and all(
        m.endswith("(timeout 1 s): run cancelled, restarting the pipeline") for m in stuck
    )
    assert not any("abandoned" in m for m in errors)
    # the cancelled run returned at once (uncancelled, it would take about a minute)
    reported = next(r for r in caplog.records if r.getMessage() in stuck)
    cancelled = next(
        r
        for r in caplog.records
        if r.name == "runtime.pipeline" and r.getMessage().endswith("onnxruntime run cancelled")
    )
    assert cancelled.getMessage().startswith("pipeline hang: inference of frame ")
    assert 0 <= cancelled.created - reported.created < 0.5


# -- a camera that goes away and comes back -------------------------------------------------------


@pytest.fixture
def network_camera() -> Iterator[MjpegCamera]:
    camera = MjpegCamera(colour="blue").start()
    yield camera
    camera.stop()


def camera_app(tmp_path: Path, url: str, watchdog: dict[str, Any], **source: Any) -> App:
    build_colour_bundle(tmp_path / "models")
    return start_app(
        tmp_path,
        {
            "models": {"colour": {"bundle": "models/colour/1.0.0"}},
            "pipelines": [
                {
                    "name": "door",
                    "source": {
                        "type": "camera",
                        "uri": url,
                        "reconnect_initial_s": 0.2,
                        "reconnect_max_s": 0.5,
                        **source,
                    },
                    "model": "colour",
                    "rules": RED_RULE,
                }
            ],
            "sinks": [{"type": "jsonl", "path": "alerts.jsonl"}],
            "watchdog": {"check_interval_s": 0.1, **watchdog},
        },
    )


def test_a_network_camera_that_disappears_and_returns(
    tmp_path: Path, network_camera: MjpegCamera, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    app = camera_app(
        tmp_path,
        network_camera.url,
        {"capture_timeout_s": 3.0},
        open_timeout_s=2,
        read_timeout_s=2,
    )
    alerts_file = tmp_path / "alerts.jsonl"
    try:
        wait_until(lambda: processed(app, "door") >= 5, timeout_s=10, what="frames before")
        assert alerts(alerts_file) == [], "blue raises nothing"

        network_camera.stop()  # the camera drops off the network
        wait_until(
            lambda: pipeline_status(app, "door")["source"]["state"] == "reconnecting",
            timeout_s=10,
            what="outage",
        )
        during = processed(app, "door")
        wait_until(
            lambda: (health(app, "door")["last_progress_age_s"] or 0) > 1.5,
            timeout_s=10,
            what="an outage of 1.5 s without frames",
        )
        outage = pipeline_status(app, "door")
        assert outage["frames_processed"] == during
        assert outage["source"]["last_error"]
        assert outage["health"]["state"] == "running", "a camera outage is not a stuck pipeline"

        network_camera.colour = "red"
        network_camera.start()  # back, on the same address
        wait_until(lambda: len(alerts(alerts_file)) == 1, timeout_s=10, what="an alert after")
        after = pipeline_status(app, "door")
    finally:
        app.stop()
    (alert,) = alerts(alerts_file)
    assert (alert["state"], alert["label"]) == ("raised", "red")
    assert after["frames_processed"] > during
    assert after["source"]["state"] == "running"
    assert after["source"]["reconnects"] >= 1
    assert after["health"] == after["health"] | {"state": "running", "stuck": {}, "restarts": 0}
    assert after["restarts"] == 0 and after["errors_by_stage"] == {}
    warnings = messages(caplog, "runtime.sources.camera", logging.WARNING)
    assert any(
        m.startswith(f"camera {network_camera.url} (") and "unavailable" in m for m in warnings
    )
    infos = messages(caplog, "runtime.sources.camera", logging.INFO)
    assert any(m.startswith(f"camera {network_camera.url} back after") for m in infos)
    assert messages(caplog, "runtime.health", logging.ERROR) == []


def test_a_camera_stream_that_hangs_is_reconnected_by_the_watchdog(
    tmp_path: Path, network_camera: MjpegCamera, caplog: pytest.LogCaptureFixture
) -> None:
    """The TCP connection stays up but no byte arrives, and the stream's own read timeout
    (30 s) is far away: the watchdog's capture timeout (1 s) gives up the blocked read and the
    camera reconnects on a new capture thread."""
    caplog.set_level(logging.INFO)
    network_camera.colour = "red"
    app = camera_app(tmp_path, network_camera.url, {"capture_timeout_s": 1.0}, read_timeout_s=30)
    try:
        wait_until(lambda: processed(app, "door") >= 5, timeout_s=10, what="frames before")
        network_camera.stall_open_streams()
        wait_until(
            lambda: health(app, "door")["stuck"] == {"capture": 1}, timeout_s=5, what="stuck"
        )
        stalled = processed(app, "door")
        wait_until(lambda: processed(app, "door") > stalled + 5, timeout_s=5, what="frames after")
        status = pipeline_status(app, "door")
        assert len(threads_named(f"camera-{network_camera.url}")) == 2, "the blocked one is left"
    finally:
        app.stop()
        network_camera.stop()  # closes the hung connection: the blocked read returns
    wait_until(
        lambda: not threads_named(f"camera-{network_camera.url}"),
        timeout_s=5,
        what="the abandoned capture thread leaving",
    )
    assert status["source"]["reconnects"] == 1 and status["source"]["state"] == "running"
    assert status["source"]["last_error"].startswith("capture stuck for 1.")
    assert status["health"]["state"] == "running"
    assert status["restarts"] == 0, "the pipeline itself was never stuck"
    assert network_camera.streams_served == 2
    (error,) = messages(caplog, "runtime.health", logging.ERROR)
    assert error.startswith("pipeline door: capture stuck for 1.")
    assert error.endswith("(timeout 1 s): reconnecting on a new thread")
    assert len(alerts(tmp_path / "alerts.jsonl")) == 1, "one red spell, one alert: no flapping"


# -- sensors that go silent -----------------------------------------------------------------------


class Publisher:
    """A real paho client publishing a reading per key every 20 ms while not paused."""

    def __init__(self, broker: MosquittoBroker, keys: tuple[str, ...]) -> None:
        self.keys = keys
        self.sent = 0
        self._running = threading.Event()
        self._stop = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pumps")
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._loop, name="publisher", daemon=True)
        self._thread.start()

    def resume(self) -> None:
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    def close(self) -> None:
        self._stop.set()
        self._running.set()
        self._thread.join(2)
        self._client.disconnect()
        self._client.loop_stop()

    def _loop(self) -> None:
        rng = np.random.default_rng(3)
        while not self._stop.wait(0.02):
            if not self._running.wait(0.05):
                continue
            for key in self.keys:
                payload = {"vib": float(rng.normal()), "cur": 5.0 + float(rng.normal()) / 10}
                self._client.publish(f"plant/{key}/pump", json.dumps(payload), qos=1)
                self.sent += 1


def test_a_sensor_topic_that_goes_silent_and_resumes(
    tmp_path: Path, broker: MosquittoBroker, subscriber: SubscriberFactory
) -> None:
    keys = ("pump-1", "pump-2")
    n = len(sensor_feature_names())
    build_sensor_bundle(
        tmp_path / "models", mean=np.zeros(n), std=np.ones(n), threshold=1e9, window=16, hop=8
    )
    received = subscriber(broker, "edgewatch/gw/alerts/#")
    publisher = Publisher(broker, keys)
    app = start_app(
        tmp_path,
        {
            "mqtt": {"host": broker.host, "port": broker.port},
            "models": {"pumps": {"bundle": "models/zscore/1.0.0"}},
            "sensor_pipelines": [
                {
                    "name": "pumps",
                    "source": {
                        "type": "mqtt",
                        "topics": ["plant/+/pump"],
                        "decoder": {
                            "type": "json",
                            "fields": {"vib": "vib", "cur": "cur"},
                            "key_topic_levels": [1],
                        },
                    },
                    "model": "pumps",
                    "silence_after_s": 1.0,
                    "rules": {"quiet": {"type": "silence"}},
                }
            ],
            "sinks": [{"type": "mqtt", "qos": 1}],
            "watchdog": {"check_interval_s": 0.1, "inference_timeout_s": 1.0},
        },
    )
    try:
        assert app.link is not None and app.link.wait_connected(5)
        wait_until(lambda: "Sending SUBACK" in broker.log_text(), what="subscribed")
        publisher.resume()

        def scored() -> int:
            return int(pipeline_status(app, "pumps")["windows_scored"])

        wait_until(lambda: scored() >= 10, timeout_s=10, what="windows scored")

        publisher.pause()  # the sensors go quiet
        raised = [m.json() for m in received.wait_for(2, timeout_s=5)]
        silent = pipeline_status(app, "pumps")

        publisher.resume()
        cleared = [m.json() for m in received.wait_for(4, timeout_s=5)[2:]]
        wait_until(lambda: scored() > silent["windows_scored"], what="windows again")
        after = pipeline_status(app, "pumps")
    finally:
        app.stop()
        publisher.close()
    assert sorted((a["state"], a["sensor"]["key"]) for a in raised) == [
        ("raised", "pump-1"),
        ("raised", "pump-2"),
    ]
    assert all(a["rule"] == "quiet" and a["sensor"]["value"] >= 1.0 for a in raised)
    assert sorted((a["state"], a["sensor"]["key"]) for a in cleared) == [
        ("cleared", "pump-1"),
        ("cleared", "pump-2"),
    ]
    for status in (silent, after):
        assert status["health"] == status["health"] | {
            "state": "running",
            "stuck": {},
            "restarts": 0,
        }, "silence is not a stuck pipeline"
    assert silent["health"]["last_progress_age_s"] >= 1.0, "no readings while silent"
    assert after["health"]["last_progress_age_s"] < 1.0
