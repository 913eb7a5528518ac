"""Deterministic multi-sensor machine data for demos, tests and benchmarks: a fleet of pumps.

Every pump (a sensor *key*) reports two fields at ``rate_hz``:

* ``vibration`` (g): an accelerometer-like signal, a running-speed sine (about 5 Hz) plus its 2nd
  and 3rd harmonics, its amplitude following the load slightly, plus white noise;
* ``current`` (A): motor current, a per-pump mean (about 10 A) with a slow load variation (two
  slow sines) plus white noise.

Each pump's parameters differ a little (speed ±3 %, amplitudes ±5 %, mean current ±3 %, phases)
and depend on its key only; the seed drives the noise. Every value is a pure function of
``(seed, key, sample index)``: noise comes from a generator seeded per block of samples, so any
span of time gives the same numbers however it is chunked.

A :class:`Fault` on one key ramps in linearly over ``ramp_s`` from ``start_s``: a bearing fault
raises the running-speed amplitude, adds a tone at the bearing defect frequency (3.58 x running
speed, about 18 Hz) and impulsive spikes (kurtosis up); a current rise lifts the mean current.

Times passed in (``start_s``, ``Fault.start_s``) are seconds since the simulation start; times
coming out are epoch seconds (``epoch_s`` + simulation time), as a sensor message carries them.
The defaults assume ``rate_hz`` of at least 40 Hz (the bearing tone is below Nyquist).

    python -m tools.sensor_data --out pumps.csv --keys pump-1,pump-2 --seconds 600
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from tools.fit.data import Recording

FIELDS: tuple[str, ...] = ("vibration", "current")
DEFAULT_RATE_HZ = 50.0
DEFAULT_EPOCH_S = 1_700_000_000
KEY_COLUMN = "key"
TIMESTAMP_COLUMN = "ts"

BEARING_FREQUENCY_RATIO = 3.58
"""Bearing defect (outer race) frequency over running speed."""
_BLOCK = 256
"""Samples per independently seeded noise block."""
_ROWS_CHUNK_S = 60.0
_PARAMS_STREAM = 0x50415241  # "PARA": per-key parameters, apart from the noise blocks


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault on ``key`` from ``start_s`` (simulation seconds), ramping in over ``ramp_s``.

    ``bearing`` scales the bearing fault (0 = none, 1 = clearly visible); ``current_rise`` is the
    fractional rise of the mean current at full fault (0.1 = +10 %)."""

    key: str
    start_s: float
    ramp_s: float = 5.0
    bearing: float = 1.0
    current_rise: float = 0.0

    def __post_init__(self) -> None:
        if self.ramp_s < 0 or self.bearing < 0:
            raise ValueError(
                f"fault on {self.key!r}: ramp_s and bearing must be >= 0, "
                f"got {self.ramp_s} and {self.bearing}"
            )

    def level(self, t_s: NDArray[np.float64]) -> NDArray[np.float64]:
        """0 before ``start_s``, rising linearly to 1 at ``start_s + ramp_s``."""
        if self.ramp_s == 0:
            return (t_s >= self.start_s).astype(np.float64)
        return np.clip((t_s - self.start_s) / self.ramp_s, 0.0, 1.0)


@dataclass(frozen=True, slots=True)
class PumpParams:
    """One pump's signal parameters (drawn from the seed and the key)."""

    speed_hz: float
    amplitudes_g: tuple[float, float, float]  # running speed, 2x, 3x
    phases: tuple[float, float, float]
    vibration_noise_g: float
    load_coupling: float  # relative vibration amplitude change per unit of load
    current_mean_a: float
    load_a: float  # amplitude of the slow load variation
    load_periods_s: tuple[float, float]
    load_phases: tuple[float, float]
    current_noise_a: float
    spike_rate_hz: float  # bearing impacts at full fault
    spike_g: float


class Reading(NamedTuple):
    key: str
    ts_s: float  # epoch seconds
    values: dict[str, float]


def _key_id(key: str) -> int:
    return zlib.crc32(key.encode("utf-8"))


