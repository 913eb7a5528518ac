"""Soak test (not in CI): the real `edgewatch run` for N minutes; RSS growth, stalls, lost alerts.

The device runs a camera pipeline over a generated looping video at native pace (30 frames/s,
the colour flipping every second, so about two alerts a second), the durable outbox, and
`/metrics` on a free port, against a Mosquitto of its own. Every ``--sample-s`` seconds the
script reads the process's RSS (``/proc/<pid>/status``) and scrapes ``/metrics``. With
``--bounce-every-s`` the broker is stopped for ``--bounce-for-s`` seconds now and then, so the
outbox and the reconnect path are soaked too.

Reported:
  RSS       after the warm-up (first 20 % of samples) vs the last 20 %, and the slope (MiB/h)
            of a least-squares line through the samples after the warm-up;
  stalls    sample intervals in which no frame was processed, and the longest such gap;
  alerts    raised/cleared alerts produced (the device's own count) vs received by a subscriber
            (deduplicated by alert_id) after the run; the outbox depth at the end.

Run: ``.venv/bin/python benchmarks/soak.py --minutes 30 [--bounce-every-s 300]``
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from _common import machine_description, progress
from prometheus_client.parser import text_string_to_metric_families

from tools.mosquitto import BrokerOptions, MosquittoBroker, free_port

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the test helpers: a real paho subscriber, the tiny colour model
from tests.brokers import Subscriber  # noqa: E402
from tests.fixture_models import build_colour_bundle  # noqa: E402

FPS = 30.0


def write_video(path: Path, seconds: int = 20) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (160, 120))
    rng = np.random.default_rng(0)
    for i in range(int(seconds * FPS)):
        colour = (0, 0, 255) if (i // int(FPS)) % 2 else (255, 0, 0)
        frame = np.full((120, 160, 3), colour, np.uint8)
        writer.write(cv2.subtract(frame, rng.integers(0, 40, frame.shape, dtype=np.uint8)))
    writer.release()


def write_config(workdir: Path, broker_port: int, metrics_port: int) -> Path:
    config: dict[str, Any] = {
        "device": {"id": "soak-gw"},
        "mqtt": {"port": broker_port, "topic_prefix": "soak", "reconnect_max_s": 2},
        "models": {"colour": {"bundle": "models/colour/1.0.0"}},
        "pipelines": [
            {
                "name": "line1",
                "source": {"type": "camera", "uri": "loop.mp4", "pace": "native", "loop": True},
                "model": "colour",
                "rules": {
                    "red": {
                        "type": "threshold",
                        "labels": ["red"],
                        "raise_score": 0.9,
                        "clear_score": 0.5,
                        "raise_frames": 3,
                        "clear_frames": 3,
                    }
                },
            }
        ],
        "sinks": [{"type": "mqtt", "outbox": {"path": "state/outbox.sqlite"}}],
        "metrics": {"enabled": True, "port": metrics_port},
        "logging": {"level": "WARNING"},
        "status_interval_s": 10,
    }
    path = workdir / "device.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def scrape(port: int) -> dict[str, float]:
    """Sample name (with sorted labels) -> value, for the counters the soak reads."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}"] = sample.value
    return values


def metric(values: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in values.items() if k.startswith(prefix))


def slope_mib_per_h(times_s: list[float], rss: list[float]) -> float:
    if len(times_s) < 2:
        return float("nan")
    k, _ = np.polyfit(np.array(times_s), np.array(rss), 1)
    return float(k) * 3600


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--bounce-every-s", type=float, default=0.0, help="0: never")
    parser.add_argument("--bounce-for-s", type=float, default=10.0)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="ew-soak-") as tmp:
        workdir = Path(tmp)
        build_colour_bundle(workdir / "models", "colour")
        write_video(workdir / "loop.mp4")
        broker = MosquittoBroker(workdir / "broker", BrokerOptions(persistence=True))
        broker.start()
        sub = Subscriber(broker, "soak/soak-gw/alerts/#", client_id="soak-up", persistent=True)
        sub.start()
        metrics_port = free_port()
        config = write_config(workdir, broker.port, metrics_port)
        log = (workdir / "edgewatch.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "runtime", "run", str(config)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        times: list[float] = []
        rss: list[float] = []
        frames: list[float] = []
        stalls: list[float] = []
        started = time.monotonic()
        next_bounce = started + args.bounce_every_s if args.bounce_every_s > 0 else float("inf")
        last: dict[str, float] = {}
        try:
            time.sleep(3.0)
            while (elapsed := time.monotonic() - started) < args.minutes * 60:
                if proc.poll() is not None:
                    raise SystemExit(f"edgewatch exited with {proc.returncode}; see the log")
                if time.monotonic() >= next_bounce:
                    progress(f"{elapsed:.0f} s: broker down for {args.bounce_for_s:.0f} s")
                    broker.stop()
                    time.sleep(args.bounce_for_s)
                    broker.start()
                    next_bounce = time.monotonic() + args.bounce_every_s
                last = scrape(metrics_port)
                times.append(elapsed)
                rss.append(rss_mib(proc.pid))
                frames.append(metric(last, "edgewatch_frames_processed_total"))
                if len(frames) > 1 and frames[-1] <= frames[-2]:
                    stalls.append(times[-1] - times[-2])
                progress(f"{elapsed:.0f} s: RSS {rss[-1]:.1f} MiB, frames {frames[-1]:.0f}")
                time.sleep(args.sample_s)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            log.close()
        time.sleep(2.0)
        received = {m.json()["alert_id"] for m in sub.messages}
        sub.stop()
        broker.stop()

    warm = max(1, len(rss) // 5)
    after_warmup = rss[warm:]
    alerts = metric(last, "edgewatch_alerts_total")
    print(f"\n{machine_description(('onnxruntime', 'paho-mqtt', 'opencv-python-headless'))}")
    print(f"{args.minutes:.0f} min, a sample every {args.sample_s:.0f} s, {len(rss)} samples")
    print(
        f"RSS: {np.median(rss[warm : 2 * warm]):.1f} MiB after warm-up -> "
        f"{np.median(rss[-warm:]):.1f} MiB at the end; slope "
        f"{slope_mib_per_h(times[warm:], after_warmup):+.2f} MiB/h; max {max(rss):.1f} MiB"
    )
    print(
        f"stalls: {len(stalls)} sample interval(s) without a processed frame"
        + (f", longest {max(stalls):.0f} s" if stalls else "")
    )
    print(
        f"alerts: {alerts:.0f} produced by the last scrape, {len(received)} distinct received; "
        f"outbox depth at the last scrape {metric(last, 'edgewatch_outbox_depth'):.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
