"""Window features against reference values: sines of known amplitude/frequency, direct
per-window formulas (scipy isn't installed: kurtosis/skewness use the textbook moment ratios),
batch == loop, names order, and no NaN/inf for any finite input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray
from pydantic import ValidationError

from runtime.processing.features import TIME_FEATURES, FeatureSpec
from runtime.processing.windows import Window

FS = 100.0


def stamps(n: int, fs: float = FS, t0_ns: int = 1_700_000_000 * 10**9) -> NDArray[np.int64]:
    return t0_ns + np.round(np.arange(n) * 1e9 / fs).astype(np.int64)


def sine(
    amplitude: float, freq_hz: float, n: int = 200, fs: float = FS, offset: float = 0.0
) -> NDArray[np.float64]:
    return np.asarray(
        offset + amplitude * np.sin(2 * np.pi * freq_hz * np.arange(n) / fs), np.float64
    )


def features(
    spec: FeatureSpec, x: NDArray[np.float64], fields: tuple[str, ...] = ("x",)
) -> dict[str, float]:
    """Features of one window (n, F) by name."""
    ts = stamps(x.shape[0])
    values = spec.compute(x[None], ts[None])[0]
    names = spec.names(fields, x.shape[0])
    assert values.shape == (len(names),)
    return dict(zip(names, values.tolist(), strict=True))


ALL = FeatureSpec(bands=[(0, 2), (2, 10), (10, 50.5)], dominant_frequency=True)


@pytest.mark.parametrize(("amplitude", "freq_hz"), [(3.0, 5.0), (0.5, 12.5), (1e4, 1.0)])
def test_sine_reference_values(amplitude: float, freq_hz: float) -> None:
    x = sine(amplitude, freq_hz)  # 2 s at 100 Hz: whole periods, bin-exact frequency
    f = features(ALL, x[:, None])
    tol = 1e-5 * amplitude
    assert f["x.mean"] == pytest.approx(0.0, abs=tol)
    assert f["x.std"] == pytest.approx(amplitude / np.sqrt(2), rel=1e-5)
    assert f["x.rms"] == pytest.approx(amplitude / np.sqrt(2), rel=1e-5)
    assert f["x.peak"] == pytest.approx(amplitude, rel=1e-5)  # the sine hits its crest on a sample
    assert f["x.crest_factor"] == pytest.approx(np.sqrt(2), rel=1e-5)
    assert f["x.kurtosis"] == pytest.approx(1.5, rel=1e-5)  # Pearson (non-excess) of a sine
    assert f["x.skewness"] == pytest.approx(0.0, abs=1e-5)
    t = (stamps(200) - stamps(200)[0]) / 1e9
    assert f["x.slope"] == pytest.approx(np.polyfit(t, x, 1)[0], rel=1e-4, abs=1e-6 * amplitude)
    assert f["x.dominant_frequency"] == pytest.approx(freq_hz, rel=1e-6)
    bands = {"x.band_0_2hz": (0, 2), "x.band_2_10hz": (2, 10), "x.band_10_50.5hz": (10, 50.5)}
    for name, (lo, hi) in bands.items():
        expected = amplitude**2 / 2 if lo <= freq_hz < hi else 0.0
        assert f[name] == pytest.approx(expected, rel=1e-5, abs=1e-9 * amplitude**2), name


def test_random_windows_against_direct_formulas() -> None:
    rng = np.random.default_rng(7)
    x = rng.gamma(2.0, 1.5, size=(128, 2)) + np.linspace(0, 4, 128)[:, None]  # skewed, trending
    spec = FeatureSpec(bands=[(0, 10), (10, 25), (25, 50.1)], dominant_frequency=True)
    f = features(spec, x, ("p", "q"))
    t = (stamps(128) - stamps(128)[0]) / 1e9
    for j, name in enumerate(("p", "q")):
        col = x[:, j]
        d = col - col.mean()
        m2, m3, m4 = (d**2).mean(), (d**3).mean(), (d**4).mean()
        expected = {
            "mean": col.mean(),
            "std": col.std(),
            "rms": np.sqrt((col**2).mean()),
            "peak": np.abs(col).max(),
            "crest_factor": np.abs(col).max() / np.sqrt((col**2).mean()),
            "kurtosis": m4 / m2**2,
            "skewness": m3 / m2**1.5,
            "slope": np.polyfit(t, col, 1)[0],
        }
        for feature, value in expected.items():
            assert f[f"{name}.{feature}"] == pytest.approx(value, rel=1e-5), feature
        # bands covering 0 Hz .. Nyquist add up to the variance (Parseval)
        total = sum(f[f"{name}.{b}"] for b in ("band_0_10hz", "band_10_25hz", "band_25_50.1hz"))
        assert total == pytest.approx(m2, rel=1e-5)
        # band energy against a direct DFT of the mean-removed window
        k = np.arange(128)
        freqs = np.minimum(k, 128 - k) * FS / 128
        dft = np.abs(np.exp(-2j * np.pi * np.outer(k, k) / 128) @ d) ** 2 / 128**2
        assert f[f"{name}.band_10_25hz"] == pytest.approx(
            dft[(freqs >= 10) & (freqs < 25)].sum(), rel=1e-5
        )
        assert f[f"{name}.dominant_frequency"] == pytest.approx(freqs[1:][np.argmax(dft[1:])])


def test_constant_and_ramp_windows() -> None:
    spec = FeatureSpec(bands=[(0, 50.1)], dominant_frequency=True)
    zero = features(spec, np.zeros((50, 1)))
    assert all(v == 0.0 for v in zero.values())
    const = features(spec, np.full((50, 1), 4.0))
    assert (const["x.mean"], const["x.rms"], const["x.crest_factor"]) == (4.0, 4.0, 1.0)
    assert (const["x.std"], const["x.kurtosis"], const["x.skewness"], const["x.slope"]) == (
        0,
        0,
        0,
        0,
    )
    assert (const["x.band_0_50.1hz"], const["x.dominant_frequency"]) == (0.0, 0.0)
    ramp = features(spec, 1.0 + 2.5 * np.arange(50, dtype=np.float64)[:, None] / FS)  # 2.5 units/s
    assert ramp["x.slope"] == pytest.approx(2.5, rel=1e-6)
    assert ramp["x.skewness"] == pytest.approx(0.0, abs=1e-6)
    assert ramp["x.kurtosis"] == pytest.approx(1.8, rel=1e-3)  # uniform-like: 9/5 as n grows
    single = features(spec, np.array([[3.0]]))
    assert (single["x.mean"], single["x.slope"], single["x.dominant_frequency"]) == (3.0, 0.0, 0.0)


def test_sample_rate_from_config_matches_timestamps() -> None:
    x = sine(2.0, 7.0, n=100)[None, :, None]
    derived = FeatureSpec(bands=[(5, 10)], dominant_frequency=True)
    configured = FeatureSpec(bands=[(5, 10)], dominant_frequency=True, sample_rate_hz=FS)
    ts = stamps(100)[None]
    np.testing.assert_allclose(derived.compute(x, ts), configured.compute(x, ts), rtol=1e-6)
    # a configured rate wins over the timestamps: at 200 Hz the same samples are a 14 Hz sine
    doubled = FeatureSpec(dominant_frequency=True, time=[], sample_rate_hz=2 * FS)
    assert doubled.compute(x, ts)[0, 0] == pytest.approx(14.0)


def test_batch_equals_per_window_loop() -> None:
    rng = np.random.default_rng(3)
    spec = FeatureSpec(bands=[(1, 5), (5, 30)], dominant_frequency=True, raw=True)
    batch = rng.normal(size=(6, 64, 3)) * rng.uniform(0.1, 100, size=(6, 1, 3))
    ts = np.stack([stamps(64, fs=fs) for fs in (50, 100, 100, 200, 80, 100)])
    together = spec.compute(batch, ts)
    assert together.dtype == np.float32
    assert together.shape == (6, len(spec.names(("a", "b", "c"), 64)))
    for i in range(6):
        np.testing.assert_array_equal(together[i], spec.compute(batch[i : i + 1], ts[i : i + 1])[0])


def test_names_order_matches_compute_order() -> None:
    spec = FeatureSpec(time=["peak", "mean"], bands=[(2.5, 10)], raw=True)
    names = spec.names(("vib_x", "temp"), n_samples=2)
    assert names == [
        "vib_x.peak",
        "vib_x.mean",
        "vib_x.band_2.5_10hz",
        "temp.peak",
        "temp.mean",
        "temp.band_2.5_10hz",
        "vib_x.raw_0",
        "temp.raw_0",
        "vib_x.raw_1",
        "temp.raw_1",
    ]
    x = np.array([[[-3.0, 20.0], [1.0, 22.0]]])
    values = spec.compute(x, stamps(2)[None])[0]
    assert dict(zip(names, values.tolist(), strict=True)) == {
        "vib_x.peak": 3.0,
        "vib_x.mean": -1.0,
        "vib_x.band_2.5_10hz": 0.0,  # 2 samples at 100 Hz: bins 0 and 50 Hz only
        "temp.peak": 22.0,
        "temp.mean": 21.0,
        "temp.band_2.5_10hz": 0.0,
        "vib_x.raw_0": -3.0,
        "temp.raw_0": 20.0,
        "vib_x.raw_1": 1.0,
        "temp.raw_1": 22.0,
    }
    assert FeatureSpec().names(["a"]) == [f"a.{n}" for n in TIME_FEATURES]
    with pytest.raises(ValueError, match="n_samples"):
        spec.names(["a"])


def window(n: int, seed: int, key: str = "k", fields: tuple[str, ...] = ("a", "b")) -> Window:
    data = np.random.default_rng(seed).normal(size=(n, len(fields)))
    return Window(key, 0, 1, fields, stamps(n), data, n < 32)


def test_compute_windows_groups_by_length_and_keeps_order() -> None:
    spec = FeatureSpec(bands=[(0, 20)], dominant_frequency=True)
    wins = [window(32, 0), window(20, 1), window(32, 2), window(7, 3), window(20, 4)]
    out = spec.compute_windows(wins)
    assert out.shape == (5, len(spec.names(("a", "b"))))
    for i, w in enumerate(wins):
        np.testing.assert_array_equal(out[i], spec.compute(w.data[None], w.timestamps_ns[None])[0])
    assert spec.compute_windows([]).shape == (0, 0)
    with pytest.raises(
        ValueError, match=r"raw features need windows of one length, got lengths \[7, 20, 32\]"
    ):
        FeatureSpec(raw=True).compute_windows(wins)
    with pytest.raises(ValueError, match="must share fields"):
        spec.compute_windows([window(8, 0), window(8, 1, fields=("a", "c"))])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bands": [(10, 5)]}, r"band \(10.0, 5.0\): expected 0 <= lo < hi"),
        ({"bands": [(-1, 5)]}, "expected 0 <= lo < hi"),
        ({"time": ["rms", "rms"]}, "duplicates: rms"),
        ({"time": ["median"]}, "time"),
        ({"time": []}, "selects no features"),
        ({"sample_rate_hz": 0}, "sample_rate_hz"),
    ],
)
def test_spec_rejects_bad_values(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FeatureSpec(**kwargs)


def test_compute_rejects_bad_shapes() -> None:
    spec = FeatureSpec()
    with pytest.raises(ValueError, match=r"expected shape \(B, n, F\).*got \(4, 3\)"):
        spec.compute(np.zeros((4, 3)), np.zeros((4, 3), np.int64))
    with pytest.raises(ValueError, match=r"timestamps: expected shape \(2, 4\), got \(2, 5\)"):
        spec.compute(np.zeros((2, 4, 1)), np.zeros((2, 5), np.int64))


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=150, deadline=None)
@given(
    data=st.integers(1, 3).flatmap(
        lambda b: st.integers(1, 24).flatmap(
            lambda n: st.tuples(
                hnp.arrays(np.float64, (b, n, 2), elements=finite),
                hnp.arrays(np.int64, (b, n), elements=st.integers(1, 10**9)),
            )
        )
    )
)
def test_random_finite_input_never_yields_nan_or_inf(
    data: tuple[NDArray[np.float64], NDArray[np.int64]],
) -> None:
    x, steps = data
    ts = np.cumsum(steps, axis=1)  # strictly increasing, irregular
    spec = FeatureSpec(bands=[(0, 1), (1, 1e9)], dominant_frequency=True, raw=True)
    with np.errstate(divide="raise", invalid="raise"):  # no hidden inf/NaN on the way
        try:
            out = spec.compute(x, ts)
        except FloatingPointError as e:
            raise AssertionError(f"floating point error on {x!r}") from e
    assert np.isfinite(out).all()
