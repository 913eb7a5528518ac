"""TFLite models, float and full int8, drive a camera pipeline end to end: `edgewatch run` with
`backend: {type: litert}` on a held-out generated video → fire/smoke alerts on a real Mosquitto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.brokers import MosquittoBroker, SubscriberFactory
from tools.demo_tflite_models import FP32_VERSION, INT8_VERSION, TFLITE_CLASSIFIER_NAME
from tools.scenes import SceneKind, write_demo_video

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "models" / TFLITE_CLASSIFIER_NAME
SEGMENTS: list[tuple[SceneKind, float]] = [
    ("normal", 2.0),
    ("fire", 2.0),
    ("normal", 2.0),
    ("smoke", 2.0),
    ("normal", 2.0),
]
FPS = 10
RAISE_FRAMES = 3
CLEAR_FRAMES = 5


def threshold_rule(label: str, raise_score: float, clear_score: float) -> dict[str, Any]:
    return {
        "type": "threshold",
        "labels": [label],
        "raise_score": raise_score,
        "clear_score": clear_score,
        "raise_frames": RAISE_FRAMES,
        "clear_frames": CLEAR_FRAMES,
        "severity": "critical",
    }


def device_config(tmp_path: Path, port: int, version: str) -> Path:
    """The demo's packing-line camera (same rules) on the TFLite model, at decode speed."""
    config = {
        "device": {"id": "tflite-gw"},
        "mqtt": {"host": "127.0.0.1", "port": port, "topic_prefix": "ew"},
        "models": {
            "hazard": {
                "bundle": str(BUNDLES / version),
                "backend": {"type": "litert", "num_threads": 1},
            }
        },
        "pipelines": [
            {
                "name": "line1",
                "source": {"type": "camera", "uri": "line1.mp4", "pace": "max", "loop": False},
                "model": "hazard",
                "rules": {
                    "fire": threshold_rule("fire", 0.8, 0.5),
                    "smoke": threshold_rule("smoke", 0.7, 0.4),
                },
            }
        ],
        "sinks": [{"type": "mqtt", "qos": 1}],
    }
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, int, str]]]:
    """A held-out video: seed never used to build the model."""
    path = tmp_path_factory.mktemp("tflite-video") / "line1.mp4"
    segments = write_demo_video(path, fps=FPS, segments=SEGMENTS, seed=20261201)
    return path, [(first, last, str(kind)) for first, last, kind in segments]


@pytest.mark.parametrize("version", [FP32_VERSION, INT8_VERSION])
def test_tflite_model_raises_and_clears_fire_and_smoke_alerts(
    version: str,
    video: tuple[Path, list[tuple[int, int, str]]],
    tmp_path: Path,
    broker: MosquittoBroker,
    subscriber: SubscriberFactory,
) -> None:
    video_path, segments = video
    (tmp_path / "line1.mp4").symlink_to(video_path)
    config = device_config(tmp_path, broker.port, version)
    alerts_sub = subscriber(broker, "ew/tflite-gw/alerts/#")
    result = subprocess.run(
        [sys.executable, "-m", "runtime", "run", str(config), "--duration", "60"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "every pipeline has finished" in result.stderr
    assert "model.tflite: ai-edge-litert" in result.stderr, "served by the LiteRT backend"

    hazards = [(first, last, kind) for first, last, kind in segments if kind != "normal"]
    alerts = [m.json() for m in alerts_sub.wait_for(2 * len(hazards), timeout_s=5)]
    kind_of = {f: kind for first, last, kind in segments for f in range(first, last + 1)}
    raised = [a for a in alerts if a["state"] == "raised"]
    cleared = [a for a in alerts if a["state"] == "cleared"]
    for alert in alerts:
        assert alert["model"]["name"] == TFLITE_CLASSIFIER_NAME
        assert alert["model"]["version"] == version
        assert alert["pipeline"] == "line1"
    for alert in raised:
        assert kind_of[alert["frame_seq"]] == alert["label"], f"raised on the wrong scene: {alert}"
        assert alert["score"] >= {"fire": 0.8, "smoke": 0.7}[alert["label"]]
    assert [a["label"] for a in raised] == [kind for _, _, kind in hazards]
    assert [a["label"] for a in cleared] == [kind for _, _, kind in hazards]
    for (first, last, _), up, down in zip(hazards, raised, cleared, strict=True):
        assert first + RAISE_FRAMES - 1 <= up["frame_seq"] <= first + RAISE_FRAMES + 2, up
        assert last < down["frame_seq"] <= last + CLEAR_FRAMES + 3, down
