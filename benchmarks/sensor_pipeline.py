"""Sensor pipeline benchmark: edgewatch against a raw subscriber and a naive loop, through Mosquitto.

A pump fleet (``--keys`` sensors, one JSON reading per message on ``bench/<key>/data``, values
from the demo pump model's training distribution) is published at paced rates to a real local
Mosquitto by a separate process (``_sensor_load``). Each consumer runs in its own process:

  (a) raw paho subscriber: ``on_message`` does ``json.loads`` and nothing else (the ceiling);
  (b) naive loop: paho ``on_message`` decodes, appends to the key's last-window readings,
      computes that window's features, runs onnxruntime on them and publishes the score: one
      model run per message (edgewatch's feature code and session options: only the structure
      differs);
  (r) reference, no target, one search: the naive loop scoring only the windows edgewatch scores
      (one model call per completed hop, no batching);
  (c) edgewatch: ``runtime.app.App`` built from a device config (mqtt sensor source on a shared
      subscription, the model's windows, a threshold rule, the mqtt sink), one process;
  (c2) the same config in two processes sharing ``$share/bench/bench/+/data``.

A rate passes when every message the publisher sent (QoS 1 by default: each PUBACKed by the
broker) was processed by the consumer no later than ``--allowance`` after the last one was sent,
nothing was dropped and the publisher kept to its schedule. The highest passing rate is found by
doubling and then bisecting to 6 %; ``--runs`` searches per consumer (the first wide, the others
around the first result), medians reported. Then edgewatch runs at half its ceiling while some
keys turn faulty every ``cycle`` readings: each raised and cleared alert is matched to the reading
that completed its window, and publish->alert latency (reading stamped by the publisher just
before it is written to the socket -> alert received by a subscriber in this process; one clock,
microsecond resolution) is reported as p50/p99.

Targets: c >= 0.8 a, c >= 10 b, publish->alert p99 <= 20 ms at half of c's ceiling,
c2 >= 1.6 c. Publisher, broker and consumers share the machine's cores; the CPU each used at its
ceiling, and what other tasks on the machine used meanwhile, is printed with the results.

Run: ``.venv/bin/python benchmarks/sensor_pipeline.py [--runs 3] [--quick] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from _common import fmt, machine_description, markdown_table, p50, p99, progress
from _sensor_consumers import ConsumerKind, ConsumerSpec
from _sensor_harness import (
    AlertMonitor,
    BenchmarkError,
    Consumers,
    CpuMeter,
    Publisher,
    Search,
    Trial,
    TrialSettings,
    find_ceiling,
    find_pid,
    run_trial,
)
from _sensor_load import Fleet, fleet

from runtime.manifest import ManifestBase
from runtime.model import read_manifest
from tools.mosquitto import BrokerOptions, MosquittoBroker

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = REPO / "models" / "demo-pump-anomaly" / "1.0.0"
SHARE_GROUP = "bench"
EW_PREFIX = "bench-ew"
PIPELINE = "pumps"
BROKER_CONFIG = ("log_type none", "log_type error", "log_type warning")
"""Mosquitto's defaults otherwise (max_inflight_messages 20, max_queued_messages 1000, Nagle on);
the test fixture's ``log_type all`` writes two lines per message and makes the broker the limit."""
RESOLUTION = 1.06
WARMUP_RATE = 2000.0
MAX_LATENCY_S = 40.0
BUSY_MACHINE_CORES = 0.25

TARGET_C_OVER_A = 0.8
TARGET_C_OVER_B = 10.0
TARGET_P99_MS = 20.0
TARGET_C2_OVER_C = 1.6

VARIANTS: dict[str, tuple[str, ConsumerKind, int]] = {
    "a": ("(a) raw paho + json.loads", "raw", 1),
    "b": ("(b) naive: model run per message", "naive", 1),
    "r": ("(r) ref: naive, model run per window", "naive_hop", 1),
    "c": ("(c) edgewatch, 1 process", "edgewatch", 1),
    "c2": ("(c2) edgewatch, 2 processes, $share", "edgewatch", 2),
}
REFERENCE_ONLY = {"r"}  # one search is enough for a reference


