"""Generated pump data: deterministic per seed and chunking, faults change the right features on
the right key only, and recordings round-trip through the fit tool's reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.processing.features import FeatureSpec
from tools.fit.data import load_recordings
from tools.sensor_data import (
    FIELDS,
    KEY_COLUMN,
    TIMESTAMP_COLUMN,
    Fault,
    PumpSimulator,
    main,
    write_recording,
)

KEYS = ("pump-1", "pump-2")
RATE = 50.0
FAULT = Fault("pump-2", start_s=20.0, ramp_s=4.0, bearing=1.0)
TIME_FEATURES = FeatureSpec(time=["mean", "rms", "kurtosis"])


def features(values: np.ndarray, window: int = 100) -> dict[str, np.ndarray]:
    """Per-window vibration RMS / kurtosis and current mean of non-overlapping windows."""
    n = values.shape[0] // window
    batch = values[: n * window].reshape(n, window, values.shape[1])
    ts = np.tile(np.arange(window, dtype=np.int64) * 20_000_000, (n, 1))
    f = TIME_FEATURES.compute(batch, ts)
    names = TIME_FEATURES.names(FIELDS)
    return {name: f[:, i] for i, name in enumerate(names)}


def test_same_seed_gives_the_same_data_and_another_seed_other_noise() -> None:
    a = PumpSimulator(KEYS, rate_hz=RATE, seed=3).arrays("pump-1", 0.0, 30.0)
    b = PumpSimulator(KEYS, rate_hz=RATE, seed=3).arrays("pump-1", 0.0, 30.0)
    c = PumpSimulator(KEYS, rate_hz=RATE, seed=4).arrays("pump-1", 0.0, 30.0)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], c[0])
    assert not np.allclose(a[1], c[1])
    # the same pump: only the noise differs, so the signals stay close
    assert np.abs(a[1] - c[1]).mean(axis=0).tolist() < [0.2, 0.1]


def test_any_chunking_gives_the_same_samples() -> None:
    sim = PumpSimulator(KEYS, rate_hz=RATE, seed=1)
    ts, whole = sim.arrays("pump-1", 0.0, 20.0)
    parts = [sim.arrays("pump-1", s, d) for s, d in ((0.0, 7.3), (7.3, 0.01), (7.31, 12.69))]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), ts)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), whole)
    assert ts.size == 1000
    np.testing.assert_array_equal(np.diff(ts), np.full(999, 20_000_000))
    assert ts[0] == sim.epoch_s * 1_000_000_000


def test_pumps_differ_and_are_the_same_machine_under_any_seed() -> None:
    sim = PumpSimulator(("pump-1", "pump-2", "pump-3"), seed=0)
    speeds = [sim.params[k].speed_hz for k in sim.keys]
    assert len(set(speeds)) == 3 and all(4.8 < s < 5.2 for s in speeds)
    assert PumpSimulator(("pump-2",), seed=99).params["pump-2"] == sim.params["pump-2"]


def test_rows_interleave_keys_in_time_order_and_match_arrays() -> None:
    sim = PumpSimulator(KEYS, rate_hz=RATE, seed=2)
    rows = list(sim.rows(1.0, 0.1))
    assert [r.key for r in rows] == list(KEYS) * 5
    assert [r.ts_s for r in rows[::2]] == pytest.approx(
        [sim.epoch_s + 1.0 + i / RATE for i in range(5)], abs=1e-6
    )
    _, values = sim.arrays("pump-2", 1.0, 0.1)
    assert [list(r.values.values()) for r in rows[1::2]] == values.tolist()
    assert list(rows[0].values) == list(FIELDS)


def test_bearing_fault_raises_rms_and_kurtosis_on_the_faulty_key_after_onset_only() -> None:
    healthy = PumpSimulator(KEYS, rate_hz=RATE, seed=5)
    faulty = PumpSimulator(KEYS, rate_hz=RATE, seed=5, fault=FAULT)
    # the other pump is untouched, the faulty one unchanged before onset
    np.testing.assert_array_equal(
        healthy.arrays("pump-1", 0.0, 60.0)[1], faulty.arrays("pump-1", 0.0, 60.0)[1]
    )
    before_h, before_f = (
        healthy.arrays("pump-2", 0.0, 20.0)[1],
        faulty.arrays("pump-2", 0.0, 20.0)[1],
    )
    np.testing.assert_array_equal(before_h, before_f)

    after_h = features(healthy.arrays("pump-2", 24.0, 36.0)[1])
    after_f = features(faulty.arrays("pump-2", 24.0, 36.0)[1])
    assert after_f["vibration.rms"].min() > 1.4 * after_h["vibration.rms"].max()
    assert after_f["vibration.kurtosis"].min() > after_h["vibration.kurtosis"].max()
    assert np.median(after_f["vibration.kurtosis"]) > np.median(after_h["vibration.kurtosis"]) + 2.0
    # no current rise asked for: the current is the healthy one
    np.testing.assert_allclose(after_f["current.mean"], after_h["current.mean"])


def test_current_rise_ramps_in_over_the_ramp() -> None:
    fault = Fault("pump-1", start_s=10.0, ramp_s=4.0, bearing=0.0, current_rise=0.1)
    healthy = PumpSimulator(KEYS, rate_hz=RATE, seed=6).arrays("pump-1", 0.0, 30.0)[1]
    faulty = PumpSimulator(KEYS, rate_hz=RATE, seed=6, fault=fault).arrays("pump-1", 0.0, 30.0)[1]
    rise = faulty[:, 1] - healthy[:, 1]
    mean_a = PumpSimulator(KEYS).params["pump-1"].current_mean_a
    t = np.arange(rise.size) / RATE
    np.testing.assert_allclose(rise, 0.1 * mean_a * np.clip((t - 10.0) / 4.0, 0, 1), atol=1e-9)
    np.testing.assert_array_equal(faulty[:, 0], healthy[:, 0])  # bearing=0: vibration as before


def test_fault_level_ramps_linearly_and_a_zero_ramp_is_a_step() -> None:
    t = np.array([0.0, 10.0, 11.0, 12.5, 15.0, 20.0])
    np.testing.assert_allclose(Fault("k", 10.0, ramp_s=5.0).level(t), [0, 0, 0.2, 0.5, 1, 1])
    np.testing.assert_array_equal(Fault("k", 10.0, ramp_s=0.0).level(t), [0, 1, 1, 1, 1, 1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keys": ("a", "a")}, "unique keys"),
        ({"keys": ()}, "unique keys"),
        ({"keys": ("a",), "rate_hz": 0.0}, "rate_hz must be > 0"),
        ({"keys": ("a",), "fault": Fault("b", 1.0)}, "fault key 'b' is not one of"),
    ],
)
def test_invalid_simulators_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PumpSimulator(**kwargs)  # type: ignore[arg-type]


def test_unknown_key_and_negative_ramp_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown key 'pump-9'"):
        PumpSimulator(KEYS).arrays("pump-9", 0.0, 1.0)
    with pytest.raises(ValueError, match="ramp_s and bearing must be >= 0"):
        Fault("k", 0.0, ramp_s=-1.0)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_recordings_round_trip_through_the_fit_reader(tmp_path: Path, suffix: str) -> None:
    sim = PumpSimulator(KEYS, rate_hz=RATE, seed=7, fault=Fault("pump-1", 2.0))
    path = write_recording(tmp_path / f"pumps{suffix}", sim, 0.0, 4.0)
    loaded = load_recordings(
        path, list(FIELDS), key_column=KEY_COLUMN, timestamp_column=TIMESTAMP_COLUMN
    )
    expected = sim.recordings(0.0, 4.0)
    assert [r.key for r in loaded] == list(KEYS)
    for got, want in zip(loaded, expected, strict=True):
        assert got.fields == want.fields == FIELDS
        np.testing.assert_array_equal(got.values, want.values)  # floats written with repr
        # epoch seconds as a float64 are exact to about 0.2 µs
        np.testing.assert_allclose(got.timestamps_ns, want.timestamps_ns, rtol=0, atol=1_000)
        assert got.values.shape == (200, 2)


def test_cli_writes_a_recording_and_rejects_other_suffixes(tmp_path: Path) -> None:
    out = tmp_path / "p.jsonl"
    assert main(["--out", str(out), "--keys", "a,b", "--seconds", "1", "--fault-key", "b"]) == 0
    assert len(out.read_text().splitlines()) == 100
    assert main(["--out", str(tmp_path / "p.txt"), "--seconds", "1"]) == 2
    assert main(["--out", str(tmp_path / "q.csv"), "--keys", "a", "--fault-key", "z"]) == 2
