"""The demo pump anomaly model ``demo-pump-anomaly/1.0.0``, fitted on generated normal data.

Training data: :class:`tools.sensor_data.PumpSimulator` pumps ``pump-1`` … ``pump-8`` running
normally for an hour at 50 Hz (seed 0). Windows of 100 readings (2 s) every 50 (1 s) per pump;
per field (``vibration``, ``current``) the features are mean, std, RMS, peak, crest factor,
kurtosis and the band energies 0-7.5 Hz (running speed), 7.5-16 Hz (2x and 3x harmonics) and
16-25 Hz (bearing defect tone); 18 features. A bearing fault shows in the vibration RMS, peak,
kurtosis, crest factor and the 16-25 Hz band.

Model: PCA (T² and Q). It separates the simulated bearing fault from normal windows by two
orders of magnitude, fits in a fraction of a second, is exactly the same arithmetic in numpy and
ONNX, and its threshold comes from two well-behaved statistics. (An IsolationForest fitted on the
same features flags a fraction of the faulty windows only; an autoencoder separates about as well
as PCA but trains for seconds in torch and is harder to reproduce bit for bit.) The threshold is
a peaks-over-threshold fit for a false-alarm rate of 1e-5 per window (one window per second per
pump, so about one window over threshold per 28 pump-hours): a bundle for alerting must be quiet.

The build then scores fresh normal data (another seed) and a bearing fault on ``pump-3`` and
records both in ``provenance["heldout"]``. Every random choice is seeded; on one
machine a rebuild gives the same model bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from runtime.processing.features import FeatureSpec
from tools.fit.bundle_anomaly import fit_anomaly
from tools.fit.data import WindowBatch, featurise, make_windows
from tools.fit.thresholds import ThresholdSpec
from tools.sensor_data import DEFAULT_RATE_HZ, Fault, PumpSimulator

logger = logging.getLogger(__name__)

PUMP_NAME = "demo-pump-anomaly"
VERSION = "1.0.0"
TRAIN_KEYS: tuple[str, ...] = tuple(f"pump-{i}" for i in range(1, 9))
TRAIN_SECONDS = 3600.0
TRAIN_SEED = 0
HELDOUT_SEED = 1000
HELDOUT_SECONDS = 3600.0
WINDOW = 100
HOP = 50
FEATURES = FeatureSpec(
    time=["mean", "std", "rms", "peak", "crest_factor", "kurtosis"],
    bands=[(0.0, 7.5), (7.5, 16.0), (16.0, 25.0)],
    sample_rate_hz=DEFAULT_RATE_HZ,
)
THRESHOLD = ThresholdSpec("pot", 1e-5)
DEMO_FAULT = Fault("pump-3", start_s=600.0, ramp_s=5.0, bearing=1.0)
"""The fault the held-out check injects: a bearing fault on pump-3 ten minutes in."""
FAULT_SPAN_S = (540.0, 240.0)  # (start, seconds): a minute before onset to three after

Scorer = Callable[[NDArray[np.float32]], NDArray[np.float64]]


@dataclass(frozen=True, slots=True)
class PumpEvaluation:
    """How a pump model does on fresh data.

    Normal data: ``windows_over`` windows over the threshold in ``pump_hours``, and
    ``persistent_alarms``, the runs of at least two consecutive over-threshold windows of one pump
    (what a rule with ``for_windows: 2`` would raise). Faulty data: the end of the first window
    over threshold on the faulty pump, in seconds after fault onset, the lowest score of its
    windows that start after the ramp is complete, and the highest score of the other pumps."""

    pump_hours: float
    windows_over: int
    windows_over_per_pump_hour: float
    persistent_alarms: int
    max_normal_score: float
    fault_first_alarm_after_s: float | None
    fault_min_score: float
    other_keys_max_score: float


def persistent_runs(over: NDArray[np.bool_], keys: Sequence[str], n: int = 2) -> int:
    """Runs of at least ``n`` consecutive ``True`` windows of one key (windows in key-major
    time order, as :func:`make_windows` lays them out)."""
    key_arr = np.asarray(keys)
    runs = 0
    for key in dict.fromkeys(keys):
        flags = over[key_arr == key].astype(np.int8)
        edges = np.diff(np.concatenate([[0], flags, [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        runs += int(((ends - starts) >= n).sum())
    return runs


def heldout_windows(
    seed: int = HELDOUT_SEED, seconds: float = HELDOUT_SECONDS
) -> tuple[WindowBatch, NDArray[np.float32]]:
    """Fresh normal windows of the training pumps and their features."""
    batch = make_windows(PumpSimulator(TRAIN_KEYS, seed=seed).recordings(0.0, seconds), WINDOW, HOP)
    return batch, featurise(batch, FEATURES)


def fault_windows(
    fault: Fault = DEMO_FAULT, seed: int = HELDOUT_SEED
) -> tuple[WindowBatch, NDArray[np.float32], NDArray[np.float64]]:
    """Windows around ``fault``, their features and their start times in simulation seconds."""
    sim = PumpSimulator(TRAIN_KEYS, seed=seed, fault=fault)
    batch = make_windows(sim.recordings(*FAULT_SPAN_S), WINDOW, HOP)
    start_s = (batch.timestamps_ns[:, 0] - sim.epoch_s * 1_000_000_000) / 1e9
    return batch, featurise(batch, FEATURES), start_s


def evaluate(
    score: Scorer, threshold: float, seed: int = HELDOUT_SEED, seconds: float = HELDOUT_SECONDS
) -> PumpEvaluation:
    batch, features = heldout_windows(seed, seconds)
    normal = score(features)
    over = normal > threshold
    pump_hours = len(TRAIN_KEYS) * seconds / 3600.0

    fbatch, ffeatures, start_s = fault_windows(seed=seed)
    fscores = score(ffeatures)
    faulty = np.asarray(fbatch.keys) == DEMO_FAULT.key
    end_s = start_s + (WINDOW - 1) / DEFAULT_RATE_HZ
    alarms = faulty & (fscores > threshold) & (end_s >= DEMO_FAULT.start_s)
    first = round(float(end_s[alarms].min() - DEMO_FAULT.start_s), 6) if alarms.any() else None
    settled = faulty & (start_s >= DEMO_FAULT.start_s + DEMO_FAULT.ramp_s)
    return PumpEvaluation(
        pump_hours=pump_hours,
        windows_over=int(over.sum()),
        windows_over_per_pump_hour=float(over.sum() / pump_hours),
        persistent_alarms=persistent_runs(over, batch.keys),
        max_normal_score=float(normal.max()),
        fault_first_alarm_after_s=first,
        fault_min_score=float(fscores[settled].min()),
        other_keys_max_score=float(fscores[~faulty].max()),
    )


def build_demo_pump_model(
    out_root: Path,
    overwrite: bool = False,
    seed: int = TRAIN_SEED,
    seconds: float = TRAIN_SECONDS,
) -> Path:
    """Fit PCA on generated normal pump data, check it on fresh data and write the bundle."""
    sim = PumpSimulator(TRAIN_KEYS, seed=seed)
    fitted = fit_anomaly(
        sim.recordings(0.0, seconds),
        kind="pca",
        threshold=THRESHOLD,
        window=WINDOW,
        hop=HOP,
        feature_spec=FEATURES,
        source="generated",
        extra_provenance={
            "generator": "tools.demo_sensor_model",
            "training_data": {
                "simulator": "tools.sensor_data.PumpSimulator",
                "keys": list(TRAIN_KEYS),
                "seconds_per_key": seconds,
                "rate_hz": sim.rate_hz,
                "seed": seed,
            },
        },
    )
    heldout = evaluate(fitted.model.score, fitted.model.threshold)
    logger.info("%s held-out: %s", PUMP_NAME, heldout)
    description = (
        "Demo pump anomaly model (PCA T²/Q) on 2 s windows of vibration and motor current at "
        f"50 Hz; trained on generated normal data of {', '.join(TRAIN_KEYS)}; score > 1 is "
        "anomalous."
    )
    provenance = {
        **fitted.manifest_fields["provenance"],
        "heldout": {"seed": HELDOUT_SEED, "fault": asdict(DEMO_FAULT), **asdict(heldout)},
    }
    fitted = replace(
        fitted,
        manifest_fields={
            **fitted.manifest_fields,
            "description": description,
            "provenance": provenance,
        },
    )
    return fitted.write(Path(out_root), PUMP_NAME, VERSION, overwrite=overwrite).bundle_dir