# --------------------------------------------------------------------------- setup


def ensure_bundle(bundle: Path, scratch: Path) -> Path:
    """The demo pump model, else one fitted like ``make models`` does, on less generated data."""
    if (bundle / "manifest.json").is_file():
        return bundle
    from tools.demo_sensor_model import build_demo_pump_model

    progress(f"{bundle} not found; fitting a pump model in a temp dir (make models puts it there)")
    return build_demo_pump_model(scratch, seconds=600.0)


def write_edgewatch_config(
    path: Path,
    *,
    port: int,
    bundle: Path,
    fields: Sequence[str],
    device: str,
    subscription: str,
    protocol: str,
) -> Path:
    config: dict[str, Any] = {
        "device": {"id": device},
        "mqtt": {
            "host": "127.0.0.1",
            "port": port,
            "topic_prefix": EW_PREFIX,
            "protocol": protocol,
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 1.0,
        },
        "models": {"pump": {"bundle": str(bundle)}},
        "sensor_pipelines": [
            {
                "name": PIPELINE,
                "source": {
                    "type": "mqtt",
                    "topics": [subscription],
                    "qos": 1,
                    "decoder": {
                        "type": "json",
                        "fields": {f: f for f in fields},
                        "key_topic_levels": [1],
                        "timestamp_field": "ts",
                    },
                },
                "model": "pump",
                "max_lateness_s": 0,  # one publisher: a key's readings arrive in order
                "rules": {"anomaly": {"type": "threshold"}},
            }
        ],
        "sinks": [{"type": "mqtt", "qos": 1}],
        "status_interval_s": 60,
        "logging": {"level": "WARNING"},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- ceilings


@dataclass(frozen=True, slots=True)
class VariantResult:
    key: str
    searches: list[Search]

    @property
    def ceilings(self) -> list[float]:
        return [s.ceiling for s in self.searches]

    @property
    def median(self) -> float:
        finite = [c for c in self.ceilings if math.isfinite(c)]
        return statistics.median(finite) if finite else math.nan

    @property
    def publisher_bound(self) -> bool:
        return any(s.publisher_bound for s in self.searches)

    def at_ceiling(self) -> Trial | None:
        """The passing trial at the ceiling of the search closest to the median."""
        searches = [s for s in self.searches if s.at_ceiling is not None]
        if not searches:
            return None
        best = min(searches, key=lambda s: abs(s.ceiling - self.median))
        return best.at_ceiling


def measure_variant(
    key: str,
    publisher: Publisher,
    consumers: Consumers,
    meter: CpuMeter,
    settings: TrialSettings,
    *,
    runs: int,
    guess: float,
    warmup_messages: int,
    max_trials: int,
) -> VariantResult:
    warm_rate = min(WARMUP_RATE, guess)
    progress(f"{key}: warm-up, {warmup_messages} messages at {warm_rate:.0f}/s")
    warm, _ = run_trial(
        publisher, consumers, meter, warm_rate, settings, seconds=warmup_messages / warm_rate
    )
    if not warm.passed:
        raise BenchmarkError(f"{key}: the warm-up at {warm_rate:.0f}/s failed: {warm.reason}")

    def trial(rate: float) -> Trial:
        return run_trial(publisher, consumers, meter, rate, settings)[0]

    searches: list[Search] = []
    for i in range(runs):
        first = searches[0].ceiling if searches else math.nan
        if math.isfinite(first):
            search = find_ceiling(trial, first, 1.12, RESOLUTION, max_trials)
        else:
            search = find_ceiling(trial, guess, 2.0, RESOLUTION, max_trials)
        searches.append(search)
        bound = " (publisher-bound)" if search.publisher_bound else ""
        progress(
            f"{key}: search {i + 1}/{runs}: ceiling {fmt(search.ceiling, 0)} msg/s{bound}, "
            f"lowest failing {fmt(search.first_fail, 0)} msg/s, {len(search.trials)} trials; "
            f"load {os.getloadavg()[0]:.2f}"
        )
    return VariantResult(key, searches)


# --------------------------------------------------------------------------- latency


@dataclass(frozen=True, slots=True)
class LatencyResult:
    rate: float
    seconds: float
    alerts: int  # alerts of the faulty keys received during the run
    latencies_ms: list[float]  # publish of the window's last reading -> alert received
    internal_ms: list[float]  # the alert's own latency_ms.total (batch arrival -> publish)
    trial: Trial


def _epoch_s(iso: str) -> float:
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def measure_latency(
    publisher: Publisher,
    consumers: Consumers,
    meter: CpuMeter,
    monitor: AlertMonitor,
    fleet_: Fleet,
    rate: float,
    min_alerts: int,
    settings: TrialSettings,
) -> LatencyResult:
    per_key_hz = rate / len(fleet_.keys)
    alerts_per_s = 2 * len(fleet_.anomaly_keys) * per_key_hz / fleet_.cycle
    seconds = min(MAX_LATENCY_S, max(5.0, 1.3 * min_alerts / alerts_per_s))
    progress(
        f"latency: {rate:.0f} msg/s for {seconds:.0f} s, {len(fleet_.anomaly_keys)} keys "
        f"raising and clearing (about {alerts_per_s * seconds:.0f} alerts)"
    )
    start = time.time()
    trial, report = run_trial(
        publisher, consumers, meter, rate, settings, seconds=seconds, record=fleet_.anomaly_keys
    )
    time.sleep(0.5)  # alerts of the last windows are on their way
    docs = [(t, json.loads(p)) for t, p in monitor.since(start)]
    # normal keys may clear alerts that an overloaded trial's losses raised: not ours
    ours = [(t, d) for t, d in docs if (d.get("sensor") or {}).get("key") in report.recorded]
    latencies, internal = [], []
    for arrived_s, doc in ours:
        sent = report.recorded[doc["sensor"]["key"]]
        # window_end is the last reading's ts + 1 ns, printed truncated to the millisecond
        end_s = _epoch_s(doc["sensor"]["window_end"])
        near = [ts for ts in sent if end_s - 0.0002 <= ts < end_s + 0.0012]
        if len(near) == 1:
            latencies.append((arrived_s - near[0]) * 1000.0)
            internal.append(float(doc.get("latency_ms", {}).get("total", math.nan)))
    return LatencyResult(rate, seconds, len(ours), latencies, internal, trial)


# --------------------------------------------------------------------------- report


def ratio(num: float, den: float) -> float:
    return num / den if math.isfinite(den) and den > 0 else math.nan


def judge(value: float, target: float, *, at_most: bool = False) -> dict[str, Any]:
    ok = math.isfinite(value) and (value <= target if at_most else value >= target)
    return {"value": value, "target": target, "at_most": at_most, "pass": ok}


def verdict_cell(j: dict[str, Any]) -> str:
    if not math.isfinite(j["value"]):
        return "-"
    return f"{'≤' if j['at_most'] else '≥'} {j['target']:g}  {'PASS' if j['pass'] else 'MISS'}"


def targets(results: dict[str, VariantResult], latency: LatencyResult | None) -> dict[str, Any]:
    med = {k: r.median for k, r in results.items()}
    nan = math.nan
    judged = {
        "c_over_a": judge(ratio(med.get("c", nan), med.get("a", nan)), TARGET_C_OVER_A),
        "c_over_b": judge(ratio(med.get("c", nan), med.get("b", nan)), TARGET_C_OVER_B),
        "c2_over_c": judge(ratio(med.get("c2", nan), med.get("c", nan)), TARGET_C2_OVER_C),
    }
    if latency is not None:
        judged["p99_ms"] = judge(p99(latency.latencies_ms), TARGET_P99_MS, at_most=True)
    return judged


def results_table(
    results: dict[str, VariantResult], latency: LatencyResult | None, judged: dict[str, Any]
) -> str:
    rows: list[list[str]] = []
    for key, (label, _kind, _n) in VARIANTS.items():
        r = results.get(key)
        if r is None:
            continue
        finite = [c for c in r.ceilings if math.isfinite(c)]
        note = "publisher-bound: the consumer can do more" if r.publisher_bound else ""
        rows.append(
            [
                label,
                "msg/s",
                fmt(r.median, 0),
                fmt(min(finite), 0) if finite else "-",
                fmt(max(finite), 0) if finite else "-",
                note,
            ]
        )
    med = {k: r.median for k, r in results.items()}
    for name, key, num, den in (
        ("c / a", "c_over_a", "c", "a"),
        ("c / b", "c_over_b", "c", "b"),
        ("c / r", "", "c", "r"),
        ("c2 / c", "c2_over_c", "c2", "c"),
    ):
        if num in med and den in med:
            value = ratio(med[num], med[den])
            rows.append(
                [name, "ratio", fmt(value, 3), "", "", verdict_cell(judged[key]) if key else ""]
            )
    if latency is not None:
        lat = latency.latencies_ms
        at = f"at {latency.rate:.0f} msg/s"
        rows += [
            [
                f"(c) publish->alert p50 {at}",
                "ms",
                fmt(p50(lat), 2),
                fmt(min(lat), 2) if lat else "-",
                fmt(max(lat), 2) if lat else "-",
                f"{len(lat)} alerts",
            ],
            [
                f"(c) publish->alert p99 {at}",
                "ms",
                fmt(p99(lat), 2),
                "",
                "",
                verdict_cell(judged["p99_ms"]),
            ],
            [
                "(c) of which inside edgewatch, p50 / p99",
                "ms",
                f"{fmt(p50(latency.internal_ms), 2)} / {fmt(p99(latency.internal_ms), 2)}",
                "",
                "",
                "alert latency_ms.total",
            ],
        ]
    return markdown_table(["metric", "unit", "median", "min", "max", "target"], rows, "llrrrl")


def cpu_table(results: dict[str, VariantResult]) -> str:
    rows = []
    for key, (label, _kind, _n) in VARIANTS.items():
        r = results.get(key)
        t = None if r is None else r.at_ceiling()
        if t is None:
            continue
        c = t.cores
        rows.append(
            [
                label,
                fmt(t.rate, 0),
                *(fmt(c.get(k, math.nan), 2) for k in ("consumer", "broker", "publisher")),
                fmt(max(0.0, c.get("bench", math.nan) + c.get("rest", math.nan)), 2),
                fmt(t.load_1m, 2),
            ]
        )
    headers = ["at the ceiling", "msg/s", "consumer", "broker", "publisher", "rest of machine"]
    return markdown_table([*headers, "load 1m"], rows)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sensor_pipeline.py", description=(__doc__ or "").split("\n\n")[0]
    )
    add = parser.add_argument
    add("--runs", type=int, default=3, help="ceiling searches per consumer (3)")
    add("--seconds", type=float, default=3.0, help="publishing time per trial (3 s)")
    add("--allowance", type=float, default=0.25, help="processing may end this late (0.25 s)")
    add("--keys", type=int, default=100, help="sensors publishing (100)")
    add("--anomalous", type=int, default=40, help="of which periodically faulty (40)")
    add("--qos", type=int, choices=(0, 1), default=1, help="publish QoS (1)")
    add(
        "--protocol",
        choices=("5", "3.1.1"),
        default="5",
        help="MQTT version of every consumer, edgewatch's mqtt.protocol included (5)",
    )
    add("--start-rate", type=float, default=2000.0, help="first rate tried (2000 msg/s)")
    add("--min-alerts", type=int, default=150, help="alerts to collect for latency (150)")
    add("--skip", default="", help="consumers to leave out, e.g. 'r,c2' (skipping c skips latency)")
    add(
        "--broker-option",
        action="append",
        default=[],
        help="an extra mosquitto.conf line, e.g. 'max_inflight_messages 100' (repeatable)",
    )
    add("--bundle", type=Path, default=DEFAULT_BUNDLE, help="the sensor model bundle")
    add("--quick", action="store_true", help="smoke run: tiny and fast, not a measurement")
    add("--json", type=Path, default=None, help="save the results here")
    add("--verbose", action="store_true", help="print every trial")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.seconds, args.keys, args.anomalous = 1, 0.5, 10, 2
        args.start_rate, args.min_alerts = 1000.0, 4
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.skip - set(VARIANTS):
        parser.error(f"--skip: unknown {sorted(args.skip - set(VARIANTS))}; use {list(VARIANTS)}")
    if args.runs < 1 or args.keys < 1 or args.seconds <= 0 or not 0 <= args.anomalous <= args.keys:
        parser.error("need --runs >= 1, --keys >= 1, --seconds > 0, 0 <= --anomalous <= --keys")
    return args


