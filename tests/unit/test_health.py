"""Heartbeats, the watchdog's decisions (on a fake clock), the supervisor's restarts, and a real
FramePipeline whose model call hangs in a backend that can't be interrupted."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from pydantic import ValidationError

from runtime.backends import litert
from runtime.backends.base import Backend, TensorInfo
from runtime.backends.litert import LiteRtBackend, LiteRtBackendConfig
from runtime.backends.onnxruntime import OrtBackend, OrtBackendConfig
from runtime.config.base import PluginConfig
from runtime.errors import ModelError
from runtime.health import (
    PipelineAbandoned,
    PipelineHealth,
    PipelineStuck,
    StageClock,
    StageTimeouts,
    Supervisor,
    Watchdog,
    WatchdogConfig,
    failed_health,
)
from runtime.messages import Alert, Frame, SensorReading
from runtime.model import LoadedModel
from runtime.pipeline import AlertFactory, FramePipeline, PipelineStats
from runtime.processing.anomaly import AnomalyScorer
from runtime.processing.postprocess.classify import ClassifyPostprocessor
from runtime.processing.windows import Windower
from runtime.registry import import_submodules
from runtime.rules.sensor_base import SENSOR_RULES
from runtime.rules.threshold import ThresholdConfig, ThresholdRule
from runtime.sensor_pipeline import SensorPipeline
from runtime.sinks.base import Sink, SinkContext
from runtime.sources._backoff import Backoff
from runtime.sources.base import FrameSource, SourceStatus
from runtime.sources.sensor_base import SensorSource, SensorSourceContext
from tests.fixture_models import (
    COLOUR_LABELS,
    SENSOR_FIELDS,
    build_colour_bundle,
    build_sensor_bundle,
    sensor_feature_names,
)
from tests.slow_models import build_slow_colour_bundle
from tools import tflite_builders

LOGGER = "runtime.health"
S = 1_000_000_000  # ns


# -- heartbeats and config ------------------------------------------------------------------------


def test_a_clock_is_busy_between_begin_and_end() -> None:
    clock = StageClock()
    assert clock.busy_since_ns is None
    token = clock.begin()
    assert clock.busy_since_ns == token
    assert clock.thread_ident == threading.get_ident()
    assert clock.end(token) >= token
    assert clock.busy_since_ns is None


def test_a_call_given_up_leaves_the_clock_to_the_next_one() -> None:
    clock = StageClock()
    stale = clock.begin()
    time.sleep(0.001)  # a distinct token
    current = clock.begin()
    clock.end(stale)  # the abandoned call returns late
    assert clock.busy_since_ns == current
    clock.end(current)
    assert clock.busy_since_ns is None


def test_timeouts_come_from_the_device_unless_the_pipeline_overrides_them() -> None:
    config = WatchdogConfig(inference_timeout_s=30, capture_timeout_s=12)
    override = StageTimeouts(inference_timeout_s=90)
    assert config.timeout_s("inference", override) == 90
    assert config.timeout_s("capture", override) == 12
    assert config.timeout_s("prepare") == 10


def test_restart_backoff_bounds_are_checked() -> None:
    with pytest.raises(
        ValidationError, match=r"restart_max_s \(1.0\) must be >= restart_initial_s"
    ):
        WatchdogConfig(restart_initial_s=5, restart_max_s=1)


def test_health_status_keys_and_states() -> None:
    clock = StageClock()
    health = PipelineHealth({"inference": clock})
    status = health.status()
    assert status == {
        "state": "running",
        "stuck": {},
        "restarts": 0,
        "last_progress_age_s": None,
        "busy_s": {},
        "last_stuck": None,
    }
    clock.begin()
    health.note_stuck("inference", "inference stuck for 31.0 s")
    status = health.status()
    assert status["state"] == "stuck"
    assert status["stuck"] == {"inference": 1}
    assert list(status["busy_s"]) == ["inference"]  # type: ignore[call-overload]
    health.restarting()
    assert health.state == "restarting" and health.restarts == 1
    health.begin_run()
    health.recovered("inference")
    health.last_progress_ns = time.monotonic_ns()
    status = health.status()
    assert status["state"] == "running"
    assert 0 <= status["last_progress_age_s"] < 1  # type: ignore[operator]
    assert failed_health("model missing")["state"] == "failed"
    assert failed_health("model missing")["last_stuck"] == "model missing"


# -- the watchdog's decisions, on a fake clock ----------------------------------------------------


class FakePipeline:
    """A ``Watched`` pipeline whose clocks the test drives."""

    def __init__(self, name: str, stages: tuple[str, ...], cancels: bool = True) -> None:
        self.name = name
        self.clocks = {s: StageClock() for s in stages}
        self.health = PipelineHealth(self.clocks)
        self.cancels = cancels
        self.interrupts: list[tuple[str, int, str]] = []
        self.abandoned: list[int] = []
        self.fail_interrupt = False

    def interrupt(self, stage: str, thread_ident: int, reason: str) -> bool:
        if self.fail_interrupt:
            raise RuntimeError("interrupt bug")
        self.interrupts.append((stage, thread_ident, reason))
        return stage == "capture" or self.cancels

    def abandon(self, thread_ident: int) -> None:
        self.abandoned.append(thread_ident)
        self.health.abandon(thread_ident)


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000 * S

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def watchdog(fake_time: FakeTime) -> Watchdog:
    config = WatchdogConfig(
        capture_timeout_s=15, prepare_timeout_s=10, inference_timeout_s=30, cancel_grace_s=2
    )
    return Watchdog(config, clock=fake_time)


def busy(clock: StageClock, since_ns: int) -> int:
    clock.busy_since_ns = since_ns
    clock.thread_ident = 4242
    return since_ns


@pytest.mark.parametrize(
    ("stage", "timeout_s", "restart", "action"),
    [
        ("capture", 15, False, "reconnecting on a new thread"),
        ("prepare", 10, True, "restarting the pipeline"),
        ("inference", 30, True, "run cancelled, restarting the pipeline"),
    ],
)
def test_a_stage_past_its_timeout_is_reported_counted_and_recovered(
    fake_time: FakeTime,
    caplog: pytest.LogCaptureFixture,
    stage: str,
    timeout_s: int,
    restart: bool,
    action: str,
) -> None:
    dog = watchdog(fake_time)
    pipeline = FakePipeline("door", ("capture", "prepare", "inference"))
    dog.watch(pipeline, respawn=lambda: None)
    busy(pipeline.clocks[stage], fake_time.now)
    fake_time.now += timeout_s * S - 1
    dog.check()
    assert pipeline.health.status()["stuck"] == {} and not pipeline.interrupts

    fake_time.now += 1
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        dog.check()
        dog.check()  # the same stuck call is handled once
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert record.getMessage() == (
        f"pipeline door: {stage} stuck for {timeout_s}.0 s (timeout {timeout_s} s): {action}"
    )
    assert pipeline.health.status()["stuck"] == {stage: 1}
    assert pipeline.health.state == "stuck"
    assert (pipeline.health.restart_requested == stage) is restart
    expected = [] if stage == "prepare" else [(stage, 4242, f"{stage} stuck for {timeout_s}.0 s")]
    assert [(s, i, r.split(" (")[0]) for s, i, r in pipeline.interrupts] == expected

    pipeline.clocks[stage].busy_since_ns = None  # the call returned
    dog.check()
    assert pipeline.health.status()["state"] == "running"
    assert pipeline.abandoned == []


def test_a_cancelled_inference_that_does_not_return_is_abandoned_after_the_grace(
    fake_time: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    dog = watchdog(fake_time)
    pipeline = FakePipeline("door", ("inference",))
    respawned: list[str] = []
    dog.watch(pipeline, respawn=lambda: respawned.append("door"))
    busy(pipeline.clocks["inference"], fake_time.now)
    fake_time.now += 30 * S
    dog.check()
    assert pipeline.interrupts and not pipeline.abandoned
    fake_time.now += 2 * S - 1
    dog.check()
    assert not pipeline.abandoned
    fake_time.now += 1
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        dog.check()
    assert pipeline.abandoned == [4242]
    assert respawned == ["door"]
    messages = [r.getMessage() for r in caplog.records]
    assert "pipeline door: the cancelled inference did not return within 2.0 s" in messages
    assert any("thread 4242 abandoned in inference" in m for m in messages)
    fake_time.now += 60 * S
    dog.check()
    assert respawned == ["door"], "abandoned once"
    assert pipeline.health.status()["stuck"] == {"inference": 1}


def test_an_inference_that_cannot_be_cancelled_is_abandoned_at_once(fake_time: FakeTime) -> None:
    dog = watchdog(fake_time)
    pipeline = FakePipeline("door", ("inference",), cancels=False)
    respawned: list[str] = []
    dog.watch(pipeline, respawn=lambda: respawned.append("door"))
    busy(pipeline.clocks["inference"], fake_time.now)
    fake_time.now += 30 * S
    dog.check()
    assert pipeline.abandoned == [4242] and respawned == ["door"]
    assert pipeline.health.status()["last_stuck"] == (
        "inference stuck for 30.0 s (timeout 30 s): the backend cannot be interrupted, "
        "abandoning its thread"
    )


def test_without_a_supervisor_an_uninterruptible_inference_fails_the_pipeline(
    fake_time: FakeTime,
) -> None:
    dog = watchdog(fake_time)
    pipeline = FakePipeline("door", ("inference",), cancels=False)
    dog.watch(pipeline)
    busy(pipeline.clocks["inference"], fake_time.now)
    fake_time.now += 31 * S
    dog.check()
    assert pipeline.abandoned == []
    assert pipeline.health.state == "failed"
    assert "no supervisor" in str(pipeline.health.status()["last_stuck"])


def test_a_stage_stuck_again_later_is_counted_again(fake_time: FakeTime) -> None:
    dog = watchdog(fake_time)
    pipeline = FakePipeline("door", ("capture",))
    dog.watch(pipeline)
    clock = pipeline.clocks["capture"]
    for _ in range(2):
        busy(clock, fake_time.now)
        fake_time.now += 16 * S
        dog.check()
        fake_time.now += 1
    assert pipeline.health.status()["stuck"] == {"capture": 2}


def test_per_pipeline_timeouts_override_the_device_ones(fake_time: FakeTime) -> None:
    dog = watchdog(fake_time)
    slow = FakePipeline("slow", ("inference",))
    slow.health.timeouts = StageTimeouts(inference_timeout_s=120)
    fast = FakePipeline("fast", ("inference",))
    dog.watch(slow)
    dog.watch(fast)
    busy(slow.clocks["inference"], fake_time.now)
    busy(fast.clocks["inference"], fake_time.now)
    fake_time.now += 60 * S
    dog.check()
    assert slow.health.status()["stuck"] == {}
    assert fast.health.status()["stuck"] == {"inference": 1}


def test_trouble_checking_one_pipeline_never_stops_the_others(
    fake_time: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    dog = watchdog(fake_time)
    broken, healthy = FakePipeline("broken", ("inference",)), FakePipeline("ok", ("inference",))
    broken.fail_interrupt = True
    dog.watch(broken)
    dog.watch(healthy)
    busy(broken.clocks["inference"], fake_time.now)
    busy(healthy.clocks["inference"], fake_time.now)
    fake_time.now += 30 * S
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        dog.check()
    assert healthy.health.status()["stuck"] == {"inference": 1}
    failed = [r for r in caplog.records if "checking pipeline broken failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None


# -- the supervisor ---------------------------------------------------------------------------------


class ScriptedPipeline:
    """A ``Supervised`` pipeline whose runs raise what the script says, then wait for stop."""

    def __init__(self, script: list[BaseException | None]) -> None:
        self.name = "scripted"
        self.health = PipelineHealth({})
        self.stats = PipelineStats()
        self.script = script
        self.runs = 0

    def run(self, stop: threading.Event) -> None:
        self.health.begin_run()
        self.runs += 1
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        stop.wait()

    def interrupt(self, stage: str, thread_ident: int, reason: str) -> bool:
        return False

    def abandon(self, thread_ident: int) -> None:
        self.health.abandon(thread_ident)


def wait_for(predicate: Callable[[], bool], timeout_s: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        time.sleep(0.005)


def test_the_supervisor_restarts_after_a_crash_and_a_stuck_stage_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline = ScriptedPipeline([MemoryError("boom"), PipelineStuck("prepare stage stuck")])
    stop = threading.Event()
    restarts: list[int] = []
    supervisor = Supervisor(
        pipeline, stop, Backoff(0.01, 0.02, jitter=0), lambda: restarts.append(1)
    )
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        supervisor.start()
        wait_for(lambda: pipeline.runs == 3, what="third run")
        stop.set()
        supervisor.join(2)
    assert not supervisor.is_alive()
    assert len(restarts) == 2 and pipeline.health.restarts == 2
    assert pipeline.health.state == "running"
    assert pipeline.stats.errors_by_stage == {"crash": 1}, "stuck is not a crash"
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "unexpected error" in tracebacks[0].getMessage()
    assert any(
        r.getMessage().startswith("pipeline scripted restarts in 0.0") for r in caplog.records
    )


def test_an_abandoned_thread_leaves_without_a_restart() -> None:
    pipeline = ScriptedPipeline([PipelineAbandoned("late return")])
    stop = threading.Event()
    supervisor = Supervisor(pipeline, stop, Backoff(0.01, 0.02))
    supervisor.start()
    supervisor.join(2)
    assert not supervisor.is_alive()
    assert pipeline.runs == 1 and pipeline.health.restarts == 0


# -- a real pipeline stuck in a model call that can't be interrupted ------------------------------


def mostly_green(x: NDArray[np.generic]) -> bool:
    return float(np.asarray(x, np.float32)[:, 1].mean()) > 0.5


class GatedBackend(Backend):
    """The real backend, except that an input ``hangs`` says so blocks until ``gate`` is set;
    like LiteRT it can't be cancelled."""

    config_type = PluginConfig

    def __init__(
        self,
        real: Backend,
        gate: threading.Event,
        hangs: Callable[[NDArray[np.generic]], bool] = mostly_green,
    ) -> None:
        self.real = real
        self.gate = gate
        self.hangs = hangs
        self.blocked = threading.Event()

    @classmethod
    def from_config(cls, config: PluginConfig, model_path: Path) -> GatedBackend:
        raise NotImplementedError

    @property
    def inputs(self) -> list[TensorInfo]:
        return self.real.inputs

    @property
    def outputs(self) -> list[TensorInfo]:
        return self.real.outputs

    @property
    def requested_providers(self) -> list[str]:
        return self.real.requested_providers

    @property
    def active_providers(self) -> list[str]:
        return self.real.active_providers

    def run(self, feeds: dict[str, NDArray[np.generic]]) -> list[NDArray[np.generic]]:
        if self.hangs(next(iter(feeds.values()))):
            self.blocked.set()
            self.gate.wait()
        return self.real.run(feeds)


