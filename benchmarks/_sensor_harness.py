"""The sensor benchmark's machinery: the processes it drives, one paced trial, the ceiling search.

A *trial* publishes ``rate`` messages per second for ``seconds`` and watches the consumers'
shared counters. It passes when every message sent was processed no later than ``allowance_s``
after the last one was sent, nothing was dropped, and the publisher kept to its schedule. The
CPU time of the consumers, the broker, the publisher and everything else on the machine is taken
from ``/proc`` around each trial, so a result can be read against what else was running.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from _common import progress
from _sensor_consumers import DROPPED, N_COUNTERS, PROCESSED, RECEIVED, ConsumerSpec, consumer_main
from _sensor_load import Fleet, RunReport, RunRequest, publisher_main
from paho.mqtt.enums import CallbackAPIVersion

START_TIMEOUT_S = 60.0
DRAIN_IDLE_S = 1.0
DRAIN_MAX_S = 60.0
POLL_S = 0.004
PUBLISHER_TOLERANCE = 0.97
"""A trial counts only if the publisher achieved this share of the rate (else: publisher-bound)."""
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class BenchmarkError(RuntimeError):
    """The benchmark could not set itself up or a process misbehaved."""


# --------------------------------------------------------------------------- CPU accounting


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads); NaN where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return math.nan
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_cpu_s() -> float:
    """CPU seconds all cores spent busy since boot: tasks, interrupts, softirqs (much of loopback
    TCP) and time stolen by the hypervisor; everything but idle and I/O wait."""
    try:
        v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return math.nan
    return (sum(v) - v[3] - v[4]) / _TICK


def find_pid(needle: str) -> int | None:
    """The pid of the process whose command line contains ``needle`` (the broker's config)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            return int(entry.name)
    return None


class CpuMeter:
    """Cores used by each named group of processes, and by the rest, between two ``sample``s."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids

    def sample(self) -> tuple[float, float, dict[str, float]]:
        per = {name: sum(process_cpu_s(p) for p in pids) for name, pids in self.pids.items()}
        per["bench"] = process_cpu_s(os.getpid())
        return time.monotonic(), machine_cpu_s(), per

    @staticmethod
    def cores(
        before: tuple[float, float, dict[str, float]], after: tuple[float, float, dict[str, float]]
    ) -> dict[str, float]:
        """Cores used per group, and by the ``rest`` (other tasks, interrupts, steal)."""
        wall = after[0] - before[0]
        if wall <= 0:
            return {}
        used = {k: (after[2][k] - before[2][k]) / wall for k in before[2]}
        used["rest"] = (after[1] - before[1]) / wall - sum(used.values())
        return {k: round(v, 2) for k, v in used.items()}


# --------------------------------------------------------------------------- processes


class Publisher:
    """The load generator process (``_sensor_load.publisher_main``)."""

    def __init__(self, ctx: Any, port: int, fleet: Fleet, qos: int) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=publisher_main,
            args=(child, "127.0.0.1", port, fleet, qos),
            name="bench-publisher",
            daemon=True,
        )
        self.proc.start()
        if not self.conn.poll(START_TIMEOUT_S):
            raise BenchmarkError(f"the publisher did not start within {START_TIMEOUT_S} s")
        kind, detail = self.conn.recv()
        if kind != "ready":
            raise BenchmarkError(str(detail))

    def start(self, request: RunRequest) -> None:
        self.conn.send(request)

    def report(self, timeout_s: float) -> RunReport | None:
        """The report of the running request, or None if it isn't done within ``timeout_s``."""
        if not self.conn.poll(timeout_s):
            if not self.proc.is_alive():
                raise BenchmarkError(f"the publisher exited with code {self.proc.exitcode}")
            return None
        kind, detail = self.conn.recv()
        if kind != "report":
            raise BenchmarkError(str(detail))
        assert isinstance(detail, RunReport)
        return detail

    def close(self) -> None:
        if self.proc.is_alive():
            self.conn.send(None)
            self.proc.join(10.0)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5.0)


