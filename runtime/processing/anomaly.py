"""Sensor windows → the feature matrix a sensor model takes, and its outputs → one score per window.

The manifest's ``sensor`` section says how the model was trained (fields, windows, features, the
output holding the score and its threshold); :class:`AnomalyScorer` checks at start that the
windows this pipeline cuts produce exactly those features, so a model is never fed vectors in a
different order or of a different kind than it learned.

The features of a window are one row; a model whose input has more dimensions than ``[N, D]``
(e.g. ``[1, 3, 40]``: three frames of 40 spectral values) gets each row reshaped to them, which
with ``raw`` features of a count window is the window sample by sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from runtime.errors import ModelError
from runtime.manifest import ManifestBase, SensorModelSpec
from runtime.processing.windows import Window, WindowConfig

_MIN_STD = 1e-12


class AnomalyScorer:
    def __init__(
        self,
        spec: SensorModelSpec,
        output_names: Sequence[str],
        model_path: Path,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        self.spec = spec
        self.features = spec.features
        self.feature_names = tuple(spec.feature_names)
        self.threshold = float(spec.threshold)
        if spec.score_output not in output_names:
            raise ModelError(
                f"{model_path}: sensor.score_output {spec.score_output!r} is not an output of "
                f"the model (outputs: {', '.join(output_names)})"
            )
        self.score_index = list(output_names).index(spec.score_output)
        self.input_shape = tuple(input_shape or (len(self.feature_names),))
        """One window's model input, without the batch dimension."""
        self._mean: NDArray[np.float32] | None = None
        self._inv_std: NDArray[np.float32] | None = None
        if spec.feature_mean is not None and spec.feature_std is not None:
            self._mean = np.asarray(spec.feature_mean, np.float32)
            std = np.maximum(np.abs(np.asarray(spec.feature_std, np.float64)), _MIN_STD)
            self._inv_std = (1.0 / std).astype(np.float32)

    @classmethod
    def for_manifest(cls, manifest: ManifestBase, model_path: Path) -> AnomalyScorer:
        if manifest.sensor is None:
            raise ModelError(
                f"{model_path}: the manifest has no `sensor` section, so sensor pipelines can't "
                "use this model (bundles written by `edgewatch fit` have one)"
            )
        shape = manifest.inputs[0].shape
        n = len(manifest.sensor.feature_names)
        inner = shape[1:]
        fixed = [d for d in inner if isinstance(d, int)]
        fits = len(shape) == 2 and (not fixed or fixed == [n])
        fits = fits or (len(fixed) == len(inner) >= 2 and int(np.prod(fixed)) == n)
        if not fits:
            raise ModelError(
                f"{model_path}: sensor models take one input [N, {n}] (one row of "
                f"{n} features per window) or [N, ...] with fixed dims holding {n} values, "
                f"manifest says {shape}"
            )
        input_shape = fixed if len(shape) > 2 else [n]
        return cls(manifest.sensor, [o.name for o in manifest.outputs], model_path, input_shape)

    def default_window(self, max_lateness_s: float, gap_s: float | None) -> WindowConfig:
        """The windows the model was trained on, with this pipeline's lateness and gap."""
        w = self.spec.window
        return WindowConfig(
            kind=w.kind,
            size=w.size,
            hop=w.hop,
            fields=list(self.spec.fields),
            max_lateness_s=max_lateness_s,
            gap_s=gap_s,
        )

    def check_window(self, window: WindowConfig, model_path: Path) -> None:
        """The features of ``window`` must be the ones the model was trained on, in order."""
        n = window.size_samples if window.kind == "count" else None
        if self.features.raw and n is None:
            raise ModelError(
                f"{model_path}: the model takes raw windows, which need count windows of a fixed "
                "size; the pipeline's window is time-based"
            )
        names = self.features.names(window.fields, n)
        if tuple(names) != self.feature_names:
            raise ModelError(
                f"{model_path}: the pipeline's windows give {len(names)} features "
                f"({', '.join(names[:4])}...) but the model was trained on "
                f"{len(self.feature_names)} ({', '.join(self.feature_names[:4])}...): "
                "use the model's fields and window (leave `window` unset to take them from the "
                "manifest)"
            )

    def featurise(self, windows: Sequence[Window]) -> NDArray[np.float32]:
        return self.features.compute_windows(windows)

    def model_input(self, features: NDArray[np.float32]) -> NDArray[np.float32]:
        """Feature rows (B, D) as the model's input (B, *input_shape)."""
        return features.reshape(features.shape[0], *self.input_shape)

    def scores(self, outputs: Sequence[NDArray[np.float32]], batch: int) -> NDArray[np.float64]:
        """One score per window from the model's outputs; ModelError if the shape is wrong."""
        raw = np.asarray(outputs[self.score_index])
        if raw.size != batch:
            raise ModelError(
                f"output {self.spec.score_output!r} has shape {list(raw.shape)} for a batch of "
                f"{batch} windows; expected one score per window"
            )
        return raw.reshape(batch).astype(np.float64)

    def zscores(self, features: NDArray[np.float32]) -> NDArray[np.float32] | None:
        if self._mean is None or self._inv_std is None:
            return None
        with np.errstate(over="ignore", invalid="ignore"):
            return ((features - self._mean) * self._inv_std).astype(np.float32)
