"""``make demo``: build what is missing, start a throwaway broker, run the demo device.

Alerts are shown twice: edgewatch logs each one when the broker acknowledges it (PUBACK), and a
separate subscriber prints what an upstream consumer receives.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tools.demo_models import build_demo_classifier, build_demo_detector
from tools.demo_sensor_model import build_demo_pump_model
from tools.mosquitto import BrokerError, MosquittoBroker, free_port
from tools.scenes import write_demo_video, write_dock_video
from tools.sensor_data import Fault, PumpSimulator, write_recording

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "firmware_configs" / "demo.yaml"
VIDEO = REPO / "build" / "demo" / "line1.mp4"
DOCK_VIDEO = REPO / "build" / "demo" / "dock.mp4"
CLASSIFIER = REPO / "models" / "demo-hazard-classifier" / "1.0.0"
DETECTOR = REPO / "models" / "demo-hazard-detector" / "1.0.0"
PUMP_MODEL = REPO / "models" / "demo-pump-anomaly" / "1.0.0"
PUMPS = REPO / "build" / "demo" / "pumps.csv"
PUMP_KEYS = ("pump-1", "pump-2", "pump-3", "pump-4")
FAULTY_PUMP = "pump-3"
PUMP_FAULT_S = 20.0
PUMP_SECONDS = 40.0


def write_pump_recording(
    path: Path, *, seed: int = 7, fault_s: float = PUMP_FAULT_S, seconds: float = PUMP_SECONDS
) -> Path:
    """Four pumps at 50 Hz; a bearing fault on pump-3 ramps in from ``fault_s``."""
    simulator = PumpSimulator(PUMP_KEYS, seed=seed, fault=Fault(FAULTY_PUMP, start_s=fault_s))
    return write_recording(path, simulator, 0.0, seconds)


def ensure_assets() -> None:
    if not (CLASSIFIER / "manifest.json").is_file():
        print(f"building the demo classifier into {CLASSIFIER.parent} ...", flush=True)
        build_demo_classifier(REPO / "models")
    if not (DETECTOR / "manifest.json").is_file():
        print(f"building the demo detector into {DETECTOR.parent} ...", flush=True)
        build_demo_detector(REPO / "models")
    if not (PUMP_MODEL / "manifest.json").is_file():
        print(f"fitting the demo pump model into {PUMP_MODEL.parent} ...", flush=True)
        build_demo_pump_model(REPO / "models")
    VIDEO.parent.mkdir(parents=True, exist_ok=True)
    if not PUMPS.is_file():
        print(f"recording the pumps {PUMPS} ({FAULTY_PUMP} fails at {PUMP_FAULT_S:.0f} s) ...")
        write_pump_recording(PUMPS)
    if not VIDEO.is_file():
        print(f"rendering the packing-line camera {VIDEO} ...", flush=True)
        for first, last, kind in write_demo_video(VIDEO):
            print(f"  frames {first:3d}-{last:3d}: {kind}")
    if not DOCK_VIDEO.is_file():
        print(f"rendering the loading-dock camera {DOCK_VIDEO} ...", flush=True)
        for first, last, dock_kind, box in write_dock_video(DOCK_VIDEO):
            where = "" if box is None else f" at {[round(v) for v in box]}"
            print(f"  frames {first:3d}-{last:3d}: {dock_kind}{where}")


class AlertPrinter:
    """An upstream consumer: prints every alert that reaches the broker."""

    def __init__(self, port: int) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-consumer")
        self._client.on_connect = lambda c, *_: c.subscribe("edgewatch/+/alerts/#", qos=1)
        self._client.on_message = self._on_message
        self._client.connect_async("127.0.0.1", port)
        self._client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        alert = json.loads(msg.payload)
        with self._lock:
            self.count += 1
        bbox = f" bbox={alert['bbox']}" if alert.get("bbox") else ""
        sensor = alert.get("sensor")
        if sensor:
            top = ", ".join(f"{f['name']} z={f['zscore']:.0f}" for f in sensor["top_features"])
            bbox = f" key={sensor['key']}" + (f" ({top})" if top else "")
        print(
            f"  >> subscriber got {alert['severity'].upper():8s} {alert['state']:7s} "
            f"{alert['label']:6s} score={alert['score']:.2f}{bbox} on {msg.topic} "
            f"(seq {alert['seq']}, total latency {alert['latency_ms']['total']:.1f} ms)",
            flush=True,
        )

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--seconds", type=float, default=40.0, help="how long to run")
    args = parser.parse_args(argv)
    ensure_assets()
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="edgewatch-demo-") as tmp:
        broker: MosquittoBroker | None = None
        try:
            broker = MosquittoBroker(Path(tmp), port=free_port())
            broker.start()
            port = broker.port
            print(f"started a throwaway Mosquitto on 127.0.0.1:{port}")
        except BrokerError as exc:
            port = int(env.get("EDGEWATCH_MQTT_PORT", "1883"))
            print(f"no throwaway broker ({exc}); using 127.0.0.1:{port}")
        env["EDGEWATCH_MQTT_PORT"] = str(port)
        printer = AlertPrinter(port)
        cmd = [sys.executable, "-m", "runtime", "run", str(CONFIG), "--duration", str(args.seconds)]
        print("running:", " ".join(cmd[2:]), flush=True)
        try:
            rc = subprocess.call(cmd, env=env)
        finally:
            printer.stop()
            if broker is not None:
                broker.stop()
        print(f"demo finished (exit {rc}); the subscriber received {printer.count} alert(s)")
        return rc


if __name__ == "__main__":
    sys.exit(main())
