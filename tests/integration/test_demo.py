"""The shipped demo config with the committed bundles, on held-out generated videos:
alerts fire on the scenes they should and on no others."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runtime.processing.nms import box_iou
from tests.brokers import MosquittoBroker, Subscriber
from tools.run_demo import FAULTY_PUMP, PUMP_KEYS, write_pump_recording
from tools.scenes import write_demo_video, write_dock_video
from tools.sensor_data import PumpSimulator

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LINE_SEGMENTS = [("normal", 3.0), ("fire", 3.0), ("normal", 4.0), ("smoke", 3.0), ("normal", 3.0)]
DOCK_SEGMENTS = [("clear", 3.0), ("hazard", 3.0), ("clear", 3.0), ("hazard", 3.0), ("clear", 2.0)]
FPS = 10
PUMP_FAULT_S = 18.0
PUMP_SECONDS = 36.0
PUMP_SPEED = 4  # 36 s of readings in 9 s, inside the cameras' 16 s
DEBOUNCE = 3  # raise_frames in firmware_configs/demo.yaml


@pytest.fixture(scope="module")
def demo_alerts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Runs `edgewatch run firmware_configs/demo.yaml` once on held-out videos (seeds the
    models never saw) and collects every alert a subscriber receives."""
    tmp = tmp_path_factory.mktemp("demo")
    line = write_demo_video(tmp / "line1.mp4", fps=FPS, segments=LINE_SEGMENTS, seed=20261126)
    dock = write_dock_video(tmp / "dock.mp4", fps=FPS, segments=DOCK_SEGMENTS, seed=20261127)
    write_pump_recording(
        tmp / "pumps.csv", seed=20261128, fault_s=PUMP_FAULT_S, seconds=PUMP_SECONDS
    )
    with MosquittoBroker(tmp / "broker") as broker:
        sub = Subscriber(broker, "edgewatch/demo-gw01/alerts/#", client_id="demo-test").start()
        env = {
            **os.environ,
            "EDGEWATCH_MQTT_PORT": str(broker.port),
            "EDGEWATCH_DEMO_VIDEO": str(tmp / "line1.mp4"),
            "EDGEWATCH_DEMO_DOCK_VIDEO": str(tmp / "dock.mp4"),
            "EDGEWATCH_DEMO_LOOP": "false",
            # real time, as from a camera: cooldowns are in seconds of capture time
            "EDGEWATCH_DEMO_PACE": "native",
            "EDGEWATCH_DEMO_PUMPS": str(tmp / "pumps.csv"),
            "EDGEWATCH_STATE_DIR": str(tmp / "state"),
            "EDGEWATCH_DEMO_SENSOR_SPEED": str(PUMP_SPEED),
            # keep the recording's own timestamps, so window times can be checked against it
            "EDGEWATCH_DEMO_RESTAMP": "false",
        }
        result = subprocess.run(
            [sys.executable, "-m", "runtime", "run", "firmware_configs/demo.yaml"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        # a raise and a clear per hazard segment (two cameras) and the pump fault
        sub.wait_for(9, timeout_s=5)
        sub.stop()
    return {
        "result": result,
        "alerts": [m.json() for m in sub.messages],
        "line": line,
        "dock": dock,
    }


def test_demo_runs_to_the_end(demo_alerts: dict[str, Any]) -> None:
    result = demo_alerts["result"]
    assert result.returncode == 0, result.stderr
    assert "every pipeline has finished" in result.stderr


def test_line_camera_alerts_on_fire_and_smoke_only(demo_alerts: dict[str, Any]) -> None:
    raised = [
        a for a in demo_alerts["alerts"] if a["pipeline"] == "line1" and a["state"] == "raised"
    ]
    segments = demo_alerts["line"]
    kind_of = {f: kind for first, last, kind in segments for f in range(first, last + 1)}
    hazards = [(first, last, kind) for first, last, kind in segments if kind != "normal"]
    for alert in raised:
        kind = kind_of[alert["frame_seq"]]
        assert kind == alert["label"], f"{alert['label']} raised on a {kind} frame: {alert}"
    for first, last, kind in hazards:
        hits = [a for a in raised if first <= a["frame_seq"] <= last and a["label"] == kind]
        assert len(hits) == 1, f"expected one {kind} alert in frames {first}-{last}, got {hits}"
        assert hits[0]["frame_seq"] <= first + DEBOUNCE + 2, "raised promptly"
    assert len(raised) == len(hazards)


def test_dock_camera_alerts_with_the_hazard_box(demo_alerts: dict[str, Any]) -> None:
    alerts = [a for a in demo_alerts["alerts"] if a["pipeline"] == "dock"]
    raised = [a for a in alerts if a["state"] == "raised"]
    cleared = [a for a in alerts if a["state"] == "cleared"]
    hazards = [(f, last, box) for f, last, kind, box in demo_alerts["dock"] if kind == "hazard"]
    assert len(raised) == len(hazards) and len(cleared) == len(hazards)
    for (first, _last, box), alert in zip(hazards, raised, strict=True):
        assert first <= alert["frame_seq"] <= first + DEBOUNCE + 2, alert
        assert alert["label"] == "hazard" and alert["rule"] == "hazard-in-walkway"
        iou = box_iou(np.array([alert["bbox"]]), np.array([box]))[0, 0]
        assert iou >= 0.3, f"alert bbox {alert['bbox']} vs drawn hazard {box}: IoU {iou:.2f}"
    for (_first, last, _), alert in zip(hazards, cleared, strict=True):
        assert last < alert["frame_seq"] <= last + 5 + 3, "cleared once the hazard is gone"


def test_pumps_alert_on_the_bearing_fault_and_not_before(demo_alerts: dict[str, Any]) -> None:
    alerts = [a for a in demo_alerts["alerts"] if a["pipeline"] == "pumps"]
    assert [(a["rule"], a["state"], a["sensor"]["key"]) for a in alerts] == [
        ("bearing-anomaly", "raised", FAULTY_PUMP)
    ], "one alert: the faulty pump's, raised once the fault shows (it lasts to the end)"
    (alert,) = alerts
    epoch_s = PumpSimulator(PUMP_KEYS).epoch_s
    onset_ns = round((epoch_s + PUMP_FAULT_S) * 1e9)
    sensor = alert["sensor"]
    window_end = np.datetime64(sensor["window_end"].rstrip("Z"), "ns").astype(np.int64)
    window_start = np.datetime64(sensor["window_start"].rstrip("Z"), "ns").astype(np.int64)
    assert window_end > onset_ns, "not before the fault"
    assert window_start < onset_ns + 6 * 10**9, "within a few windows of the onset"
    assert sensor["value"] > sensor["threshold"] == 1.0
    assert alert["severity"] == "critical" and alert["source"] == FAULTY_PUMP
    assert sensor["top_features"] and sensor["top_features"][0]["name"].startswith("vibration.")
