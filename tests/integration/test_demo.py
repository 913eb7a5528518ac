"""The shipped demo: the committed classifier bundle raises alerts on hazard scenes, not others."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.brokers import MosquittoBroker, SubscriberFactory
from tools.scenes import write_demo_video

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SEGMENTS = [("normal", 3.0), ("fire", 3.0), ("normal", 4.0), ("smoke", 3.0), ("normal", 3.0)]
FPS = 10
DEBOUNCE = 3  # raise_frames in firmware_configs/demo.yaml


def test_demo_config_alerts_on_fire_and_smoke_only(
    tmp_path: Path, broker: MosquittoBroker, subscriber: SubscriberFactory
) -> None:
    video = tmp_path / "line1.mp4"
    # a seed the model never saw in training: held-out scenes
    segments = write_demo_video(video, fps=FPS, segments=SEGMENTS, seed=20261126)
    alerts_sub = subscriber(broker, "edgewatch/demo-gw01/alerts/#")
    env = {
        **os.environ,
        "EDGEWATCH_MQTT_PORT": str(broker.port),
        "EDGEWATCH_DEMO_VIDEO": str(video),
        "EDGEWATCH_DEMO_LOOP": "false",
        "EDGEWATCH_DEMO_PACE": "max",
    }
    result = subprocess.run(
        [sys.executable, "-m", "runtime", "run", "firmware_configs/demo.yaml", "--duration", "60"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "every pipeline has finished" in result.stderr

    alerts_sub.wait_for(4, timeout_s=5)  # a raise and a clear per hazard segment
    raised = [m.json() for m in alerts_sub.messages if m.json()["state"] == "raised"]
    kind_of = {f: kind for first, last, kind in segments for f in range(first, last + 1)}
    hazards = [(first, last, kind) for first, last, kind in segments if kind != "normal"]

    for alert in raised:
        kind = kind_of[alert["frame_seq"]]
        assert kind == alert["label"], f"{alert['label']} raised on a {kind} frame {alert}"
    for first, last, kind in hazards:
        hits = [a for a in raised if first <= a["frame_seq"] <= last and a["label"] == kind]
        assert len(hits) == 1, f"expected one {kind} alert in frames {first}-{last}, got {hits}"
        assert hits[0]["frame_seq"] <= first + DEBOUNCE + 2, "alert raised promptly"
    assert len(raised) == len(hazards)
