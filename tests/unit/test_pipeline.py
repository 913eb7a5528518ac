"""FramePipeline: frames through every stage, failures counted and survived, stalls reported."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from runtime.backends.onnxruntime import OrtBackendConfig
from runtime.errors import ModelError, SinkError
from runtime.messages import (
    Alert,
    Classification,
    Detection,
    Frame,
    Inference,
    ModelInfo,
    RuleEvent,
    StageTimes,
)
from runtime.model import LoadedModel
from runtime.pipeline import AlertFactory, FramePipeline, Prepared
from runtime.processing.postprocess.classify import ClassifyPostprocessor
from runtime.processing.preprocess import Geometry
from runtime.rules.threshold import ThresholdConfig, ThresholdRule
from runtime.sinks.base import Sink
from runtime.sources.base import FrameSource, SourceStatus
from tests.fixture_models import COLOUR_LABELS, build_colour_bundle


class ListSource(FrameSource):
    """Hands out a fixed list of frames, then ends (or stalls, when ``stall``)."""

    config_type = ThresholdConfig  # unused: never built from config

    def __init__(self, frames: list[Frame], stall: bool = False, lossless: bool = True) -> None:
        self.frames = list(frames)
        self.stall = stall
        self._lossless = lossless

    @property
    def lossless(self) -> bool:
        return self._lossless

    @classmethod
    def from_config(cls, config: object) -> ListSource:  # type: ignore[override]
        return cls([])

    def start(self) -> None:
        """Nothing to open."""

    def read(self, timeout_s: float) -> Frame | None:
        if self.frames:
            return self.frames.pop(0)
        time.sleep(min(timeout_s, 0.01))
        return None

    def stop(self) -> None:
        self.frames.clear()

    @property
    def ended(self) -> bool:
        return not self.frames and not self.stall

    def status(self) -> SourceStatus:
        state = "reconnecting" if self.stall else "ended"
        return SourceStatus("cam", "list", state, 0, 0, 0, "connection refused")


class CollectSink(Sink):
    config_type = ThresholdConfig  # unused

    def __init__(self, fail: bool = False) -> None:
        self.alerts: list[Alert] = []
        self.fail = fail

    @classmethod
    def from_config(cls, config: object, context: object) -> CollectSink:  # type: ignore[override]
        return cls()

    def publish(self, alert: Alert) -> None:
        if self.fail:
            raise SinkError("broker says no")
        self.alerts.append(alert)


class FlakyPost(ClassifyPostprocessor):
    """Fails on the frame whose first pixel is 1: a decoder error mid-stream."""

    def decode(
        self,
        outputs: list[np.ndarray],
        geometry: Geometry,  # type: ignore[override]
    ) -> tuple[tuple[Classification, ...], tuple[Detection, ...]]:
        if outputs[0].shape[-1] == 3 and geometry.frame_width == 161:
            raise ModelError("output has NaN")
        return super().decode(outputs, geometry)


def frame(seq: int, bgr: tuple[int, int, int], width: int = 160) -> Frame:
    image = np.zeros((120, width, 3), np.uint8)
    image[:] = bgr
    now = time.monotonic_ns()
    return Frame("cam", seq, time.time_ns(), now, image)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    bundle = build_colour_bundle(tmp_path_factory.mktemp("models"))
    return LoadedModel.load(bundle, OrtBackendConfig())


def make_pipeline(model: LoadedModel, source: FrameSource, sinks: list[Sink]) -> FramePipeline:
    rule = ThresholdRule(
        "red", ThresholdConfig(type="threshold", labels=["red"], raise_score=0.9, raise_frames=2)
    )
    post = FlakyPost(COLOUR_LABELS, softmax=False, top_k=3, min_score=0.0, output=0)
    return FramePipeline("p", source, model, post, [("red", rule)], sinks, AlertFactory("gw"))


RED, BLUE = (0, 0, 255), (255, 0, 0)


def test_frames_become_alerts_and_a_bad_frame_is_survived(model: LoadedModel) -> None:
    frames = [
        frame(0, BLUE),
        frame(1, RED),
        frame(2, RED, width=161),
        frame(3, RED),
        frame(4, BLUE),
    ]
    sink, broken = CollectSink(), CollectSink(fail=True)
    pipeline = make_pipeline(model, ListSource(frames), [broken, sink])
    pipeline.run(threading.Event())
    assert pipeline.stats.frames_processed == 4
    assert pipeline.stats.frame_errors == 1
    assert pipeline.stats.errors_by_stage["inference"] == 1
    assert [(a.state, a.frame_seq) for a in sink.alerts] == [("raised", 3), ("cleared", 4)]
    assert [a.seq for a in sink.alerts] == [1, 2]
    assert pipeline.stats.sink_errors == 2, "the failing sink doesn't stop the other"
    assert set(sink.alerts[0].latency_ms) == {
        "queue",
        "preprocess",
        "infer",
        "postprocess",
        "publish",
        "total",
    }


class SlowPost(ClassifyPostprocessor):
    def decode(
        self,
        outputs: list[np.ndarray],
        geometry: Geometry,  # type: ignore[override]
    ) -> tuple[tuple[Classification, ...], tuple[Detection, ...]]:
        time.sleep(0.05)
        return super().decode(outputs, geometry)


def test_live_source_drops_stale_prepared_frames_and_infers_the_newest(model: LoadedModel) -> None:
    frames = [frame(i, RED) for i in range(40)]
    pipeline = make_pipeline(model, ListSource(frames, lossless=False), [])
    pipeline.postprocessor = SlowPost(
        COLOUR_LABELS, softmax=False, top_k=3, min_score=0.0, output=0
    )
    inferred: list[int] = []
    infer = pipeline.infer

    def spy(item: Prepared) -> list[Alert]:
        inferred.append(item.frame.seq)
        return infer(item)

    pipeline.infer = spy  # type: ignore[method-assign]
    pipeline.run(threading.Event())
    assert pipeline.stats.frames_dropped > 0
    assert pipeline.stats.frames_processed + pipeline.stats.frames_dropped == 40
    assert inferred == sorted(inferred) and inferred[-1] == 39, "newest frame always wins"


def test_a_stalled_source_is_reported(model: LoadedModel, caplog: pytest.LogCaptureFixture) -> None:
    pipeline = make_pipeline(model, ListSource([], stall=True), [])
    stop = threading.Event()
    thread = threading.Thread(
        target=pipeline.run, args=(stop,), kwargs={"read_timeout_s": 0.02, "stall_warning_s": 0.1}
    )
    with caplog.at_level(logging.WARNING):
        thread.start()
        time.sleep(0.4)
        stop.set()
        thread.join(2)
    assert not thread.is_alive()
    warnings = [r.getMessage() for r in caplog.records if "no frame from cam" in r.getMessage()]
    assert len(warnings) == 1, "rate-limited: one warning per interval"
    assert "reconnecting" in warnings[0] and "connection refused" in warnings[0]


def test_alert_seq_is_unique_across_pipelines_and_boot_id_per_boot() -> None:
    factory = AlertFactory("gw")
    f = frame(0, RED)
    inference = Inference("p", f, ModelInfo("m", "1", "0" * 64))
    event = RuleEvent("r", "raised", "info", "red", 1.0)
    times = StageTimes(f.captured_mono_ns, *(f.captured_mono_ns,) * 4)
    seqs: list[int] = []

    def burst() -> None:
        seqs.extend(factory.make("p", event, inference, times).seq for _ in range(500))

    threads = [threading.Thread(target=burst) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seqs) == list(range(1, 2001))
    assert AlertFactory("gw").boot_id != factory.boot_id


class ExplodingRule(ThresholdRule):
    """A rule with a bug: KeyError on every other frame."""

    calls = 0

    def evaluate(self, inference: Inference, now_mono_ns: int) -> list[RuleEvent]:
        ExplodingRule.calls += 1
        if ExplodingRule.calls % 2 == 0:
            raise KeyError("missing label")
        return super().evaluate(inference, now_mono_ns)


class FlakySource(ListSource):
    """``read`` raises once (a driver bug), then serves frames."""

    def __init__(self, frames: list[Frame]) -> None:
        super().__init__(frames)
        self.raised = False

    def read(self, timeout_s: float) -> Frame | None:
        if not self.raised:
            self.raised = True
            raise RuntimeError("driver hiccup")
        return super().read(timeout_s)


def test_unexpected_errors_in_any_stage_are_counted_and_survived(
    model: LoadedModel, caplog: pytest.LogCaptureFixture
) -> None:
    frames = [frame(i, RED) for i in range(6)]
    pipeline = make_pipeline(model, FlakySource(frames), [CollectSink()])
    pipeline.rules = [
        (
            "buggy",
            ExplodingRule(
                "buggy", ThresholdConfig(type="threshold", labels=["red"], raise_score=0.9)
            ),
        )
    ]
    with caplog.at_level(logging.WARNING):
        pipeline.run(threading.Event(), read_timeout_s=0.01)
    stats = pipeline.stats.snapshot()
    assert stats["frames_processed"] == 3
    assert stats["errors_by_stage"] == {"read": 1, "inference": 3}
    assert stats["frame_errors"] == 4
    assert "KeyError" in caplog.text, "an unexpected error is logged with its traceback"
