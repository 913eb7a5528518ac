"""StreamingRunner on a tiny real stateful ONNX model (an accumulator): state carried per key,
resets, the gap rule, LRU bounds, per-stream sessions and their closing, failed calls, and the
manifest checks around constants and state."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from runtime.backends.base import Backend
from runtime.backends.onnxruntime import OrtBackendConfig
from runtime.config.base import PluginConfig
from runtime.errors import ModelError
from runtime.messages import RuleEvent, SensorReading, WindowScore
from runtime.model import LoadedModel
from runtime.pipeline import AlertFactory
from runtime.processing.anomaly import AnomalyScorer
from runtime.processing.streaming import StreamingRunner
from runtime.processing.windows import Windower
from runtime.rules.sensor_base import SensorRule
from runtime.sensor_pipeline import SensorPipeline
from runtime.sources.sensor_base import SensorSource, SensorSourceContext
from tests.fixture_models import build_sensor_bundle
from tools.bundle import write_bundle

ONES = np.ones((1, 4), np.float32)


def accumulator_bytes() -> bytes:
    """total = state + gain * sum(x); returned as ``score`` and as the next ``state``."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    state = helper.make_tensor_value_info("state", TensorProto.FLOAT, [None, 1])
    gain = helper.make_tensor_value_info("gain", TensorProto.INT64, [])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])
    state_out = helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [None, 1])
    nodes = [
        helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=1),
        helper.make_node("Cast", ["gain"], ["g"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["s", "g"], ["gs"]),
        helper.make_node("Add", ["state", "gs"], ["total"]),
        helper.make_node("Identity", ["total"], ["score"]),
        helper.make_node("Identity", ["total"], ["state_out"]),
    ]
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(nodes, "accumulator", [x, state, gain], [score, state_out], [axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def manifest(**streaming: Any) -> dict[str, Any]:
    return {
        "backend": "onnxruntime",
        "inputs": [
            {"name": "x", "shape": [1, 4], "dtype": "float32"},
            {"name": "state", "shape": [None, 1], "dtype": "float32"},
            {"name": "gain", "shape": [], "dtype": "int64"},
        ],
        "outputs": [
            {"name": "score", "shape": [None, 1], "dtype": "float32"},
            {"name": "state_out", "shape": [None, 1], "dtype": "float32"},
        ],
        "streaming": {
            "state": [{"input": "state", "output": "state_out"}],
            "constants": {"gain": 10},
            **streaming,
        },
    }


def load(tmp_path: Path, name: str = "acc", **fields: Any) -> LoadedModel:
    spec = {**manifest(), **fields}
    bundle = write_bundle(tmp_path, name, "1.0.0", accumulator_bytes(), spec)
    return LoadedModel.load(bundle, OrtBackendConfig(type="onnxruntime"))


@pytest.fixture
def model(tmp_path: Path) -> LoadedModel:
    return load(tmp_path)


def score(runner: StreamingRunner, key: str, **kw: Any) -> float:
    return float(runner.run(key, ONES, **kw)[0][0, 0])


def test_state_is_carried_per_key_and_keys_are_independent(model: LoadedModel) -> None:
    runner = StreamingRunner(model)
    assert [score(runner, "a") for _ in range(3)] == [40.0, 80.0, 120.0]
    assert score(runner, "b") == 40.0
    assert score(runner, "a") == 160.0
    assert runner.keys == ["b", "a"]
    assert runner.stats.created == 2


def test_reset_starts_a_key_from_zero(model: LoadedModel) -> None:
    runner = StreamingRunner(model)
    score(runner, "a")
    score(runner, "b")
    assert runner.reset("a") is True
    assert runner.reset("never-seen") is False
    assert score(runner, "a") == 40.0
    assert score(runner, "b") == 80.0
    assert runner.stats.resets == 1


def test_a_window_long_after_the_previous_one_starts_afresh(tmp_path: Path) -> None:
    model = load(tmp_path, streaming={**manifest()["streaming"], "reset_after_gap_s": 1.0})
    runner = StreamingRunner(model)
    s = 1_000_000_000
    assert score(runner, "a", start_ns=0, end_ns=s) == 40.0
    assert score(runner, "a", start_ns=2 * s, end_ns=3 * s) == 80.0  # exactly 1 s later: carried
    assert score(runner, "a", start_ns=4 * s + 1, end_ns=5 * s) == 40.0  # more: afresh
    assert (runner.stats.gap_resets, runner.stats.resets) == (1, 1)


def test_without_reset_after_gap_s_a_long_pause_keeps_the_state(model: LoadedModel) -> None:
    runner = StreamingRunner(model)
    score(runner, "a", start_ns=0, end_ns=1)
    assert score(runner, "a", start_ns=10**12, end_ns=10**12 + 1) == 80.0


def test_least_recently_used_keys_are_evicted_past_max_streams(model: LoadedModel) -> None:
    runner = StreamingRunner(model, max_streams=2)
    score(runner, "a")
    score(runner, "b")
    score(runner, "a")  # a is now the most recent
    score(runner, "c")  # evicts b
    assert runner.keys == ["a", "c"]
    assert score(runner, "a") == 120.0
    assert score(runner, "b") == 40.0  # evicted: from zero again (and evicts c)
    assert runner.stats.evicted == 2
    assert runner.status()["streams"] == 2


def test_per_stream_instances_give_each_key_a_session_closed_on_eviction_and_close(
    tmp_path: Path,
) -> None:
    model = load(tmp_path, streaming={**manifest()["streaming"], "per_stream_instances": True})
    made: list[Backend] = []

    def make() -> Backend:
        made.append(model.new_backend())
        return made[-1]

    runner = StreamingRunner(model, max_streams=2, make_backend=make)
    score(runner, "a")
    score(runner, "a")
    score(runner, "b")
    assert len(made) == 2 and made[0] is not model.backend
    score(runner, "c")  # evicts a: its session is closed
    feeds = model.feeds(ONES)
    with pytest.raises(ModelError, match="after close"):
        made[0].run(feeds)
    made[1].run(feeds)  # b's is still open
    runner.reset("b")
    with pytest.raises(ModelError, match="after close"):
        made[1].run(feeds)
    runner.close()
    with pytest.raises(ModelError, match="after close"):
        made[2].run(feeds)
    assert runner.keys == []
    status = runner.status()
    assert (status["instances_created"], status["instances_closed"]) == (3, 3)
    assert score(runner, "a") == 40.0  # usable after close: a new session
    assert len(made) == 4
    model.backend.run(feeds)  # the shared session was never closed
    runner.close()
    model.close()


def test_a_failed_call_starts_the_key_afresh(model: LoadedModel) -> None:
    runner = StreamingRunner(model)
    score(runner, "a")
    with pytest.raises(ModelError, match="onnxruntime run failed"):
        runner.run("a", np.ones((1, 5), np.float32))
    assert runner.keys == []
    assert score(runner, "a") == 40.0


def test_loaded_model_feeds_constants_and_zero_state(model: LoadedModel) -> None:
    feeds = model.feeds(ONES)
    assert feeds["gain"].shape == () and feeds["gain"].dtype == np.int64
    assert feeds["state"].shape == (1, 1) and not feeds["state"].any()
    assert model.sample_outputs()[0].tolist() == [[0.0]]
    assert model.infer(ONES, state={"state": np.array([[1.5]])})[0].tolist() == [[41.5]]


def test_manifest_problems_are_named(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="'gain' has 2 values"):
        load(tmp_path, "two", streaming={**manifest()["streaming"], "constants": {"gain": [1, 2]}})
    with pytest.raises(ModelError, match=r"other inputs \['gain'\] must be declared"):
        load(tmp_path, "unfed", streaming={"state": [{"input": "state", "output": "state_out"}]})
    wrong = load(
        tmp_path,
        "wrong",
        streaming={"state": [{"input": "state", "output": "nope"}], "constants": {"gain": 1}},
    )
    with pytest.raises(ModelError, match=r"state output\(s\) \['nope'\]"):
        StreamingRunner(wrong)
    plain = {k: v for k, v in manifest().items() if k != "streaming"}
    with pytest.raises(ModelError, match="must be declared in the manifest's `streaming`"):
        load(tmp_path, "plain", **{"streaming": None, **plain})


def test_models_without_streaming_get_no_runner(model: LoadedModel, tmp_path: Path) -> None:
    assert StreamingRunner.for_model(model) is not None
    plain = load_plain(tmp_path)
    assert StreamingRunner.for_model(plain) is None
    with pytest.raises(ModelError, match="no `streaming` section"):
        StreamingRunner(plain)


def load_plain(tmp_path: Path) -> LoadedModel:
    mean, std = np.zeros(8), np.ones(8)
    bundle = build_sensor_bundle(tmp_path, mean=mean, std=std, threshold=1.0)
    return LoadedModel.load(bundle, OrtBackendConfig(type="onnxruntime"))


SENSOR = {
    "fields": ["f0", "f1", "f2", "f3"],
    "window": {"kind": "count", "size": 3, "hop": 3},
    "features": {"raw": True, "time": []},
    "feature_names": [f"f{j}.raw_{i}" for i in range(3) for j in range(4)],
    "score_output": "score",
    "threshold": 0.5,
}


@pytest.mark.parametrize(
    ("shape", "fits"),
    [
        ([None, 12], True),
        ([1, 12], True),
        ([1, 3, 4], True),
        ([None, 2, 2, 3], True),
        ([1, 13], False),
        ([1, 3, 5], False),
        ([1, None, 4], False),
        ([12], False),
    ],
)
def test_sensor_inputs_may_have_more_dims_holding_the_features(
    shape: list[int | None], fits: bool
) -> None:
    from runtime.manifest import manifest_model

    spec = manifest_model().model_validate(
        {
            "name": "m",
            "version": "1",
            "file": "m.onnx",
            "sha256": "0" * 64,
            "inputs": [{"name": "x", "shape": shape}],
            "outputs": [{"name": "score", "shape": [None]}],
            "sensor": SENSOR,
        }
    )
    if not fits:
        with pytest.raises(ModelError, match="sensor models take one input"):
            AnomalyScorer.for_manifest(spec, Path("m.onnx"))
        return
    scorer = AnomalyScorer.for_manifest(spec, Path("m.onnx"))
    rows = np.arange(24, dtype=np.float32).reshape(2, 12)
    inputs = scorer.model_input(rows)
    assert inputs.shape == (2, *[d if isinstance(d, int) else 12 for d in shape[1:]])
    assert inputs.reshape(2, -1).tolist() == rows.tolist()


class ListSource(SensorSource):
    """Hands out one batch of readings, then ends (a test double for the source)."""

    config_type = PluginConfig

    def __init__(self, readings: list[SensorReading]) -> None:
        self._pending = [readings]

    @classmethod
    def from_config(cls, config: PluginConfig, context: SensorSourceContext) -> ListSource:
        raise NotImplementedError

    def start(self) -> None:
        return None

    def read(self, timeout_s: float, max_readings: int = 4096) -> list[SensorReading]:
        return self._pending.pop() if self._pending else []

    def stop(self) -> None:
        self._pending.clear()

    @property
    def ended(self) -> bool:
        return not self._pending

    def status(self) -> dict[str, object]:
        return {"type": "list"}


class Scores(SensorRule):
    config_type = PluginConfig

    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []

    @classmethod
    def from_config(cls, config: PluginConfig, name: str, model_threshold: float) -> Scores:
        raise NotImplementedError

    def on_window(self, window: WindowScore, now_mono_ns: int) -> list[RuleEvent]:
        self.seen.append((window.key, window.score))
        return []


def test_sensor_pipeline_scores_each_key_with_its_state_resets_on_gaps_and_closes_sessions(
    tmp_path: Path,
) -> None:
    """Raw count windows of 4 samples feed the accumulator; a hole in b's readings resets b."""
    model = load(
        tmp_path,
        streaming={**manifest()["streaming"], "per_stream_instances": True},
        sensor={
            "fields": ["v"],
            "window": {"kind": "count", "size": 4, "hop": 4},
            "features": {"raw": True, "time": []},
            "feature_names": [f"v.raw_{i}" for i in range(4)],
            "score_output": "score",
            "threshold": 100.0,
        },
    )
    s = 1_000_000_000
    a = [SensorReading("a", i * s // 10, 0, ("v",), np.array([1.0])) for i in range(12)]
    b = [SensorReading("b", i * s // 10, 0, ("v",), np.array([0.5])) for i in range(4)]
    b += [SensorReading("b", 10 * s + i * s // 10, 0, ("v",), np.array([0.5])) for i in range(4)]
    scorer = AnomalyScorer.for_manifest(model.manifest, model.path)
    rule = Scores()
    pipeline = SensorPipeline(
        "p",
        ListSource(sorted(a + b, key=lambda r: r.ts_ns)),
        Windower(scorer.default_window(0.0, gap_s=1.0)),
        model,
        scorer,
        [("scores", rule)],
        [],
        AlertFactory("gw"),
    )
    pipeline.run(threading.Event())
    assert [v for k, v in rule.seen if k == "a"] == [40.0, 80.0, 120.0]
    assert [v for k, v in rule.seen if k == "b"] == [20.0, 20.0]  # the gap started b afresh
    status = pipeline.status()["streams"]
    assert isinstance(status, dict)
    assert (status["instances_created"], status["resets"]) == (3, 1)
    assert status["instances_closed"] == 3  # all closed when run() returned
    assert status["streams"] == 0
    model.close()
