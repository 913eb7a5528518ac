"""WindowScore: values by name and the features that contributed most."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from runtime.messages import ModelInfo, WindowScore

NAMES = ("vib.mean", "vib.rms", "vib.kurtosis", "cur.mean")


def window_score(**overrides: Any) -> WindowScore:
    fields: dict[str, Any] = {
        "pipeline": "pumps",
        "key": "pump-1",
        "seq": 7,
        "start_ns": 1_000,
        "end_ns": 2_000,
        "n_samples": 64,
        "partial": False,
        "model": ModelInfo("m", "1", "ab" * 32),
        "score": 3.5,
        "threshold": 2.0,
        "feature_names": NAMES,
        "features": np.array([0.1, 0.9, 7.0, 4.2], np.float32),
        "zscores": np.array([0.5, -6.0, 12.0, 1.0], np.float32),
        "received_mono_ns": 0,
    }
    return WindowScore(**(fields | overrides))


def test_value_is_the_score_or_a_feature() -> None:
    w = window_score()
    assert w.value("score") == 3.5
    assert w.value("vib.kurtosis") == pytest.approx(7.0)
    with pytest.raises(KeyError, match="neither 'score' nor a feature"):
        w.value("vib.peak")


def test_top_features_rank_by_distance_from_training_either_side() -> None:
    top = window_score().top_features(2)
    assert [(c.name, c.zscore) for c in top] == [("vib.kurtosis", 12.0), ("vib.rms", -6.0)]
    assert top[0].value == pytest.approx(7.0)


def test_top_features_ignore_nan_and_handle_missing_statistics() -> None:
    zs = np.array([np.nan, 1.0, -2.0, 0.0], np.float32)
    assert [c.name for c in window_score(zscores=zs).top_features(1)] == ["vib.kurtosis"]
    assert window_score(zscores=None).top_features(3) == ()
    assert window_score().top_features(0) == ()
    assert len(window_score().top_features(10)) == len(NAMES)