class QueueSource(FrameSource):
    """A live source fed by the test."""

    config_type = ThresholdConfig  # unused

    def __init__(self) -> None:
        self.frames: queue.Queue[Frame] = queue.Queue()

    @classmethod
    def from_config(cls, config: PluginConfig) -> QueueSource:
        return cls()

    def start(self) -> None:
        """Nothing to open."""

    def read(self, timeout_s: float) -> Frame | None:
        try:
            return self.frames.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def stop(self) -> None:
        """Nothing to release."""

    @property
    def ended(self) -> bool:
        return False

    def status(self) -> SourceStatus:
        return SourceStatus("cam", "queue", "running", 0, 0, 0, None)


class CollectSink(Sink):
    config_type = ThresholdConfig  # unused

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    @classmethod
    def from_config(cls, config: PluginConfig, context: SinkContext) -> CollectSink:
        return cls()

    def publish(self, alert: Alert) -> None:
        self.alerts.append(alert)


def frame(seq: int, bgr: tuple[int, int, int]) -> Frame:
    image = np.zeros((64, 64, 3), np.uint8)
    image[:] = bgr
    return Frame("cam", seq, time.time_ns(), time.monotonic_ns(), image)


RED, GREEN, BLUE = (0, 0, 255), (0, 255, 0), (255, 0, 0)


