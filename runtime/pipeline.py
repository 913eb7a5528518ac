"""A camera pipeline: source → preprocess → model → postprocess → rules → sinks, on one thread.

Capture runs on the source's own thread with latest-frame semantics, so inference never works on
a stale frame; this thread takes the newest frame each time it is free.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from runtime.errors import EdgewatchError
from runtime.messages import Alert, Frame, Inference, RuleEvent, StageTimes
from runtime.model import LoadedModel
from runtime.processing.postprocess.base import Postprocessor
from runtime.ratelimit import RateLimitedLog
from runtime.rules.base import Rule
from runtime.sinks.base import Sink
from runtime.sources.base import FrameSource

logger = logging.getLogger(__name__)


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
        with self._lock:
            seq = next(self._seq)
        frame = inference.frame
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
            model=inference.model,
            label=event.label,
            score=event.score,
            bbox=event.bbox,
            source=frame.source,
            frame_seq=frame.seq,
            captured_at_ns=frame.captured_at_ns,
            captured_mono_ns=frame.captured_mono_ns,
            latency_ms=times.latency_ms(time.monotonic_ns()),
        )


@dataclass(slots=True)
class PipelineStats:
    frames_processed: int = 0
    frame_errors: int = 0
    alerts: int = 0
    sink_errors: int = 0
    last_error: str | None = None
    errors_by_stage: dict[str, int] = field(default_factory=dict)

    def count_error(self, stage: str, exc: BaseException) -> None:
        self.errors_by_stage[stage] = self.errors_by_stage.get(stage, 0) + 1
        self.last_error = f"{stage}: {exc}"


class FramePipeline:
    def __init__(
        self,
        name: str,
        source: FrameSource,
        model: LoadedModel,
        postprocessor: Postprocessor,
        rules: Sequence[tuple[str, Rule]],
        sinks: Sequence[Sink],
        alerts: AlertFactory,
    ) -> None:
        self.name = name
        self.source = source
        self.model = model
        self.postprocessor = postprocessor
        self.rules = list(rules)
        self.sinks = list(sinks)
        self.alerts = alerts
        self.stats = PipelineStats()
        self._log = RateLimitedLog(logger)

    def run(self, stop: threading.Event, read_timeout_s: float = 0.5) -> None:
        """Process frames until ``stop`` is set or a finite source ends."""
        while not stop.is_set():
            frame = self.source.read(read_timeout_s)
            if frame is None:
                if self.source.ended:
                    logger.info(
                        "pipeline %s: source ended after %d frames",
                        self.name,
                        self.stats.frames_processed,
                    )
                    return
                continue
            self.process(frame)

    def process(self, frame: Frame) -> list[Alert]:
        """Run one frame through every stage; a failing frame is counted and logged, not fatal."""
        dequeued = time.monotonic_ns()
        try:
            tensor, geometry = self.model.preprocessor(frame.image)
            preprocessed = time.monotonic_ns()
            outputs = self.model.infer(tensor)
            inferred = time.monotonic_ns()
            classes, detections = self.postprocessor.decode(list(outputs), geometry)
            inference = Inference(self.name, frame, self.model.info, classes, detections)
            events = [
                e
                for _, rule in self.rules
                for e in rule.evaluate(inference, frame.captured_mono_ns)
            ]
        except (EdgewatchError, ValueError, ArithmeticError) as exc:
            self.stats.frame_errors += 1
            self.stats.count_error("inference", exc)
            self._log.log(
                logging.WARNING,
                "infer",
                "pipeline %s: frame %d failed: %s",
                self.name,
                frame.seq,
                exc,
            )
            return []
        times = StageTimes(
            frame.captured_mono_ns, dequeued, preprocessed, inferred, time.monotonic_ns()
        )
        self.stats.frames_processed += 1
        alerts = [self.alerts.make(self.name, e, inference, times) for e in events]
        for alert in alerts:
            self._deliver(alert)
        return alerts

    def _deliver(self, alert: Alert) -> None:
        self.stats.alerts += 1
        for sink in self.sinks:
            try:
                sink.publish(alert)
            except (EdgewatchError, OSError) as exc:
                self.stats.sink_errors += 1
                self.stats.count_error(f"sink:{type(sink).__name__}", exc)
                self._log.log(
                    logging.WARNING,
                    f"sink-{id(sink)}",
                    "pipeline %s: alert %s not delivered by %s: %s",
                    self.name,
                    alert.alert_id,
                    type(sink).__name__,
                    exc,
                )

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
            "frames_processed": self.stats.frames_processed,
            "frame_errors": self.stats.frame_errors,
            "errors_by_stage": dict(self.stats.errors_by_stage),
            "alerts": self.stats.alerts,
            "last_error": self.stats.last_error,
        }
