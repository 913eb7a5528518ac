"""Never lose an alert: the real `edgewatch run` process, a real Mosquitto, faults injected.

The device runs a camera pipeline over a looping video that flips red/blue every few frames, so
a threshold rule raises and clears continuously (about 150 alerts per second).
Every alert carries the boot id and a per-boot seq without gaps, so "every alert arrived"
means: for each boot, the seqs received are exactly 1..N.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.brokers import BrokerOptions, MosquittoBroker, Subscriber, SubscriberFactory, wait_until
from tests.fixture_models import build_colour_bundle
from tests.integration.test_end_to_end import write_video

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ALERTS = "ew/fault-gw/alerts/#"
FPS = 300.0


@pytest.fixture
def device(tmp_path: Path) -> Path:
    build_colour_bundle(tmp_path / "models", "colour")
    # 300 frames/s played at native pace, the colour flipping every 2 frames: 150 alerts/s
    write_video(tmp_path / "flip.mp4", [("red", 2), ("blue", 2)] * 30, fps=FPS)
    return tmp_path


def write_config(workdir: Path, port: int) -> Path:
    config: dict[str, Any] = {
        "device": {"id": "fault-gw"},
        "mqtt": {
            "port": port,
            "topic_prefix": "ew",
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.5,
        },
        "models": {"colour": {"bundle": "models/colour/1.0.0"}},
        "pipelines": [
            {
                "name": "line1",
                "source": {"type": "camera", "uri": "flip.mp4", "pace": "native", "loop": True},
                "model": "colour",
                "rules": {
                    "red": {
                        "type": "threshold",
                        "labels": ["red"],
                        "raise_score": 0.9,
                        "clear_score": 0.5,
                    }
                },
            }
        ],
        "sinks": [{"type": "mqtt", "outbox": {"path": "state/outbox.sqlite"}}],
        "status_interval_s": 1,
    }
    path = workdir / "device.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Device:
    """``edgewatch run`` in a subprocess; its log goes to a file (a pipe nobody reads would
    fill up and block the device's logging threads)."""

    def __init__(self, config: Path, *extra: str) -> None:
        self.log_path = config.parent / f"edgewatch-{time.monotonic_ns()}.log"
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "runtime", "run", str(config), *extra],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def persistent_broker(make_broker: Any) -> MosquittoBroker:
    broker: MosquittoBroker = make_broker(BrokerOptions(persistence=True))
    return broker


def by_boot(sub: Subscriber) -> dict[str, list[dict[str, Any]]]:
    """Alerts per boot id, first arrival of each alert id only, in arrival order."""
    seen: set[str] = set()
    boots: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for msg in sub.messages:
        alert = msg.json()
        if alert["alert_id"] not in seen:
            seen.add(alert["alert_id"])
            boots[alert["boot_id"]].append(alert)
    return boots


def outbox_ids(workdir: Path) -> set[str]:
    with sqlite3.connect(workdir / "state" / "outbox.sqlite") as db:
        return {row[0] for row in db.execute("SELECT alert_id FROM outbox")}


def test_broker_killed_for_10_s_while_alerts_flow_loses_nothing(
    device: Path, make_broker: Any, subscriber: SubscriberFactory
) -> None:
    broker = persistent_broker(make_broker)
    sub = subscriber(broker, ALERTS, persistent=True, client_id="upstream")
    dev = Device(write_config(device, broker.port), "--duration", "24")
    try:
        wait_until(lambda: len(sub.messages) >= 300, timeout_s=20, what="alerts flowing")
        before = time.monotonic()
        first = len(sub.messages)
        time.sleep(1.0)
        rate = (len(sub.messages) - first) / (time.monotonic() - before)
        assert rate >= 100, f"only {rate:.0f} alerts/s before the outage"

        broker.kill()
        time.sleep(10.0)
        during = len(sub.messages)
        broker.start()
    finally:
        code = dev.wait(60)
    stderr = dev.log
    assert code == 0, stderr[-3000:]
    assert "mqtt connection to" in stderr and "lost" in stderr

    [boot] = by_boot(sub)

    def complete() -> bool:
        got = by_boot(sub)[boot]
        return len(got) == max(a["seq"] for a in got)

    wait_until(complete, timeout_s=10, what="the subscriber to catch up")
    alerts = by_boot(sub)[boot]
    seqs = [a["seq"] for a in alerts]
    assert seqs == list(range(1, len(seqs) + 1)), "a gap or a reorder in the seqs"
    assert len(seqs) > during + 500, "alerts produced during the outage arrived afterwards"
    replayed = [a["seq"] for a in alerts if a["replayed"]]
    assert len(replayed) >= 500, (
        f"the outage's backlog went out marked replayed: {len(seqs)} alerts, {during} before "
        f"the restart, {len(replayed)} replayed; log:\n{stderr[-4000:]}"
    )
    left = outbox_ids(device)
    assert not left, f"{len(left)} alert(s) left in the outbox at a clean exit:\n" + "\n".join(
        line for line in stderr.splitlines()[-4000:] if "alert acked" not in line
    )


def test_sigkill_mid_stream_loses_no_written_alert(
    device: Path, make_broker: Any, subscriber: SubscriberFactory
) -> None:
    """The vehicle case: the uplink goes, alerts pile up in the outbox, then the power goes."""
    broker = persistent_broker(make_broker)
    sub = subscriber(broker, ALERTS, persistent=True, client_id="upstream")
    config = write_config(device, broker.port)
    dev = Device(config)
    try:
        wait_until(lambda: len(sub.messages) >= 300, timeout_s=20, what="alerts flowing")
        broker.stop()
        time.sleep(3.0)
        dev.proc.send_signal(signal.SIGKILL)
    finally:
        dev.wait(10)
    broker.start()
    written = outbox_ids(device)  # on disk at the kill: acked-not-deleted or never sent
    received_before = {m.json()["alert_id"] for m in sub.messages}
    [killed_boot] = by_boot(sub)
    assert len(written - received_before) >= 300, "the outage's alerts were on disk at the kill"

    rerun = Device(config, "--duration", "4")
    code = rerun.wait(60)
    stderr = rerun.log
    assert code == 0, stderr[-3000:]
    assert "from an earlier run; they will be replayed" in stderr

    received = {m.json()["alert_id"] for m in sub.messages}
    assert written <= received, f"{len(written - received)} written alert(s) never arrived"
    alerts = by_boot(sub)[killed_boot]
    seqs = [a["seq"] for a in alerts]
    assert seqs == list(range(1, len(seqs) + 1)), "a gap or a reorder in the killed boot"
    late = [a for a in alerts if a["alert_id"] in written - received_before]
    assert late and all(a["replayed"] for a in late)
    assert outbox_ids(device) == set()