def named(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    gate = threading.Event()
    yield gate
    gate.set()  # never leave a thread blocked behind


def test_a_pipeline_stuck_in_an_uninterruptible_model_goes_on_with_a_fresh_session(
    tmp_path: Path, gate: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    loaded = LoadedModel.load(build_colour_bundle(tmp_path), OrtBackendConfig())
    gated = GatedBackend(loaded.backend, gate)
    model = replace(loaded, backend=gated)
    source, sink = QueueSource(), CollectSink()
    rule = ThresholdRule(
        "colour",
        ThresholdConfig(type="threshold", labels=["red", "green"], raise_score=0.9, clear_frames=1),
    )
    post = ClassifyPostprocessor(COLOUR_LABELS, softmax=False, top_k=3, min_score=0.0, output=0)
    pipeline = FramePipeline(
        "door", source, model, post, [("colour", rule)], [sink], AlertFactory("gw")
    )
    stop = threading.Event()
    config = WatchdogConfig(
        check_interval_s=0.02, inference_timeout_s=0.3, restart_initial_s=0.05, restart_max_s=0.1
    )
    supervisor = Supervisor(pipeline, stop, config.backoff())
    dog = Watchdog(config)
    dog.watch(pipeline, supervisor.respawn)
    caplog.set_level(logging.INFO)
    supervisor.start()
    dog.start()
    try:
        source.frames.put(frame(0, GREEN))
        assert gated.blocked.wait(5), "the green frame reached the model"
        (old_thread,) = named("pipeline-door")
        (old_preparer,) = named("prepare-door")
        wait_for(lambda: pipeline.model is not model, what="a fresh session")
        # the old run's prepare thread was halted: it leaves after its current read
        old_preparer.join(5)
        assert not old_preparer.is_alive()
        assert pipeline.model.backend is not gated and pipeline.model.backend is not loaded.backend
        source.frames.put(frame(1, RED))
        wait_for(lambda: len(sink.alerts) == 1, what="the red frame's alert")
        assert supervisor.is_alive() and old_thread.is_alive(), "the old thread is still blocked"

        gate.set()  # the stuck call returns: its thread leaves without finishing its frame
        old_thread.join(5)
        assert not old_thread.is_alive()
        source.frames.put(frame(2, BLUE))
        wait_for(lambda: len(sink.alerts) == 2, what="the blue frame's clear")
    finally:
        stop.set()
        dog.stop()
        supervisor.join(5)
        loaded.close()
    assert [(a.state, a.frame_seq, a.label) for a in sink.alerts] == [
        ("raised", 1, "red"),
        ("cleared", 2, "red"),
    ]
    status = pipeline.status()
    health = status["health"]
    assert health["stuck"] == {"inference": 1}  # type: ignore[index]
    assert health["restarts"] == 1  # type: ignore[index]
    assert status["frames_processed"] == 2, "the abandoned frame is not counted"
    assert pipeline.model is model, "the fresh session is closed when the pipeline stops"
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith("pipeline door: inference stuck for 0.")
        and m.endswith("the backend cannot be interrupted, abandoning its thread")
        for m in messages
    )
    assert "pipeline door: an abandoned thread's call returned; it leaves" in messages


@contextlib.contextmanager
def supervised(pipeline: Any) -> Iterator[None]:
    """Run ``pipeline`` under a Supervisor and a fast Watchdog; both stopped on exit."""
    stop = threading.Event()
    config = WatchdogConfig(check_interval_s=0.02, restart_initial_s=0.05, restart_max_s=0.1)
    supervisor = Supervisor(pipeline, stop, config.backoff())
    dog = Watchdog(config)
    dog.watch(pipeline, supervisor.respawn)
    supervisor.start()
    dog.start()
    try:
        yield
    finally:
        stop.set()
        dog.stop()
        supervisor.join(5)


def test_a_pipeline_stuck_in_preprocessing_restarts_with_a_new_prepare_thread(
    tmp_path: Path, gate: threading.Event
) -> None:
    model = LoadedModel.load(build_colour_bundle(tmp_path), OrtBackendConfig())
    source, sink = QueueSource(), CollectSink()
    rule = ThresholdRule("red", ThresholdConfig(type="threshold", labels=["red"], raise_score=0.9))
    post = ClassifyPostprocessor(COLOUR_LABELS, softmax=False, top_k=3, min_score=0.0, output=0)
    pipeline = FramePipeline(
        "door",
        source,
        model,
        post,
        [("red", rule)],
        [sink],
        AlertFactory("gw"),
        watchdog=StageTimeouts(prepare_timeout_s=0.3),
    )
    real = pipeline.preprocessor
    blocked = threading.Event()

    def preprocess(image: NDArray[np.uint8]) -> Any:
        if image[..., 1].mean() > 127:  # a green frame hangs the (BGR) preprocessing
            blocked.set()
            gate.wait()
        return real(image)

    pipeline.preprocessor = preprocess  # type: ignore[assignment]
    try:
        with supervised(pipeline):
            source.frames.put(frame(0, GREEN))
            assert blocked.wait(5)
            (old_preparer,) = named("prepare-door")
            wait_for(lambda: pipeline.health.restarts == 1, what="a restart")
            source.frames.put(frame(1, RED))
            wait_for(lambda: len(sink.alerts) == 1, what="the red frame's alert")
            assert old_preparer.is_alive() and len(named("prepare-door")) == 2
            gate.set()
            old_preparer.join(5)
            assert not old_preparer.is_alive(), "released, it sees its run is over and leaves"
    finally:
        model.close()
    status = pipeline.status()
    assert status["health"]["stuck"] == {"prepare": 1}  # type: ignore[index]
    assert status["errors_by_stage"] == {}, "a stuck stage is not a crash"
    assert [a.frame_seq for a in sink.alerts] == [1]
    assert status["frames_processed"] == 1


class QueueSensorSource(SensorSource):
    """Readings fed by the test."""

    config_type = PluginConfig

    def __init__(self) -> None:
        self.batches: queue.Queue[list[SensorReading]] = queue.Queue()

    @classmethod
    def from_config(cls, config: PluginConfig, context: SensorSourceContext) -> QueueSensorSource:
        raise NotImplementedError

    def start(self) -> None:
        """Nothing to open."""

    def read(self, timeout_s: float, max_readings: int = 4096) -> list[SensorReading]:
        try:
            return self.batches.get(timeout=timeout_s)
        except queue.Empty:
            return []

    def stop(self) -> None:
        """Nothing to release."""

    @property
    def ended(self) -> bool:
        return False

    def status(self) -> dict[str, object]:
        return {"type": "queue", "state": "running", "dropped": {}}


def window_of(key: str, vib: float) -> list[SensorReading]:
    """One count window (16 readings) of ``key``."""
    now = time.time_ns()
    fields = tuple(SENSOR_FIELDS)
    return [
        SensorReading(key, now + i * 20_000_000, time.monotonic_ns(), fields, np.array([vib, 5.0]))
        for i in range(16)
    ]


def test_a_sensor_pipeline_stuck_in_its_model_goes_on_with_a_fresh_session(
    tmp_path: Path, gate: threading.Event
) -> None:
    n = len(sensor_feature_names())
    bundle = build_sensor_bundle(tmp_path, mean=np.zeros(n), std=np.ones(n), threshold=1e9)
    loaded = LoadedModel.load(bundle, OrtBackendConfig())
    gated = GatedBackend(loaded.backend, gate, lambda x: float(np.abs(x).max()) > 1000)
    model = replace(loaded, backend=gated)
    scorer = AnomalyScorer.for_manifest(model.manifest, model.path)
    source = QueueSensorSource()
    import_submodules("runtime.rules")
    rule_type = SENSOR_RULES.get("threshold")
    rule = rule_type.from_config(
        rule_type.config_type.model_validate({"type": "threshold"}), "anomaly", scorer.threshold
    )
    pipeline = SensorPipeline(
        "pumps",
        source,
        Windower(scorer.default_window(0.0, None)),
        model,
        scorer,
        [("anomaly", rule)],
        [],
        AlertFactory("gw"),
        watchdog=StageTimeouts(inference_timeout_s=0.3),
    )
    try:
        with supervised(pipeline):
            source.batches.put(window_of("hot", 1e4))
            assert gated.blocked.wait(5)
            (old_thread,) = named("pipeline-pumps")
            wait_for(lambda: pipeline.model is not model, what="a fresh session")
            source.batches.put(window_of("cold", 0.1))
            wait_for(lambda: pipeline.stats.windows_scored == 1, what="the cold window scored")
            gate.set()
            old_thread.join(5)
            assert not old_thread.is_alive()
    finally:
        loaded.close()
    status = pipeline.status()
    assert status["windows_scored"] == 1, "the hot window died with its thread"
    assert status["health"]["stuck"] == {"inference": 1}  # type: ignore[index]
    assert status["health"]["restarts"] == 1  # type: ignore[index]
    assert pipeline.model is model


def test_closing_a_litert_interpreter_busy_in_a_call_does_not_wait_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An abandoned thread may sit in an invoke for good: closing leaves the interpreter to it
    instead of blocking the app's shutdown, and closes normally once it is free."""
    path = tmp_path / "m.tflite"
    path.write_bytes(tflite_builders.float_classifier(np.eye(3, dtype=np.float32), np.zeros(3)))
    backend = LiteRtBackend.from_config(LiteRtBackendConfig(), path)
    monkeypatch.setattr(litert, "CLOSE_WAIT_S", 0.05)
    in_call, release = threading.Event(), threading.Event()

    def busy_call() -> None:
        with backend._lock:  # what run() holds during an invoke
            in_call.set()
            release.wait(5)

    thread = threading.Thread(target=busy_call)
    thread.start()
    try:
        assert in_call.wait(5)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING):
            backend.close()
        assert time.monotonic() - started < 1
        assert "LiteRT interpreter still busy after" in caplog.text
    finally:
        release.set()
        thread.join(5)
    x: dict[str, NDArray[np.generic]] = {"x": np.ones((1, 3), np.float32)}
    assert backend.run(x)[0].shape == (1, 3), "not closed under the call"
    backend.close()
    with pytest.raises(ModelError, match="after close"):
        backend.run(x)