def pump_params(key: str) -> PumpParams:
    """A pump's parameters depend on its key only: ``pump-3`` is the same machine in every
    simulation, whatever the noise seed."""
    rng = np.random.default_rng([_key_id(key), _PARAMS_STREAM])

    def jitter(value: float, rel: float) -> float:
        return float(value * (1.0 + rng.uniform(-rel, rel)))

    return PumpParams(
        speed_hz=jitter(5.0, 0.03),
        amplitudes_g=(jitter(1.0, 0.05), jitter(0.35, 0.05), jitter(0.15, 0.05)),
        phases=(
            float(rng.uniform(0, 2 * math.pi)),
            float(rng.uniform(0, 2 * math.pi)),
            float(rng.uniform(0, 2 * math.pi)),
        ),
        vibration_noise_g=jitter(0.08, 0.05),
        load_coupling=0.05,
        current_mean_a=jitter(10.0, 0.03),
        load_a=jitter(0.25, 0.1),
        load_periods_s=(jitter(120.0, 0.25), jitter(30.0, 0.25)),
        load_phases=(float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, 2 * math.pi))),
        current_noise_a=jitter(0.05, 0.05),
        spike_rate_hz=3.0,
        spike_g=5.0,
    )


class PumpSimulator:
    """Readings of ``keys`` at ``rate_hz`` from ``seed``, with an optional ``fault`` on one key."""

    fields: tuple[str, ...] = FIELDS

    def __init__(
        self,
        keys: Sequence[str],
        rate_hz: float = DEFAULT_RATE_HZ,
        seed: int = 0,
        fault: Fault | None = None,
        epoch_s: int = DEFAULT_EPOCH_S,
    ) -> None:
        if not keys or len(set(keys)) != len(keys):
            raise ValueError(f"pump simulator: expected unique keys, got {list(keys)}")
        if not (math.isfinite(rate_hz) and rate_hz > 0):
            raise ValueError(f"pump simulator: rate_hz must be > 0, got {rate_hz}")
        if fault is not None and fault.key not in keys:
            raise ValueError(f"fault key {fault.key!r} is not one of the keys {list(keys)}")
        self.keys = tuple(keys)
        self.rate_hz = float(rate_hz)
        self.seed = seed
        self.fault = fault
        self.epoch_s = int(epoch_s)
        self.params = {key: pump_params(key) for key in self.keys}

    def sample_indices(self, start_s: float, seconds: float) -> NDArray[np.int64]:
        """Indices ``i`` of the samples at ``i / rate_hz`` in ``[start_s, start_s + seconds)``."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        first = math.ceil(start_s * self.rate_hz - 1e-9)
        end = math.ceil((start_s + seconds) * self.rate_hz - 1e-9)
        return np.arange(first, max(first, end), dtype=np.int64)

    def timestamps_ns(self, indices: NDArray[np.int64]) -> NDArray[np.int64]:
        offsets = np.round(indices.astype(np.float64) * (1e9 / self.rate_hz)).astype(np.int64)
        return self.epoch_s * 1_000_000_000 + offsets

    def arrays(
        self, key: str, start_s: float, seconds: float
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """(timestamps in epoch ns (n,), values (n, len(fields))) of one key."""
        if key not in self.params:
            raise ValueError(f"unknown key {key!r}; expected one of: {', '.join(self.keys)}")
        idx = self.sample_indices(start_s, seconds)
        return self.timestamps_ns(idx), self._values(key, idx)

    def _values(self, key: str, idx: NDArray[np.int64]) -> NDArray[np.float64]:
        p = self.params[key]
        t = idx.astype(np.float64) / self.rate_hz
        noise_v, noise_c, spikes = self._noise(key, idx)
        load = np.sin(2 * math.pi * t / p.load_periods_s[0] + p.load_phases[0])
        load += 0.5 * np.sin(2 * math.pi * t / p.load_periods_s[1] + p.load_phases[1])
        running = sum(
            a * np.sin(2 * math.pi * (h + 1) * p.speed_hz * t + ph)
            for h, (a, ph) in enumerate(zip(p.amplitudes_g, p.phases, strict=True))
        )
        vibration = (1.0 + p.load_coupling * load) * running + p.vibration_noise_g * noise_v
        current = p.current_mean_a + p.load_a * load + p.current_noise_a * noise_c
        fault = self.fault if self.fault is not None and self.fault.key == key else None
        if fault is not None:
            level = fault.level(t)
            bearing = fault.bearing * level
            tone = np.sin(2 * math.pi * BEARING_FREQUENCY_RATIO * p.speed_hz * t)
            vibration += bearing * (0.6 * running + 0.5 * tone + p.spike_g * spikes)
            current += p.current_mean_a * fault.current_rise * level
        return np.stack([vibration, current], axis=1)

    def _noise(
        self, key: str, idx: NDArray[np.int64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """White noise for vibration and current, and a unit spike train at the bearing-impact
        rate (signed, scaled by the fault later), for the samples ``idx``."""
        n = idx.size
        noise_v, noise_c, spikes = np.empty(n), np.empty(n), np.zeros(n)
        if n == 0:
            return noise_v, noise_c, spikes
        kid = _key_id(key)
        rate = self.params[key].spike_rate_hz * _BLOCK / self.rate_hz
        first_block, last_block = int(idx[0] // _BLOCK), int(idx[-1] // _BLOCK)
        for block in range(first_block, last_block + 1):
            rng = np.random.default_rng([self.seed, kid, block & 0xFFFFFFFF, block >> 32])
            v, c = rng.standard_normal(_BLOCK), rng.standard_normal(_BLOCK)
            train = np.zeros(_BLOCK)
            hits = int(rng.poisson(rate))
            pos = rng.integers(0, _BLOCK, hits)
            train[pos] = rng.choice([-1.0, 1.0], hits) * rng.uniform(0.6, 1.0, hits)
            lo, hi = block * _BLOCK, (block + 1) * _BLOCK
            sel = (idx >= lo) & (idx < hi)
            local = idx[sel] - lo
            noise_v[sel], noise_c[sel], spikes[sel] = v[local], c[local], train[local]
        return noise_v, noise_c, spikes

    def recordings(self, start_s: float, seconds: float) -> list[Recording]:
        """One :class:`tools.fit.data.Recording` per key, ready for ``make_windows``."""
        out = []
        for key in self.keys:
            ts, values = self.arrays(key, start_s, seconds)
            out.append(Recording(key, self.fields, values, ts))
        return out

    def rows(self, start_s: float, seconds: float) -> Iterator[Reading]:
        """Readings in time order, the keys interleaved at each sample time."""
        end_s = start_s + seconds
        chunk_start = start_s
        while chunk_start < end_s:
            chunk = min(_ROWS_CHUNK_S, end_s - chunk_start)
            per_key = [self.arrays(key, chunk_start, chunk) for key in self.keys]
            n = per_key[0][0].size
            for i in range(n):
                for key, (ts, values) in zip(self.keys, per_key, strict=True):
                    yield Reading(
                        key,
                        int(ts[i]) / 1e9,
                        dict(zip(self.fields, map(float, values[i]), strict=True)),
                    )
            chunk_start += chunk


def write_recording(path: Path, simulator: PumpSimulator, start_s: float, seconds: float) -> Path:
    """Write ``simulator.rows`` to ``path`` (.csv or .jsonl) with columns ``key``, ``ts`` (epoch
    seconds) and one per field: what ``edgewatch fit --key-column key --timestamp-column ts``
    reads. Floats are written with ``repr``, so they read back exactly."""
    path = Path(path)
    suffix = path.suffix.lower()
    columns = [KEY_COLUMN, TIMESTAMP_COLUMN, *simulator.fields]
    rows = simulator.rows(start_s, seconds)
    with open(path, "w", newline="", encoding="utf-8") as f:
        if suffix == ".csv":
            writer = csv.writer(f)
            writer.writerow(columns)
            for r in rows:
                writer.writerow([r.key, repr(r.ts_s), *(repr(v) for v in r.values.values())])
        elif suffix in (".jsonl", ".ndjson"):
            for r in rows:
                f.write(json.dumps({KEY_COLUMN: r.key, TIMESTAMP_COLUMN: r.ts_s, **r.values}))
                f.write("\n")
        else:
            raise ValueError(f"recording {path}: expected a .csv or .jsonl file")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tools.sensor_data",
        description="Write generated pump readings (key, ts, vibration, current) to CSV or JSONL.",
    )
    p.add_argument("--out", required=True, type=Path, help=".csv or .jsonl")
    p.add_argument("--keys", default="pump-1,pump-2,pump-3", help="comma-separated pump keys")
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--rate-hz", type=float, default=DEFAULT_RATE_HZ)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fault-key", help="inject a bearing fault on this key")
    p.add_argument("--fault-start-s", type=float, default=300.0)
    p.add_argument("--current-rise", type=float, default=0.0, help="fractional, e.g. 0.1")
    args = p.parse_args(argv)
    keys = [k.strip() for k in args.keys.split(",") if k.strip()]
    try:
        fault = (
            Fault(args.fault_key, args.fault_start_s, current_rise=args.current_rise)
            if args.fault_key
            else None
        )
        sim = PumpSimulator(keys, rate_hz=args.rate_hz, seed=args.seed, fault=fault)
        write_recording(args.out, sim, 0.0, args.seconds)
    except (OSError, ValueError) as exc:
        print(f"sensor_data: {exc}", file=sys.stderr)
        return 2
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
