"""A camera pipeline: source → preprocess → model → postprocess → rules → sinks.

Capture runs on the source's own thread with latest-frame semantics; the pipeline adds a prepare
thread (newest frame → tensor) and infers on the thread that calls ``run`` (the supervisor's), so
a stale frame is never inferred when a newer one exists, and preprocessing overlaps inference.
Each stage ticks its clock in ``health`` for the watchdog (``runtime.health``).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from runtime.config.schema import PipelineConfigBase
from runtime.errors import EdgewatchError, ModelError
from runtime.health import PipelineHealth, StageClock, StageTimeouts
from runtime.messages import Alert, Frame, Inference, ModelInfo, RuleEvent, StageTimes
from runtime.model import LoadedModel
from runtime.processing.postprocess.base import POSTPROCESSORS, Postprocessor
from runtime.processing.preprocess import Geometry
from runtime.ratelimit import RateLimitedLog
from runtime.rules.base import RULES, Rule
from runtime.sinks.base import Sink
from runtime.sources.base import SOURCES, FrameSource

logger = logging.getLogger(__name__)


class StageObserver(Protocol):
    """Gets each frame's (sensor: each model batch's) stage times and alerts, once they were
    handed to the sinks at ``done_mono_ns``; the app sets one per pipeline for metrics."""

    def observe(self, times: StageTimes, alerts: Sequence[Alert], done_mono_ns: int) -> None: ...


class AlertFactory:
    """Stamps rule events into alerts: one boot id, one monotonic seq per device boot."""

    def __init__(self, device_id: str, boot_id: str | None = None) -> None:
        self.device_id = device_id
        self.boot_id = boot_id or str(uuid.uuid4())
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def make(
        self, pipeline: str, event: RuleEvent, inference: Inference, times: StageTimes
    ) -> Alert:
        frame = inference.frame
        return self.stamp(
            pipeline,
            event,
            inference.model,
            source=frame.source,
            frame_seq=frame.seq,
            captured_at_ns=frame.captured_at_ns,
            captured_mono_ns=frame.captured_mono_ns,
            latency_ms=times.latency_ms(time.monotonic_ns()),
        )

    def stamp(
        self,
        pipeline: str,
        event: RuleEvent,
        model: ModelInfo,
        *,
        source: str,
        frame_seq: int,
        captured_at_ns: int,
        captured_mono_ns: int,
        latency_ms: dict[str, float],
    ) -> Alert:
        """An alert for ``event``: a fresh id and the next sequence number."""
        with self._lock:
            seq = next(self._seq)
        return Alert(
            alert_id=str(uuid.uuid4()),
            seq=seq,
            boot_id=self.boot_id,
            device_id=self.device_id,
            pipeline=pipeline,
            rule=event.rule,
            state=event.state,
            severity=event.severity,
            ts_ns=time.time_ns(),
            model=model,
            label=event.label,
            score=event.score,
            bbox=event.bbox,
            source=source,
            frame_seq=frame_seq,
            captured_at_ns=captured_at_ns,
            captured_mono_ns=captured_mono_ns,
            latency_ms=latency_ms,
            sensor=event.sensor,
        )


@dataclass(slots=True)
class StageErrors:
    """Errors counted by stage (``sink:<Type>`` for sinks), the last one kept for the status."""

    sink_errors: int = 0
    last_error: str | None = None
    errors_by_stage: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_error(self, stage: str, exc: BaseException, *, frame: bool = False) -> None:
        with self._lock:
            self._count_item_error(frame)
            self.sink_errors += stage.startswith("sink:")
            self.errors_by_stage[stage] = self.errors_by_stage.get(stage, 0) + 1
            self.last_error = f"{stage}: {exc}"

    def _count_item_error(self, item: bool) -> None:
        """Hook (called under the lock): an error that cost one frame or window."""
        del item

    def errors(self) -> dict[str, object]:
        """The error counters; call with the lock held."""
        return {
            "errors_by_stage": dict(self.errors_by_stage),
            "sink_errors": self.sink_errors,
            "last_error": self.last_error,
        }


@dataclass(slots=True)
class PipelineStats(StageErrors):
    frames_processed: int = 0
    frames_dropped: int = 0
    frame_errors: int = 0
    alerts: int = 0

    def _count_item_error(self, item: bool) -> None:
        self.frame_errors += item

    def count_drop(self) -> None:
        with self._lock:
            self.frames_dropped += 1

    def count_processed(self, alerts: int) -> None:
        with self._lock:
            self.frames_processed += 1
            self.alerts += alerts

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {
                "frames_processed": self.frames_processed,
                "frames_dropped": self.frames_dropped,
                "frame_errors": self.frame_errors,
                "alerts": self.alerts,
                **self.errors(),
            }


def deliver(
    pipeline: str,
    alert: Alert,
    sinks: Sequence[Sink],
    stats: StageErrors,
    log: RateLimitedLog,
) -> None:
    """Hand ``alert`` to every sink; one sink failing is counted and never stops the others."""
    for sink in sinks:
        try:
            sink.publish(alert)
        except Exception as exc:  # noqa: BLE001 - one sink failing never stops the others
            stats.count_error(f"sink:{type(sink).__name__}", exc)
            log.log(
                logging.WARNING,
                f"sink-{id(sink)}",
                "pipeline %s: alert %s not delivered by %s: %s",
                pipeline,
                alert.alert_id,
                type(sink).__name__,
                exc,
            )


@dataclass(frozen=True, slots=True)
class Prepared:
    """A frame with its model input tensor, ready for inference."""

    frame: Frame
    tensor: NDArray[np.generic]
    geometry: Geometry
    dequeued_mono_ns: int
    preprocessed_mono_ns: int


class Handoff:
    """One slot between the prepare and inference threads.

    Lossy (live sources): a newer prepared frame replaces an unread one, which is counted as
    dropped, so inference always takes the newest. Lossless (files at ``pace: max``): the producer
    waits for the slot to empty, so every frame is inferred.
    """

    def __init__(self, lossless: bool) -> None:
        self.lossless = lossless
        self._cond = threading.Condition()
        self._item: Prepared | None = None
        self._closed = False

    def put(self, item: Prepared, stop: threading.Event) -> bool:
        """Place ``item``; True if it replaced an unread item (a drop)."""
        with self._cond:
            while self.lossless and self._item is not None and not stop.is_set():
                self._cond.wait(0.1)
            dropped = self._item is not None
            self._item = item
            self._cond.notify_all()
        return dropped

    def take(self, timeout_s: float) -> Prepared | None:
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout_s)
            item, self._item = self._item, None
            self._cond.notify_all()
            return item

    def close(self) -> None:
        """The producer is done; ``take`` returns at once from now on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def finished(self) -> bool:
        with self._cond:
            return self._closed and self._item is None