def test_onnxruntime_cancels_only_the_run_of_the_thread_named(tmp_path: Path) -> None:
    """Two pipelines share one session; the watchdog cancels the hung run, not the other."""
    model = LoadedModel.load(build_slow_colour_bundle(tmp_path), OrtBackendConfig())
    backend = model.backend
    assert isinstance(backend, OrtBackend)
    results: dict[str, object] = {}
    idents: dict[str, int] = {}

    def infer(name: str, green: float) -> None:
        idents[name] = threading.get_ident()
        image = np.zeros((1, 3, 32, 32), np.float32)
        image[:, 1] = green
        try:
            results[name] = model.infer(image)[0]
        except ModelError as exc:
            results[name] = exc

    hung = threading.Thread(target=infer, args=("hung", 1.0))  # about a minute
    busy = threading.Thread(target=infer, args=("busy", 0.5065))  # about 100k iterations
    hung.start()
    busy.start()
    try:
        wait_for(lambda: len(backend._runs) == 2, what="both runs in flight")
        assert not backend.cancel(threading.get_ident()), "no run on this thread"
        started = time.monotonic()
        assert backend.cancel(idents["hung"])
        hung.join(5)
        assert not hung.is_alive() and time.monotonic() - started < 1
        busy.join(30)
    finally:
        backend.cancel()  # never leave a minute-long run behind
        hung.join(5)
        busy.join(30)
        model.close()
    assert isinstance(results["hung"], ModelError)
    assert str(results["hung"]) == "onnxruntime run cancelled"
    assert isinstance(results["busy"], np.ndarray) and results["busy"].argmax() == 1
