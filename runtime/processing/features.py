"""Window features, vectorised across a batch of windows with numpy.

Conventions (all per window and per field, over the samples of the window):

* ``std`` is the population standard deviation (``ddof=0``).
* ``kurtosis`` is Pearson's, *not* excess: ``m4 / m2**2``, 3 for a normal distribution, 1.5 for a
  sine (same as ``scipy.stats.kurtosis(x, fisher=False)``). ``skewness`` is ``m3 / m2**1.5``
  (``scipy.stats.skew(x)``). Both are 0 for a constant window (``std`` below 1e-10 of the peak).
* ``crest_factor`` is ``peak / rms``, 0 when ``rms`` is 0.
* ``slope`` is the least-squares slope against time in seconds (units per second).
* Band energies are the one-sided power of the mean-removed window in ``[lo, hi)`` Hz, scaled so
  that bands covering 0 Hz to Nyquist sum to the variance (``A·sin`` puts ``A²/2`` in its band).
  ``dominant_frequency`` is the frequency of the strongest non-DC bin. The sample rate is
  ``sample_rate_hz`` if configured, else ``(n - 1) / duration`` from each window's timestamps
  (the FFT assumes the samples are evenly spaced). With fewer than two samples both are 0.

Features are laid out field by field (every feature of the first field, then the next), and the
raw window, if asked for, last: ``data.reshape(B, -1)``, sample by sample. Values are scaled by
each window's peak before the moments are taken, so huge or tiny inputs neither overflow nor lose
precision; results beyond the float32 range saturate at its limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, model_validator

from runtime.config.base import StrictModel
from runtime.processing.windows import Window

TimeFeature = Literal["mean", "std", "rms", "peak", "crest_factor", "kurtosis", "skewness", "slope"]
TIME_FEATURES: tuple[TimeFeature, ...] = (
    "mean",
    "std",
    "rms",
    "peak",
    "crest_factor",
    "kurtosis",
    "skewness",
    "slope",
)

_CONSTANT_REL_STD = 1e-10
_F32_MAX = float(np.finfo(np.float32).max)


def _band_name(lo: float, hi: float) -> str:
    return f"band_{lo:g}_{hi:g}hz"


class FeatureSpec(StrictModel):
    time: list[TimeFeature] = Field(default_factory=lambda: list(TIME_FEATURES))
    bands: list[tuple[float, float]] = Field(default_factory=list)  # [lo, hi) in Hz
    dominant_frequency: bool = False
    raw: bool = False
    sample_rate_hz: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> FeatureSpec:
        duplicates = sorted({f for f in self.time if self.time.count(f) > 1})
        if duplicates:
            raise ValueError(
                f"time features must be unique, got duplicates: {', '.join(duplicates)}"
            )
        for lo, hi in self.bands:
            if not 0 <= lo < hi:
                raise ValueError(f"band ({lo}, {hi}): expected 0 <= lo < hi in Hz")
        if not (self.time or self.bands or self.dominant_frequency or self.raw):
            raise ValueError(
                "feature spec selects no features; expected at least one of time, bands, dominant_frequency, raw"
            )
        return self

    def per_field_names(self) -> list[str]:
        names: list[str] = list(self.time)
        names += [_band_name(lo, hi) for lo, hi in self.bands]
        if self.dominant_frequency:
            names.append("dominant_frequency")
        return names

    def names(self, fields: Sequence[str], n_samples: int | None = None) -> list[str]:
        """Feature names in ``compute`` order; ``n_samples`` is needed (only) with ``raw``."""
        per_field = self.per_field_names()
        names = [f"{field}.{name}" for field in fields for name in per_field]
        if self.raw:
            if n_samples is None:
                raise ValueError("raw features need the window length: pass n_samples")
            names += [f"{field}.raw_{i}" for i in range(n_samples) for field in fields]
        return names

    def compute(
        self, batch: NDArray[np.float64], timestamps_ns: NDArray[np.int64]
    ) -> NDArray[np.float32]:
        """Features of ``B`` windows of equal length: ``batch`` (B, n, F), ``timestamps_ns`` (B, n)
        → (B, n_features) float32 in ``names`` order."""
        x = np.asarray(batch, dtype=np.float64)
        ts = np.asarray(timestamps_ns)
        if x.ndim != 3 or x.shape[1] < 1 or x.shape[2] < 1:
            raise ValueError(
                f"feature batch: expected shape (B, n, F) with n, F >= 1, got {x.shape}"
            )
        if ts.shape != x.shape[:2]:
            raise ValueError(f"feature timestamps: expected shape {x.shape[:2]}, got {ts.shape}")
        b, n, f = x.shape
        per_field = self._per_field(x, ts)  # (B, F, P)
        out = per_field.reshape(b, -1)
        if self.raw:
            out = np.concatenate([out, x.reshape(b, n * f)], axis=1)
        with np.errstate(over="ignore"):
            return np.clip(out, -_F32_MAX, _F32_MAX).astype(np.float32)

    def _per_field(self, x: NDArray[np.float64], ts: NDArray[np.int64]) -> NDArray[np.float64]:
        b, _, f = x.shape
        columns: list[NDArray[np.float64]] = []
        peak = np.abs(x).max(axis=1)  # (B, F)
        scale = np.where(peak > 0, peak, 1.0)
        xs = x / scale[:, None, :]  # |xs| <= 1: moments can't overflow
        mean_s = xs.mean(axis=1)
        d = xs - mean_s[:, None, :]
        var_s = (d * d).mean(axis=1)
        std_s = np.sqrt(var_s)
        rms_s = np.sqrt((xs * xs).mean(axis=1))
        varying = std_s > _CONSTANT_REL_STD
        safe_var = np.where(varying, var_s, 1.0)
        t_s = (ts - ts[:, :1]).astype(
            np.float64
        ) / 1e9  # (B, n), relative, so int64 → float is exact enough
        with np.errstate(over="ignore"):
            for name in self.time:
                if name == "mean":
                    columns.append(mean_s * scale)
                elif name == "std":
                    columns.append(std_s * scale)
                elif name == "rms":
                    columns.append(rms_s * scale)
                elif name == "peak":
                    columns.append(peak)
                elif name == "crest_factor":
                    columns.append(np.where(rms_s > 0, 1.0 / np.where(rms_s > 0, rms_s, 1.0), 0.0))
                elif name == "kurtosis":
                    m4 = (d**4).mean(axis=1)
                    columns.append(np.where(varying, m4 / safe_var**2, 0.0))
                elif name == "skewness":
                    m3 = (d**3).mean(axis=1)
                    columns.append(np.where(varying, m3 / safe_var**1.5, 0.0))
                elif name == "slope":
                    columns.append(_slope(t_s, xs) * scale)
            if self.bands or self.dominant_frequency:
                columns += self._spectral(d, t_s, scale)
        return np.stack(columns, axis=2) if columns else np.empty((b, f, 0))

    def _spectral(
        self, d: NDArray[np.float64], t_s: NDArray[np.float64], scale: NDArray[np.float64]
    ) -> list[NDArray[np.float64]]:
        b, n, f = d.shape
        if self.sample_rate_hz is not None:
            fs = np.full(b, self.sample_rate_hz)
        else:
            duration = t_s[:, -1]
            fs = np.where(duration > 0, (n - 1) / np.where(duration > 0, duration, 1.0), 0.0)
        valid = (fs > 0) & (n >= 2)  # (B,)
        spectrum = np.fft.rfft(d, axis=1)  # (B, K, F)
        power = spectrum.real**2 + spectrum.imag**2
        power /= float(n) ** 2
        power[:, 1 : (n + 1) // 2] *= (
            2.0  # one-sided: fold the negative frequencies in (not DC/Nyquist)
        )
        freqs = np.arange(power.shape[1])[None, :] * (fs / n)[:, None]  # (B, K)
        columns: list[NDArray[np.float64]] = []
        for lo, hi in self.bands:
            mask = ((freqs >= lo) & (freqs < hi) & valid[:, None]).astype(np.float64)
            energy = np.einsum("bk,bkf->bf", mask, power)
            scaled = np.zeros_like(energy)  # energy * scale², without 0 * inf when scale² overflows
            np.multiply(energy, scale**2, out=scaled, where=energy > 0)
            columns.append(scaled)
        if self.dominant_frequency:
            if power.shape[1] > 1:
                k = power[:, 1:, :].argmax(axis=1) + 1  # (B, F)
                strongest = np.take_along_axis(power, k[:, None, :], axis=1)[:, 0, :]
                dominant = np.take_along_axis(freqs, k, axis=1)
                columns.append(np.where(valid[:, None] & (strongest > 0), dominant, 0.0))
            else:
                columns.append(np.zeros((b, f)))
        return columns

    def compute_windows(self, windows: Sequence[Window]) -> NDArray[np.float32]:
        """Features of windows of any lengths, in input order; equal lengths are computed together."""
        if not windows:
            return np.empty((0, 0), np.float32)
        fields = windows[0].fields
        for w in windows:
            if w.fields != fields:
                raise ValueError(
                    f"windows to featurise must share fields: {list(fields)} vs {list(w.fields)} (key {w.key!r})"
                )
        by_length: dict[int, list[int]] = {}
        for i, w in enumerate(windows):
            by_length.setdefault(w.n_samples, []).append(i)
        if self.raw and len(by_length) > 1:
            raise ValueError(
                f"raw features need windows of one length, got lengths {sorted(by_length)}"
            )
        out: NDArray[np.float32] | None = None
        for idx in by_length.values():
            batch = np.stack([windows[i].data for i in idx])
            ts = np.stack([windows[i].timestamps_ns for i in idx])
            features = self.compute(batch, ts)
            if out is None:
                out = np.empty((len(windows), features.shape[1]), np.float32)
            out[idx] = features
        assert out is not None
        return out


def _slope(t_s: NDArray[np.float64], xs: NDArray[np.float64]) -> NDArray[np.float64]:
    """Least-squares slope of every (window, field) column of ``xs`` against ``t_s``."""
    tc = t_s - t_s.mean(axis=1, keepdims=True)  # (B, n)
    denom = (tc * tc).sum(axis=1)  # (B,)
    xc = xs - xs.mean(axis=1, keepdims=True)
    num = np.einsum("bn,bnf->bf", tc, xc)
    ok = denom > 0
    return np.where(ok[:, None], num / np.where(ok, denom, 1.0)[:, None], 0.0)