class Consumers:
    """One or more consumer processes of one kind; their progress is the sum of their counters."""

    def __init__(self, ctx: Any, specs: Sequence[ConsumerSpec]) -> None:
        self.specs = list(specs)
        self.counters = [ctx.RawArray("q", N_COUNTERS) for _ in specs]
        self.stops = [ctx.Event() for _ in specs]
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        try:
            for spec, counters, stop in zip(self.specs, self.counters, self.stops, strict=True):
                parent, child = ctx.Pipe()
                ready = ctx.Event()
                proc = ctx.Process(
                    target=consumer_main,
                    args=(spec, counters, ready, stop, child),
                    name=f"bench-{spec.kind}",
                    daemon=True,
                )
                proc.start()
                self.conns.append(parent)
                self.procs.append(proc)
                deadline = time.monotonic() + START_TIMEOUT_S
                while not ready.wait(0.05):
                    self.check()
                    if time.monotonic() > deadline:
                        raise BenchmarkError(
                            f"{spec.kind} consumer not ready within {START_TIMEOUT_S} s"
                        )
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def check(self) -> None:
        """Raise if a consumer reported an error or died."""
        for spec, conn, proc in zip(self.specs, self.conns, self.procs, strict=False):
            if conn.poll():
                _kind, detail = conn.recv()
                raise BenchmarkError(str(detail))
            if not proc.is_alive():
                raise BenchmarkError(f"{spec.kind} consumer exited with code {proc.exitcode}")

    def _sum(self, index: int) -> int:
        return sum(int(c[index]) for c in self.counters)

    def processed(self) -> int:
        return self._sum(PROCESSED)

    def dropped(self) -> int:
        return self._sum(DROPPED)

    def received(self) -> int:
        """Messages the consumers' MQTT clients got (edgewatch only; 0 for the others)."""
        return self._sum(RECEIVED)

    def close(self) -> None:
        for stop in self.stops:
            stop.set()
        for proc in self.procs:
            proc.join(15.0)
            if proc.is_alive():
                proc.terminate()
                proc.join(5.0)