class FramePipeline:
    """Two threads: *prepare* (read the newest frame, preprocess) and *infer* (model, decode,
    rules, sinks), joined by a one-slot ``Handoff``. Preprocessing the next frame overlaps
    inference on the current one, so on a multi-core device the model runs back to back."""

    def __init__(
        self,
        name: str,
        source: FrameSource,
        model: LoadedModel,
        postprocessor: Postprocessor,
        rules: Sequence[tuple[str, Rule]],
        sinks: Sequence[Sink],
        alerts: AlertFactory,
        *,
        watchdog: StageTimeouts | None = None,
    ) -> None:
        self.name = name
        self.source = source
        self.model = model
        self._loaded_model = model  # self.model is a fresh session after an abandoned inference
        if model.preprocessor is None:
            raise ModelError(f"{model.path}: camera pipelines need a model with an image input")
        self.preprocessor = model.preprocessor
        self.postprocessor = postprocessor
        self.rules = list(rules)
        self.sinks = list(sinks)
        self.alerts = alerts
        self.stats = PipelineStats()
        self.observer: StageObserver | None = None
        self._log = RateLimitedLog(logger)
        self._prepare_clock = StageClock()
        self._infer_clock = StageClock()
        clocks = {"prepare": self._prepare_clock, "inference": self._infer_clock}
        if source.capture_clock is not None:
            clocks = {"capture": source.capture_clock, **clocks}
        self.health = PipelineHealth(clocks, watchdog)
        self._halt: threading.Event | None = None  # the running prepare thread's
        self._needs_session = False  # the last run's thread was abandoned in the model

    @classmethod
    def from_config(
        cls,
        config: PipelineConfigBase,
        model: LoadedModel,
        sinks: Sequence[Sink],
        alerts: AlertFactory,
    ) -> FramePipeline:
        """Build the stages; the decoder is tried once on the model's real outputs so a
        postprocess section that doesn't fit the model fails here, at start, not per frame."""
        post_cfg = config.postprocess or model.manifest.postprocess
        if post_cfg is None:
            raise ModelError(
                f"{model.path}: the manifest has no postprocess section; camera pipeline "
                f"{config.name!r} must give one (`postprocess:`)"
            )
        if model.preprocessor is None:
            raise ModelError(
                f"{model.path}: input {model.manifest.inputs[0].name!r} is not an image "
                f"(shape {model.manifest.inputs[0].shape}); camera pipelines need an image model"
            )
        postprocessor = POSTPROCESSORS.get(post_cfg.type).from_config(
            post_cfg, model.manifest.labels
        )
        sample: list[NDArray[np.generic]] = list(model.sample_outputs())
        preprocessor = model.preprocessor
        try:
            postprocessor.decode(sample, preprocessor.identity_geometry())
        except EdgewatchError as exc:
            raise ModelError(
                f"{model.path}: postprocess {post_cfg.type!r} does not fit the model's outputs: "
                f"{exc}"
            ) from exc
        rules = [(n, RULES.get(r.type).from_config(r, n)) for n, r in config.rules.items()]
        source = SOURCES.get(config.source.type).from_config(config.source)
        return cls(
            config.name,
            source,
            model,
            postprocessor,
            rules,
            sinks,
            alerts,
            watchdog=config.watchdog,
        )

    def run(
        self,
        stop: threading.Event,
        read_timeout_s: float = 0.5,
        stall_warning_s: float = 10.0,
    ) -> None:
        """Process frames until ``stop`` is set or a finite source ends (runs the infer stage
        on the calling thread and the prepare stage on a thread of its own). Raises
        ``PipelineStuck`` when the watchdog asks for a restart."""
        self.health.begin_run()
        if self._needs_session:
            self.model = self.model.with_new_backend()  # a ModelError: the supervisor retries
            self._needs_session = False
        handoff = Handoff(lossless=self.source.lossless)
        halt = threading.Event()  # set when the infer stage leaves, for whatever reason
        self._halt = halt
        preparer = threading.Thread(
            target=self._prepare_loop,
            args=(stop, halt, handoff, read_timeout_s, stall_warning_s),
            name=f"prepare-{self.name}",
            daemon=True,
        )
        preparer.start()
        try:
            while not stop.is_set():
                self.health.check_abandoned()
                self.health.check_restart()
                item = handoff.take(read_timeout_s)
                if item is not None:
                    self.infer(item)
                elif handoff.finished:
                    break
        finally:
            halt.set()
            # a prepare thread stuck in preprocessing is left (a daemon) to the restart
            preparer.join(timeout=0.0 if self.health.restart_requested == "prepare" else 5.0)
        self.health.check_abandoned()
        self._release_own_model()
        if self.source.ended:
            logger.info(
                "pipeline %s: source ended after %d frames", self.name, self.stats.frames_processed
            )

    def _prepare_loop(
        self,
        stop: threading.Event,
        halt: threading.Event,
        handoff: Handoff,
        read_timeout_s: float,
        stall_warning_s: float,
    ) -> None:
        """Read and preprocess the newest frame. When no frame arrives for ``stall_warning_s``
        say so (rate-limited) with the source's state and last error: never a silent stall."""
        last_frame = time.monotonic()
        try:
            while not stop.is_set() and not halt.is_set():
                try:
                    frame = self.source.read(read_timeout_s)
                except Exception as exc:  # noqa: BLE001 - a source bug must not end the pipeline
                    self._stage_failed("read", None, exc)
                    halt.wait(read_timeout_s)
                    continue
                if frame is None:
                    if self.source.ended:
                        return
                    self._warn_if_stalled(time.monotonic() - last_frame, stall_warning_s)
                    continue
                last_frame = time.monotonic()
                prepared = self.prepare(frame)
                if prepared is not None and handoff.put(prepared, halt):
                    self.stats.count_drop()
        finally:
            handoff.close()

    def _warn_if_stalled(self, waited_s: float, stall_warning_s: float) -> None:
        if waited_s < stall_warning_s:
            return
        status = self.source.status()
        self._log.log(
            logging.WARNING,
            "stall",
            "pipeline %s: no frame from %s for %.0f s (source %s, last error: %s)",
            self.name,
            status.name,
            waited_s,
            status.state,
            status.last_error or "none",
        )

    def process(self, frame: Frame) -> list[Alert]:
        """Both stages for one frame, on the calling thread."""
        prepared = self.prepare(frame)
        return [] if prepared is None else self.infer(prepared)

    def prepare(self, frame: Frame) -> Prepared | None:
        dequeued = self._prepare_clock.begin()
        try:
            tensor, geometry = self.preprocessor(frame.image)
        except Exception as exc:  # noqa: BLE001 - one bad frame (cv2.error...) is counted, not fatal
            self._stage_failed("preprocess", frame, exc)
            return None
        finally:
            preprocessed = self._prepare_clock.end(dequeued)
        return Prepared(frame, tensor, geometry, dequeued, preprocessed)

    def infer(self, item: Prepared) -> list[Alert]:
        """Model, decoder and rules for one prepared frame; a failure is counted, not fatal."""
        token = self._infer_clock.begin()
        try:
            alerts = self._infer(item, token)
        finally:
            done = self._infer_clock.end(token)
        self.health.last_progress_ns = done
        return alerts

    def _infer(self, item: Prepared, started: int) -> list[Alert]:
        frame = item.frame
        try:
            outputs = self.model.infer(item.tensor)
            self.health.check_abandoned()
            inferred = time.monotonic_ns()
            classes, detections = self.postprocessor.decode(list(outputs), item.geometry)
            inference = Inference(self.name, frame, self.model.info, classes, detections)
            events = [
                e
                for _, rule in self.rules
                for e in rule.evaluate(inference, frame.captured_mono_ns)
            ]
        except Exception as exc:  # noqa: BLE001 - a rule or decoder bug is counted, not fatal
            self._stage_failed("inference", frame, exc)
            return []
        # time spent waiting in the handoff slot counts as queueing, not preprocessing
        waited = started - item.preprocessed_mono_ns
        times = StageTimes(
            frame.captured_mono_ns,
            item.dequeued_mono_ns + waited,
            item.preprocessed_mono_ns + waited,
            inferred,
            time.monotonic_ns(),
        )
        self.health.check_abandoned()
        alerts = [self.alerts.make(self.name, e, inference, times) for e in events]
        self.stats.count_processed(len(alerts))
        for alert in alerts:
            self._deliver(alert)
        if self.observer is not None:
            self.observer.observe(times, alerts, time.monotonic_ns())
        return alerts

    def _stage_failed(self, stage: str, frame: Frame | None, exc: Exception) -> None:
        """Count and log (rate-limited; with the traceback when it is not one of ours)."""
        self.stats.count_error(stage, exc, frame=True)
        self._log.log(
            logging.WARNING,
            stage,
            "pipeline %s: %s of frame %s failed: %s",
            self.name,
            stage,
            "-" if frame is None else frame.seq,
            exc,
            exc_info=None if isinstance(exc, EdgewatchError) else exc,
        )

    def _deliver(self, alert: Alert) -> None:
        deliver(self.name, alert, self.sinks, self.stats, self._log)

    # -- watchdog hooks (runtime.health.Watched) ----------------------------------------------

    def interrupt(self, stage: str, thread_ident: int, reason: str) -> bool:
        """A stuck capture reconnects on a new capture thread; a stuck model run is cancelled
        where the backend can."""
        if stage == "capture":
            return self.source.abandon_capture(reason)
        if stage == "inference":
            return self.model.backend.cancel(thread_ident)
        return False

    def abandon(self, thread_ident: int) -> None:
        """Leave the thread stuck in inference: its prepare thread stops taking frames (a frame
        it is reading meanwhile is lost with the stuck one), and the next run starts with a
        fresh session of the model."""
        self.health.abandon(thread_ident)
        if self._halt is not None:
            self._halt.set()
        self._needs_session = True

    def _release_own_model(self) -> None:
        """Close the session made after an abandoned inference (the loaded model is the app's)."""
        own, self.model = self.model, self._loaded_model
        if own is not self._loaded_model:
            own.close()

    def status(self) -> dict[str, object]:
        backend = self.model.backend
        return {
            "name": self.name,
            "source": self.source.status().as_dict(),
            "model": {**self.model.info.as_dict(), "backend": self.model.manifest.backend},
            "providers": {
                "requested": backend.requested_providers,
                "active": backend.active_providers,
            },
            "backend": backend.details(),
            "state": "running",
            "health": self.health.status(),
            **self.stats.snapshot(),
        }
