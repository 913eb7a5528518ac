"""Outbox benchmark: alerts/s through the durable SQLite outbox vs direct QoS 1 publishing, and
capture->PUBACK latency with the outbox on, through a real local Mosquitto, in one run.

Each run, in turn (so load from other processes hits them alike), on a fresh link and sink:

  direct       ``MqttSink`` without an outbox: ``publish`` hands the alert to paho (QoS 1);
  outbox-full  through the outbox, ``fsync: full`` (the default: every commit fsynced);
  outbox-norm  through the outbox, ``fsync: normal`` (survives a crash, not a power cut).

Throughput: ``--alerts`` alerts published back to back from one thread; the rate is alerts
divided by the time from the first publish to the last PUBACK. Latency: alerts paced at
``--rate`` per second through the outbox (fsync full); capture->PUBACK is measured by the sink
on every PUBACK (``captured_mono_ns`` is the publish time here, so it is the sink's share).
Reported: medians over ``--runs`` runs; target outbox-full / direct >= 0.8.

Run: ``.venv/bin/python benchmarks/outbox.py [--runs 5] [--alerts 5000] [--rate 200]``
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from _common import fmt, machine_description, markdown_table, median, p50, p99, progress

from runtime.messages import Alert, ModelInfo
from runtime.mqtt_link import MqttLink
from runtime.mqtt_settings import MqttSettings
from runtime.sinks.mqtt import MqttSink
from runtime.sinks.outbox import OutboxConfig
from tools.mosquitto import MosquittoBroker

MODES = ("direct", "outbox-full", "outbox-norm")
MODEL = ModelInfo(name="detector", version="1.0.0", sha256="ab" * 32)


def make_alert(seq: int, pipeline: str) -> Alert:
    now = time.time_ns()
    return Alert(
        alert_id=str(uuid.uuid4()),
        seq=seq,
        boot_id="bench",
        device_id="bench-gw",
        pipeline=pipeline,
        rule="person-in-zone",
        state="raised" if seq % 2 else "cleared",
        severity="warning",
        ts_ns=now,
        model=MODEL,
        label="person",
        score=0.87,
        bbox=(10.0, 20.0, 110.0, 220.0),
        source="cam0",
        frame_seq=seq,
        captured_at_ns=now,
        captured_mono_ns=time.monotonic_ns(),
        latency_ms={"infer": 3.2, "total": 4.1},
    )


def make_sink(port: int, mode: str, workdir: Path) -> tuple[MqttLink, MqttSink]:
    settings = MqttSettings(port=port, client_id=f"bench-{uuid.uuid4().hex[:8]}")
    link = MqttLink.from_settings(settings, "bench-gw", None, stop_timeout_s=10.0)
    link.start()
    if not link.wait_connected(5):
        raise SystemExit(f"can't connect to the benchmark broker: {link.last_error}")
    outbox = None
    if mode != "direct":
        fsync = "full" if mode == "outbox-full" else "normal"
        outbox = OutboxConfig(path=str(workdir / f"{uuid.uuid4().hex}.sqlite"), fsync=fsync)
    sink = MqttSink(link, outbox=outbox)
    sink.start()
    return link, sink


class AckCounter:
    """The sink's ``ack_observer``: counts PUBACKs, wakes the waiter at ``n``."""

    def __init__(self, sink: MqttSink, n: int) -> None:
        self.n = n
        self.count = 0
        self.done = threading.Event()
        sink.ack_observer = self

    def __call__(self, _pipeline: str, _seconds: float) -> None:
        self.count += 1  # one paho network thread calls this
        if self.count >= self.n:
            self.done.set()

    def wait(self, timeout_s: float) -> None:
        if not self.done.wait(timeout_s):
            raise SystemExit(f"only {self.count} of {self.n} alerts acknowledged in {timeout_s} s")


def throughput(port: int, mode: str, workdir: Path, n: int) -> float:
    link, sink = make_sink(port, mode, workdir)
    try:
        alerts = [make_alert(i, f"p{i % 4}") for i in range(n)]
        counter = AckCounter(sink, n)
        started = time.perf_counter()
        for alert in alerts:
            sink.publish(alert)
        counter.wait(120)
        return n / (time.perf_counter() - started)
    finally:
        sink.stop()
        link.stop()


def latency(port: int, workdir: Path, n: int, rate: float) -> list[float]:
    link, sink = make_sink(port, "outbox-full", workdir)
    try:
        counter = AckCounter(sink, n)
        period = 1.0 / rate
        next_at = time.perf_counter()
        for i in range(n):
            sink.publish(make_alert(i, f"p{i % 4}"))
            next_at += period
            time.sleep(max(0.0, next_at - time.perf_counter()))
        counter.wait(60)
        return sink.ack_latencies_ms()
    finally:
        sink.stop()
        link.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--alerts", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=200.0, help="paced rate for latency")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    rates: dict[str, list[float]] = {m: [] for m in MODES}
    lat_p50: list[float] = []
    lat_p99: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ew-bench-outbox-") as tmp:
        workdir = Path(tmp)
        with MosquittoBroker(workdir / "broker") as broker:
            for run in range(args.runs):
                for mode in MODES if run % 2 == 0 else MODES[::-1]:
                    rates[mode].append(throughput(broker.port, mode, workdir, args.alerts))
                lats = latency(broker.port, workdir, int(args.rate * 5), args.rate)
                lat_p50.append(p50(lats))
                lat_p99.append(p99(lats))
                progress(
                    f"run {run + 1}/{args.runs}: "
                    + ", ".join(f"{m} {rates[m][-1]:.0f}/s" for m in MODES)
                    + f", p99 {lat_p99[-1]:.1f} ms"
                )

    def med(mode: str) -> float:
        return median(rates[mode])

    rows = [[m, fmt(med(m), 0), fmt(med(m) / med("direct"), 2)] for m in MODES]
    print(f"\n{machine_description()}")
    print(f"medians of {args.runs} runs, {args.alerts} alerts per throughput run\n")
    print(markdown_table(["mode", "alerts/s", "vs direct"], rows))
    print(
        f"\ncapture->PUBACK through the outbox (fsync full) at {args.rate:.0f} alerts/s: "
        f"p50 {median(lat_p50):.2f} ms, p99 {median(lat_p99):.2f} ms"
    )
    per_run = [f / d for f, d in zip(rates["outbox-full"], rates["direct"], strict=True)]
    print(f"outbox-full / direct per run: {min(per_run):.2f}-{max(per_run):.2f}")
    ratio = med("outbox-full") / med("direct")
    print(
        f"outbox-full / direct = {ratio:.2f} (target >= 0.8): {'PASS' if ratio >= 0.8 else 'MISS'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
