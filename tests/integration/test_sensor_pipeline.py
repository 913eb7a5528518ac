"""Sensor pipeline on a real ONNX model: windows of many keys scored in batched model calls,
scores equal to a numpy reference, rules raising on the anomalous key only, start-up checks."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from runtime.backends.onnxruntime import OrtBackendConfig
from runtime.config.base import PluginConfig
from runtime.errors import ModelError
from runtime.messages import Alert, SensorReading
from runtime.model import LoadedModel
from runtime.pipeline import AlertFactory
from runtime.processing.anomaly import AnomalyScorer
from runtime.processing.features import FeatureSpec
from runtime.processing.windows import WindowConfig, Windower
from runtime.registry import import_submodules
from runtime.rules.sensor_base import SENSOR_RULES, SensorRule
from runtime.sensor_pipeline import SensorPipeline
from runtime.sinks.base import Sink, SinkContext
from runtime.sources.sensor_base import SensorSource, SensorSourceContext
from tests.fixture_models import (
    SENSOR_FIELDS,
    SENSOR_TIME_FEATURES,
    build_sensor_bundle,
)

pytestmark = pytest.mark.integration

WINDOW, HOP = 16, 8
RATE_NS = 20_000_000  # 50 Hz
T0 = 1_767_225_600_000_000_000
FIELDS = tuple(SENSOR_FIELDS)
SPEC = FeatureSpec(time=SENSOR_TIME_FEATURES)


class ListSource(SensorSource):
    """Hands out prepared batches of readings, then ends (a test double for the source)."""

    config_type = PluginConfig

    def __init__(self, batches: Sequence[Sequence[SensorReading]]) -> None:
        self._batches = [list(b) for b in batches]

    @classmethod
    def from_config(cls, config: PluginConfig, context: SensorSourceContext) -> ListSource:
        raise NotImplementedError

    def start(self) -> None:
        return None

    def read(self, timeout_s: float, max_readings: int = 4096) -> list[SensorReading]:
        del timeout_s, max_readings
        return self._batches.pop(0) if self._batches else []

    def stop(self) -> None:
        self._batches.clear()

    @property
    def ended(self) -> bool:
        return not self._batches

    def status(self) -> dict[str, object]:
        return {"type": "list", "state": "running", "dropped": {}}


class CollectSink(Sink):
    config_type = PluginConfig

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    @classmethod
    def from_config(cls, config: PluginConfig, context: SinkContext) -> CollectSink:
        raise NotImplementedError

    def publish(self, alert: Alert) -> None:
        self.alerts.append(alert)


def signal(key_index: int, n: int, seed: int, vib_gain: float = 1.0) -> NDArray[np.float64]:
    rng = np.random.default_rng(seed * 1000 + key_index)
    vib = rng.normal(0.0, 1.0, n) * vib_gain
    cur = 5.0 + rng.normal(0.0, 0.1, n)
    return np.stack([vib, cur], axis=1)


def interleaved(data: dict[str, NDArray[np.float64]]) -> list[SensorReading]:
    """Readings of every key at each tick, keys interleaved, as they arrive from many sensors."""
    n = next(iter(data.values())).shape[0]
    return [
        SensorReading(key, T0 + i * RATE_NS, 0, FIELDS, data[key][i].copy())
        for i in range(n)
        for key in data
    ]


@pytest.fixture(scope="module")
def training_stats() -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    rows = signal(0, 4096, seed=1)
    starts = np.arange(0, rows.shape[0] - WINDOW + 1, HOP)
    batch = rows[starts[:, None] + np.arange(WINDOW)]
    ts = np.broadcast_to(np.arange(WINDOW, dtype=np.int64) * RATE_NS, batch.shape[:2])
    feats = SPEC.compute(batch, ts).astype(np.float64)
    mean, std = feats.mean(axis=0), feats.std(axis=0)
    scores = (((feats - mean) / std) ** 2).mean(axis=1)
    return mean, std, float(np.quantile(scores, 0.999) * 1.5)


def load(bundle: Path) -> LoadedModel:
    return LoadedModel.load(bundle, OrtBackendConfig(type="onnxruntime"))


def threshold_rule(model_threshold: float, **config: object) -> SensorRule:
    import_submodules("runtime.rules")
    cls = SENSOR_RULES.get("threshold")
    cfg = cls.config_type.model_validate({"type": "threshold", **config})
    return cls.from_config(cfg, "anomaly", model_threshold)


def make_pipeline(
    model: LoadedModel, source: SensorSource, sink: CollectSink, **config: object
) -> SensorPipeline:
    scorer = AnomalyScorer.for_manifest(model.manifest, model.path)
    window = scorer.default_window(0.0, None)
    rule = threshold_rule(scorer.threshold, **config)
    return SensorPipeline(
        "pumps",
        source,
        Windower(window),
        model,
        scorer,
        [("anomaly", rule)],
        [sink],
        AlertFactory("gw-test"),
        max_batch=64,
    )


def test_windows_of_many_keys_share_model_calls_and_score_like_numpy(
    tmp_path: Path, training_stats: tuple[NDArray[np.float64], NDArray[np.float64], float]
) -> None:
    mean, std, threshold = training_stats
    model = load(build_sensor_bundle(tmp_path, mean=mean, std=std, threshold=threshold))
    keys = [f"pump-{i}" for i in range(12)]
    data = {k: signal(i, 4 * WINDOW, seed=2) for i, k in enumerate(keys)}
    sink = CollectSink()
    pipeline = make_pipeline(model, ListSource([]), sink)
    scored: list[tuple[str, float]] = []
    original = pipeline._evaluate

    def spy(window):  # type: ignore[no-untyped-def]
        scored.append((window.key, window.score))
        return original(window)

    pipeline._evaluate = spy  # type: ignore[method-assign]
    readings = interleaved(data)
    pipeline.process(readings)
    stats = pipeline.stats.snapshot()
    windows_per_key = (4 * WINDOW - WINDOW) // HOP + 1
    total = len(keys) * windows_per_key
    assert stats["windows_scored"] == total
    # the windows completed by one batch of readings go to the model together, max_batch at a time
    assert stats["model_calls"] == -(-total // 64)
    assert stats["mean_batch"] == pytest.approx(total / stats["model_calls"], abs=0.01)
    # the scores are those of the numpy reference, window by window
    for key, score in scored[: len(keys)]:
        window = data[key][:WINDOW]
        ts = np.arange(WINDOW, dtype=np.int64)[None, :] * RATE_NS
        feats = SPEC.compute(window[None], ts)[0].astype(np.float64)
        assert score == pytest.approx(float((((feats - mean) / std) ** 2).mean()), rel=1e-4)
    assert sink.alerts == []  # normal data: nothing over the threshold


def test_model_with_a_fixed_batch_of_one_scores_the_same(
    tmp_path: Path, training_stats: tuple[NDArray[np.float64], NDArray[np.float64], float]
) -> None:
    mean, std, threshold = training_stats
    data = {f"k{i}": signal(i, 2 * WINDOW, seed=3) for i in range(3)}
    results = []
    for batch in (None, 1):
        model = load(
            build_sensor_bundle(
                tmp_path, mean=mean, std=std, threshold=0.0, batch=batch, name=f"b{batch}"
            )
        )
        sink = CollectSink()
        pipeline = make_pipeline(model, ListSource([]), sink, raise_above=0.0)
        pipeline.process(interleaved(data))
        results.append(([(a.source, a.score) for a in sink.alerts], pipeline.stats.snapshot()))
    (batched, batched_stats), (single, single_stats) = results
    assert [k for k, _ in batched] == [k for k, _ in single] == ["k0", "k1", "k2"]
    assert [s for _, s in batched] == pytest.approx([s for _, s in single], rel=1e-5)
    assert batched_stats["model_calls"] < single_stats["model_calls"]
    del threshold


def test_the_anomalous_key_alerts_with_its_window_and_top_features(
    tmp_path: Path, training_stats: tuple[NDArray[np.float64], NDArray[np.float64], float]
) -> None:
    mean, std, threshold = training_stats
    model = load(build_sensor_bundle(tmp_path, mean=mean, std=std, threshold=threshold))
    n = 8 * WINDOW
    data = {f"pump-{i}": signal(i, n, seed=4) for i in range(4)}
    data["pump-2"][n // 2 :, 0] *= 6.0  # vibration grows on pump-2 half way through
    readings = interleaved(data)
    sink = CollectSink()
    source = ListSource([readings[i : i + 50] for i in range(0, len(readings), 50)])
    pipeline = make_pipeline(model, source, sink, for_windows=2)
    pipeline.run(threading.Event())
    raised = [a for a in sink.alerts if a.state == "raised"]
    assert [a.source for a in raised] == ["pump-2"]
    alert = raised[0]
    assert alert.sensor is not None and alert.sensor.key == "pump-2"
    assert alert.sensor.value_name == "score"
    assert alert.sensor.value > threshold and alert.sensor.threshold == pytest.approx(threshold)
    onset_ns = T0 + (n // 2) * RATE_NS
    assert alert.sensor.window_end_ns > onset_ns  # not before the fault
    assert alert.sensor.window_start_ns <= onset_ns + 3 * HOP * RATE_NS  # and soon after it
    top = [c.name for c in alert.sensor.top_features]
    assert top and top[0].startswith("vib.")
    assert alert.model == model.info
    assert pipeline.source.ended


def test_start_up_checks_name_what_does_not_fit(
    tmp_path: Path, training_stats: tuple[NDArray[np.float64], NDArray[np.float64], float]
) -> None:
    mean, std, threshold = training_stats
    plain = load(
        build_sensor_bundle(
            tmp_path, mean=mean, std=std, threshold=threshold, sensor=False, name="plain"
        )
    )
    with pytest.raises(ModelError, match="no `sensor` section"):
        AnomalyScorer.for_manifest(plain.manifest, plain.path)
    model = load(build_sensor_bundle(tmp_path, mean=mean, std=std, threshold=threshold))
    scorer = AnomalyScorer.for_manifest(model.manifest, model.path)
    other_fields = WindowConfig(kind="count", size=WINDOW, hop=HOP, fields=["cur", "vib"])
    with pytest.raises(ModelError, match="trained on 8"):
        scorer.check_window(other_fields, model.path)
    time_window = WindowConfig(kind="time", size=0.32, hop=0.16, fields=list(FIELDS))
    scorer.check_window(time_window, model.path)  # same features from time windows: fine