@dataclass(frozen=True, slots=True)
class Run:
    """What one invocation measured."""

    results: dict[str, VariantResult]
    latency: LatencyResult | None
    manifest: ManifestBase
    fleet: Fleet
    subscription: str
    log_tail: list[str]


def run_all(args: argparse.Namespace) -> Run:
    ctx = mp.get_context("spawn")
    settings = TrialSettings(args.seconds, args.allowance, args.verbose)
    max_trials = 4 if args.quick else 12
    results: dict[str, VariantResult] = {}
    latency: LatencyResult | None = None
    with tempfile.TemporaryDirectory(prefix="edgewatch-sensor-bench-") as tmp:
        work = Path(tmp)
        bundle = ensure_bundle(args.bundle, work / "models")
        manifest = read_manifest(bundle)
        if manifest.sensor is None:
            raise BenchmarkError(f"{bundle} has no `sensor` section: not a sensor model")
        fields = manifest.sensor.fields
        fleet_ = fleet(args.keys, fields, args.anomalous)
        subscription = f"$share/{SHARE_GROUP}/{fleet_.subscription}"
        warmup = len(fleet_.keys) * int(manifest.sensor.window.size)  # a full window per key

        def spec(kind: ConsumerKind, port: int, i: int) -> ConsumerSpec:
            config = work / f"device-{i}.yaml"
            if kind == "edgewatch":
                write_edgewatch_config(
                    config,
                    port=port,
                    bundle=bundle,
                    fields=fields,
                    device=f"bench-gw-{i}",
                    subscription=subscription,
                    protocol=args.protocol,
                )
            return ConsumerSpec(
                kind,
                "127.0.0.1",
                port,
                subscription,
                qos=1,
                protocol=args.protocol,
                bundle=str(bundle),
                config=str(config),
                log_file=str(work / f"edgewatch-{i}.log"),
            )

        options = BrokerOptions(extra_config=(*BROKER_CONFIG, *args.broker_option))
        with MosquittoBroker(work / "broker", options) as broker:
            broker_pid = find_pid(str(broker.config_path))
            publisher = Publisher(ctx, broker.port, fleet_, args.qos)
            monitor = AlertMonitor(broker.port, f"{EW_PREFIX}/+/alerts/#")
            try:
                for key, (_label, kind, n) in VARIANTS.items():
                    if key in args.skip:
                        continue
                    progress(f"{key}: starting {n} {kind} consumer process(es)")
                    consumers = Consumers(ctx, [spec(kind, broker.port, i + 1) for i in range(n)])
                    meter = CpuMeter(
                        {
                            "consumer": consumers.pids,
                            "broker": [] if broker_pid is None else [broker_pid],
                            "publisher": [publisher.proc.pid],
                        }
                    )
                    try:
                        guess = args.start_rate
                        if key == "c2" and "c" in results and math.isfinite(results["c"].median):
                            guess = results["c"].median
                        results[key] = measure_variant(
                            key,
                            publisher,
                            consumers,
                            meter,
                            settings,
                            runs=1 if key in REFERENCE_ONLY else args.runs,
                            guess=guess,
                            warmup_messages=warmup,
                            max_trials=max_trials,
                        )
                        half = results[key].median / 2
                        if key == "c" and fleet_.anomaly_keys and math.isfinite(half):
                            latency = measure_latency(
                                publisher,
                                consumers,
                                meter,
                                monitor,
                                fleet_,
                                half,
                                args.min_alerts,
                                settings,
                            )
                    finally:
                        consumers.close()
            finally:
                monitor.close()
                publisher.close()
        logs = sorted(work.glob("edgewatch-*.log"))
        tail = [line for p in logs for line in p.read_text().splitlines()][-8:]
    return Run(results, latency, manifest, fleet_, subscription, tail)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    machine = machine_description()
    run = run_all(args)
    judged = targets(run.results, run.latency)
    assert run.manifest.sensor is not None
    window = run.manifest.sensor.window
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    broker = ", ".join([*args.broker_option, "other settings default"])
    print(f"# sensor pipeline benchmark\n\n{machine}\n")
    if args.quick:
        print("**--quick: a smoke run of the machinery, not a measurement**\n")
    print(
        f"{len(run.fleet.keys)} sensors, one JSON reading per message, model "
        f"{run.manifest.name} {run.manifest.version} ({window.kind} windows of {window.size}, "
        f"hop {window.hop}). Publish QoS {args.qos} (raw-socket publisher process); every "
        f"consumer subscribes QoS 1 to '{run.subscription}' over MQTT {args.protocol}. Mosquitto "
        f"logs errors and warnings only, {broker}. Publisher, broker and "
        f"consumers share {cores} cores. A rate passes if all of {args.seconds:g} s of messages "
        f"is processed within {args.allowance:g} s of the last send, nothing lost or dropped. "
        f"Ceilings: median of {args.runs} search(es) to {RESOLUTION - 1:.0%} ((r): 1).\n"
    )
    print(results_table(run.results, run.latency, judged))
    print(
        "\nCPU cores used during the trial at each ceiling (the search nearest the median); the "
        "rest of machine is other tasks, interrupts (loopback TCP) and hypervisor steal:\n"
    )
    print(cpu_table(run.results))
    busy = [
        t.cores.get("rest", 0.0) + t.cores.get("bench", 0.0)
        for r in run.results.values()
        for s in r.searches
        for t in s.trials
    ]
    if busy and max(busy) > BUSY_MACHINE_CORES:
        print(
            f"\nnote: other work on the machine used up to {max(busy):.2f} cores during trials: "
            "the figures are lower and noisier than on an otherwise idle device"
        )
    verdicts = [j["pass"] for j in judged.values() if math.isfinite(j["value"])]
    print(f"\ntargets: {'all PASS' if verdicts and all(verdicts) else 'MISS'}")
    if run.latency is not None and not run.latency.trial.passed:
        print(f"note: the latency run itself did not keep up: {run.latency.trial.reason}")
    if run.latency is not None and len(run.latency.latencies_ms) < 100:
        n, total = len(run.latency.latencies_ms), run.latency.alerts
        print(f"note: latency over only {n} alerts ({total} received from the faulty keys)")
    if run.log_tail:
        print("\nlast edgewatch log lines:\n" + "\n".join(run.log_tail))
    if args.json is not None:
        doc = {
            "benchmark": "sensor_pipeline",
            "machine": machine,
            "settings": {
                k: sorted(v) if isinstance(v, set) else str(v) for k, v in vars(args).items()
            },
            "results": {
                k: {
                    "median": r.median,
                    "ceilings": r.ceilings,
                    "trials": [[asdict(t) for t in s.trials] for s in r.searches],
                }
                for k, r in run.results.items()
            },
            "latency": None
            if run.latency is None
            else {
                "rate": run.latency.rate,
                "seconds": run.latency.seconds,
                "alerts": run.latency.alerts,
                "latencies_ms": run.latency.latencies_ms,
                "internal_ms": run.latency.internal_ms,
            },
            "targets": judged,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        progress(f"results saved to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
