"""The whole spine through the real CLI: video file → ONNX model → rules → real Mosquitto."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import jsonschema  # type: ignore[import-untyped]
import numpy as np
import pytest
import yaml

from tests.brokers import MosquittoBroker, SubscriberFactory, free_port, wait_until
from tests.fixture_models import build_colour_bundle

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ALERT_SCHEMA = json.loads((REPO / "runtime" / "schemas" / "alert.schema.json").read_text())
BGR = {"red": (0, 0, 255), "green": (0, 255, 0), "blue": (255, 0, 0)}


def write_video(path: Path, segments: list[tuple[str, int]], fps: float = 30.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (160, 120))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for colour, count in segments:
        for _ in range(count):
            frame = np.full((120, 160, 3), BGR[colour], np.uint8)
            noise = rng.integers(0, 40, frame.shape, dtype=np.uint8)
            writer.write(cv2.subtract(frame, noise))
    writer.release()
    return path


def write_config(
    tmp_path: Path, port: int | str, pipelines: list[dict[str, Any]], loop: bool = False
) -> Path:
    for p in pipelines:
        p["source"]["loop"] = loop
    config = {
        "device": {"id": "test-gw"},
        "mqtt": {
            "host": "127.0.0.1",
            "port": port,
            "topic_prefix": "ew",
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 1,
        },
        "models": {
            "colour": {"bundle": "models/colour/1.0.0"},
            "broken": {"bundle": "models/broken/1.0.0"},
        },
        "pipelines": pipelines,
        "sinks": [{"type": "mqtt"}, {"type": "jsonl", "path": "out/alerts.jsonl"}],
        "status_interval_s": 0.5,
    }
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def red_pipeline(name: str, model: str = "colour", raise_score: object = 0.9) -> dict[str, Any]:
    return {
        "name": name,
        "source": {"type": "camera", "uri": "video.mp4", "pace": "native"},
        "model": model,
        "rules": {
            "red-seen": {
                "type": "threshold",
                "labels": ["red"],
                "raise_score": raise_score,
                "clear_score": 0.5,
                "raise_frames": 3,
                "clear_frames": 3,
                "severity": "critical",
            }
        },
    }


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    build_colour_bundle(tmp_path / "models", "colour")
    broken = build_colour_bundle(tmp_path / "models", "broken")
    (broken / "model.onnx").write_bytes((broken / "model.onnx").read_bytes() + b"\x00")
    write_video(tmp_path / "video.mp4", [("blue", 20), ("red", 20), ("blue", 20)])
    return tmp_path


def edgewatch(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO,
        check=False,
    )


def test_video_to_alerts_on_the_broker(
    workdir: Path, broker: MosquittoBroker, subscriber: SubscriberFactory
) -> None:
    alerts_sub = subscriber(broker, "ew/test-gw/alerts/#")
    config = write_config(workdir, broker.port, [red_pipeline("line1")])
    result = edgewatch("run", str(config), "--duration", "30")
    assert result.returncode == 0, result.stderr
    assert "every pipeline has finished" in result.stderr

    received = alerts_sub.wait_for(2, timeout_s=5)
    time.sleep(0.3)
    assert len(alerts_sub.messages) == 2, [m.payload for m in alerts_sub.messages]
    raised, cleared = (m.json() for m in received)
    for msg, alert in zip(received, (raised, cleared), strict=True):
        jsonschema.validate(alert, ALERT_SCHEMA)
        assert msg.topic == "ew/test-gw/alerts/line1"
        assert alert["device_id"] == "test-gw" and alert["pipeline"] == "line1"
        assert alert["model"]["name"] == "colour"
        assert set(alert["latency_ms"]) >= {"preprocess", "infer", "publish", "total"}
    assert (raised["state"], raised["label"], raised["rule"]) == ("raised", "red", "red-seen")
    assert raised["score"] >= 0.9 and raised["severity"] == "critical"
    assert 20 <= raised["frame_seq"] < 40, "raised while the red segment plays"
    assert cleared["state"] == "cleared" and cleared["frame_seq"] >= 40
    assert cleared["seq"] == raised["seq"] + 1 and cleared["boot_id"] == raised["boot_id"]
    assert "alert acked" in result.stderr

    lines = (workdir / "out" / "alerts.jsonl").read_text().splitlines()
    assert [json.loads(line)["alert_id"] for line in lines] == [
        raised["alert_id"],
        cleared["alert_id"],
    ]


def test_status_reports_pipelines_and_goes_offline(
    workdir: Path, broker: MosquittoBroker, subscriber: SubscriberFactory
) -> None:
    config = write_config(
        workdir, broker.port, [red_pipeline("good"), red_pipeline("bad", model="broken")], loop=True
    )
    status_sub = subscriber(broker, "ew/test-gw/status")
    alerts_sub = subscriber(broker, "ew/test-gw/alerts/#")
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime", "run", str(config)],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        alerts_sub.wait_for(1, timeout_s=20)

        def online_with_frames() -> bool:
            docs = [m.json() for m in status_sub.messages]
            return any(
                d.get("state") == "online"
                and d.get("pipelines", [{}])[0].get("frames_processed", 0) > 0
                for d in docs
            )

        wait_until(online_with_frames, timeout_s=10, what="status with processed frames")
        docs = [m.json() for m in status_sub.messages]
        online = [d for d in docs if d["state"] == "online" and "pipelines" in d]
        assert online[0]["pipelines"][0]["source"]["state"] == "running", "first status is live"
        assert online[0]["pipelines"][1]["state"] == "failed"
        status = online[-1]
        good, bad = status["pipelines"]
        assert good["name"] == "good" and good["source"]["state"] == "running"
        assert good["providers"] == {
            "requested": ["CPUExecutionProvider"],
            "active": ["CPUExecutionProvider"],
        }
        assert good["model"]["sha256"] and good["model"]["version"] == "1.0.0"
        assert bad["name"] == "bad" and bad["state"] == "failed"
        assert "sha256" in bad["last_error"] and "refusing" in bad["last_error"]
        assert {m.json()["pipeline"] for m in alerts_sub.messages} == {"good"}
        assert "password" not in json.dumps(status).lower()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr = proc.stderr.read() if proc.stderr else ""
        proc.wait()
    assert "received SIGTERM, stopping" in stderr
    wait_until(
        lambda: status_sub.messages[-1].json()["state"] == "offline",
        timeout_s=5,
        what="offline status",
    )
    assert status_sub.messages[-1].retain or status_sub.messages[-1].json()["state"] == "offline"


def test_cannot_start_exits_non_zero_with_one_line(workdir: Path, broker: MosquittoBroker) -> None:
    config = write_config(workdir, broker.port, [red_pipeline("only", model="broken")])
    result = edgewatch("run", str(config))
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("edgewatch: cannot start: no pipeline could start (only: ")
    assert "sha256" in last and "refusing" in last


def test_invalid_config_exits_non_zero_naming_the_line(workdir: Path) -> None:
    config = write_config(workdir, 1883, [red_pipeline("line1", raise_score="high")])
    result = edgewatch("run", str(config))
    assert result.returncode == 1
    line = config.read_text().splitlines().index("      raise_score: high") + 1
    assert f"pipelines[0].rules.red-seen.raise_score: line {line}: Input should be" in result.stderr


def test_unreachable_broker_keeps_running(workdir: Path) -> None:
    config = write_config(workdir, free_port(), [red_pipeline("line1")], loop=True)
    started = time.monotonic()
    result = edgewatch("run", str(config), "--duration", "3")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started >= 3
    assert "Connection refused" in result.stderr or "refused" in result.stderr.lower()


def test_environment_reaches_the_config(
    workdir: Path, broker: MosquittoBroker, subscriber: SubscriberFactory
) -> None:
    alerts_sub = subscriber(broker, "ew/test-gw/alerts/#")
    config = write_config(workdir, "${TEST_BROKER_PORT}", [red_pipeline("line1")]).read_text()
    (workdir / "env.yaml").write_text(config)
    env = {**os.environ, "TEST_BROKER_PORT": str(broker.port)}
    result = subprocess.run(
        [sys.executable, "-m", "runtime", "run", str(workdir / "env.yaml"), "--duration", "30"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(alerts_sub.wait_for(2, timeout_s=5)) == 2