class AlertMonitor:
    """A paho subscriber on ``topic_filter`` stamping each message with its arrival time."""

    def __init__(self, port: int, topic_filter: str) -> None:
        self.received: list[tuple[float, bytes]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-alert-monitor")
        self.client.on_connect = lambda c, *_: c.subscribe(topic_filter, 1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not subscribed.wait(10.0):
            self.close()
            raise BenchmarkError(f"the alert monitor could not subscribe to {topic_filter}")

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        with self._lock:
            self.received.append((now, bytes(msg.payload)))

    def since(self, t_s: float) -> list[tuple[float, bytes]]:
        with self._lock:
            return [(t, p) for t, p in self.received if t >= t_s]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --------------------------------------------------------------------------- one trial


@dataclass(frozen=True, slots=True)
class TrialSettings:
    seconds: float
    allowance_s: float
    verbose: bool = False


@dataclass(frozen=True, slots=True)
class Trial:
    rate: float
    sent: int
    passed: bool
    reason: str
    publisher_rate: float
    throughput: float  # messages processed per second while the publisher was sending
    done_after_s: float  # last message sent -> all processed (nan if not all were)
    publisher_bound: bool
    cores: dict[str, float]  # CPU cores used during the trial, per process group
    load_1m: float


def run_trial(
    publisher: Publisher,
    consumers: Consumers,
    meter: CpuMeter,
    rate: float,
    settings: TrialSettings,
    *,
    seconds: float | None = None,
    record: tuple[str, ...] = (),
) -> tuple[Trial, RunReport]:
    """Publish at ``rate`` and judge the consumers (see the module docstring)."""
    seconds = settings.seconds if seconds is None else seconds
    consumers.check()
    base, drops0, received0 = consumers.processed(), consumers.dropped(), consumers.received()
    cpu0 = meter.sample()
    publisher.start(RunRequest(rate, seconds, record))
    samples: list[tuple[float, int]] = []
    report: RunReport | None = None
    while True:
        now, done = time.time(), consumers.processed()
        samples.append((now, done))
        if report is None:
            report = publisher.report(POLL_S)
            continue
        if done >= base + report.sent or now > report.last_send_s + settings.allowance_s:
            break
        time.sleep(POLL_S)
    cpu1 = meter.sample()
    expected = base + report.sent
    reached = next((t for t, n in samples if n >= expected), math.nan)
    on_time = reached <= report.last_send_s + settings.allowance_s
    if not on_time:
        _drain(consumers, expected)
    final = consumers.processed()
    dropped = consumers.dropped() - drops0
    received = consumers.received() - received0
    publisher_bound = not report.achieved_rate >= PUBLISHER_TOLERANCE * rate
    reasons = []
    if report.acked < report.sent:
        reasons.append(f"{report.sent - report.acked} not PUBACKed")
    if final < expected:
        at_broker = f", {report.sent - received} never delivered" if received else ""
        reasons.append(f"{expected - final} lost{at_broker}")
    elif final > expected:
        reasons.append(f"{final - expected} extra")
    if dropped:
        reasons.append(f"{dropped} dropped")
    if not reasons and not on_time:
        late = reached - report.last_send_s
        reasons.append(f"late: all done {late:.2f} s after the last send" if late > 0 else "late")
    if publisher_bound:
        reasons.append(f"publisher reached only {report.achieved_rate:.0f}/s")
    trial = Trial(
        rate=rate,
        sent=report.sent,
        passed=not reasons,
        reason="; ".join(reasons) or "ok",
        publisher_rate=report.achieved_rate,
        throughput=_rate_between(samples, report.first_send_s, report.last_send_s),
        done_after_s=reached - report.last_send_s,
        publisher_bound=publisher_bound,
        cores=CpuMeter.cores(cpu0, cpu1),
        load_1m=os.getloadavg()[0],
    )
    if settings.verbose:
        cores = " ".join(f"{k} {v:.2f}" for k, v in trial.cores.items())
        progress(
            f"    {rate:8.0f}/s: {'pass' if trial.passed else 'FAIL'} ({trial.reason}); "
            f"processed {trial.throughput:.0f}/s; cores: {cores}"
        )
    return trial, report


def _drain(consumers: Consumers, expected: int) -> None:
    """Wait until the backlog is processed or progress stops, so the next trial starts clean."""
    last, idle_since, start = consumers.processed(), time.monotonic(), time.monotonic()
    while consumers.processed() < expected and time.monotonic() - start < DRAIN_MAX_S:
        time.sleep(0.02)
        now_done = consumers.processed()
        if now_done != last:
            last, idle_since = now_done, time.monotonic()
        elif time.monotonic() - idle_since > DRAIN_IDLE_S:
            return


def _rate_between(samples: Sequence[tuple[float, int]], t0: float, t1: float) -> float:
    """Processing rate between the samples nearest to wall times ``t0`` and ``t1``."""
    first = min(samples, key=lambda s: abs(s[0] - t0))
    last = min(samples, key=lambda s: abs(s[0] - t1))
    return (last[1] - first[1]) / (last[0] - first[0]) if last[0] > first[0] else math.nan


# --------------------------------------------------------------------------- the search


@dataclass(slots=True)
class Search:
    ceiling: float  # highest passing rate (nan if none passed)
    first_fail: float  # lowest failing rate above it (nan if none failed)
    publisher_bound: bool = False
    trials: list[Trial] = field(default_factory=list)

    @property
    def at_ceiling(self) -> Trial | None:
        return next((t for t in self.trials if t.passed and t.rate == self.ceiling), None)


def find_ceiling(
    trial: Callable[[float], Trial],
    guess: float,
    factor: float,
    resolution: float,
    max_trials: int,
) -> Search:
    """Multiply the rate by ``factor`` until one fails (divide until one passes), then narrow
    the gap between the highest pass and the lowest failure to ``resolution``: geometric
    bisection, or straight to 97 % of what the failing trial processed when that is lower."""
    search = Search(math.nan, math.nan)
    lo = hi = math.nan
    rate = guess
    for _ in range(max_trials):
        t = trial(rate)
        search.trials.append(t)
        if t.publisher_bound and not t.passed:  # once more: the publisher may have been preempted
            t = trial(rate)
            search.trials.append(t)
        if t.passed:
            lo = rate if math.isnan(lo) else max(lo, rate)
        else:
            hi = rate if math.isnan(hi) else min(hi, rate)
            if t.publisher_bound:
                search.publisher_bound = True
                break  # the load generator can't go faster: the consumer's ceiling is higher
        if math.isnan(lo):
            rate = hi / factor
        elif math.isnan(hi):
            rate = lo * factor
        elif hi / lo <= resolution:
            break
        else:
            mid = math.sqrt(lo * hi)
            failed = next(x for x in reversed(search.trials) if not x.passed and x.rate == hi)
            estimate = 0.97 * failed.throughput
            useful = math.isfinite(estimate) and lo * resolution < estimate < mid
            rate = estimate if useful else mid
    search.ceiling, search.first_fail = lo, hi
    return search
