"""A sensor pipeline: readings → per-key windows → features → batched model call → rules → sinks.

One thread does it all: it takes every reading that is ready from the source, pushes them through
the windower, and scores the windows they complete together, in model calls of up to
``max_batch`` windows. At high message rates many keys complete windows at once, so the per-window
cost of the model call and the Python around it shrinks as the load grows.

A streaming model (manifest ``streaming``) is instead called once per window with that key's
state (:class:`~runtime.processing.streaming.StreamingRunner`); a gap of the key resets it.

Under ``run`` each batch (and each silence check) ticks the ``inference`` clock of ``health`` for
the watchdog (``runtime.health``). Silent sensors are no fault of the pipeline: they raise
``silence`` alerts, and the pipeline stays "running".
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from runtime.config.schema import SensorPipelineConfigBase
from runtime.errors import EdgewatchError, ModelError
from runtime.health import PipelineAbandoned, PipelineHealth, StageClock, StageTimeouts
from runtime.messages import Alert, RuleEvent, SensorReading, StageTimes, WindowScore
from runtime.model import LoadedModel
from runtime.pipeline import AlertFactory, StageErrors, StageObserver, deliver
from runtime.processing.anomaly import AnomalyScorer
from runtime.processing.streaming import DEFAULT_MAX_STREAMS, StreamingRunner
from runtime.processing.windows import Gap, Window, Windower
from runtime.ratelimit import RateLimitedLog
from runtime.rules.sensor_base import SENSOR_RULES, SensorRule
from runtime.sinks.base import Sink
from runtime.sources.sensor_base import SENSOR_SOURCES, SensorSource, SensorSourceContext

logger = logging.getLogger(__name__)

_MIN_SAMPLES = 2
"""Windows with fewer samples have no spread or spectrum worth scoring."""


@dataclass(slots=True)
class SensorStats(StageErrors):
    readings: int = 0
    windows: int = 0
    windows_scored: int = 0
    windows_skipped: dict[str, int] = field(default_factory=dict)
    model_calls: int = 0
    gaps: int = 0
    alerts: int = 0

    def count_skip(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.windows_skipped[reason] = self.windows_skipped.get(reason, 0) + n

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            calls = self.model_calls
            return {
                "readings": self.readings,
                "windows": self.windows,
                "windows_scored": self.windows_scored,
                "windows_skipped": dict(self.windows_skipped),
                "model_calls": calls,
                "mean_batch": round(self.windows_scored / calls, 2) if calls else 0.0,
                "gaps": self.gaps,
                "alerts": self.alerts,
                **self.errors(),
            }


class SensorPipeline:
    def __init__(
        self,
        name: str,
        source: SensorSource,
        windower: Windower,
        model: LoadedModel,
        scorer: AnomalyScorer,
        rules: Sequence[tuple[str, SensorRule]],
        sinks: Sequence[Sink],
        alerts: AlertFactory,
        *,
        max_batch: int = 256,
        silence_check_s: float = 0.5,
        max_streams: int = DEFAULT_MAX_STREAMS,
        watchdog: StageTimeouts | None = None,
    ) -> None:
        self.name = name
        self.source = source
        self.windower = windower
        self.model = model
        self._loaded_model = model  # self.model is a fresh session after an abandoned inference
        self.scorer = scorer
        self.rules = list(rules)
        self.sinks = list(sinks)
        self.alerts = alerts
        self.max_batch = max_batch
        self.silence_check_s = silence_check_s
        self.stats = SensorStats()
        self.observer: StageObserver | None = None
        self.dynamic_batch = _dynamic_batch(model)
        self.streams = StreamingRunner.for_model(model, max_streams)
        self._max_streams = max_streams
        self._seq = itertools.count(1)
        self._log = RateLimitedLog(logger)
        self._clock = StageClock()
        self.health = PipelineHealth({"inference": self._clock}, watchdog)
        self._needs_session = False  # the last run's thread was abandoned in the model

    @classmethod
    def from_config(
        cls,
        config: SensorPipelineConfigBase,
        model: LoadedModel,
        sinks: Sequence[Sink],
        alerts: AlertFactory,
        context: SensorSourceContext,
    ) -> SensorPipeline:
        """Build and check everything that can be checked before the first reading: the window's
        features match the model's, the model scores a sample batch, rules name real features."""
        scorer = AnomalyScorer.for_manifest(model.manifest, model.path)
        window = config.window or scorer.default_window(
            config.max_lateness_s, config.silence_after_s
        )
        scorer.check_window(window, model.path)
        _check_model_scores(model, scorer)
        rules: list[tuple[str, SensorRule]] = []
        for rule_name, rule_cfg in config.rules.items():
            rule = SENSOR_RULES.get(rule_cfg.type).from_config(
                rule_cfg, rule_name, scorer.threshold
            )
            rule.check(scorer.feature_names)
            rules.append((rule_name, rule))
        source = SENSOR_SOURCES.get(config.source.type).from_config(config.source, context)
        return cls(
            config.name,
            source,
            Windower(window),
            model,
            scorer,
            rules,
            sinks,
            alerts,
            max_batch=config.max_batch,
            silence_check_s=min(0.5, (config.silence_after_s or 5.0) / 4),
            watchdog=config.watchdog,
        )

    # ------------------------------------------------------------------ running

    def run(self, stop: threading.Event, read_timeout_s: float = 0.1) -> None:
        """Process readings until ``stop`` is set or a finite source has ended. Raises
        ``PipelineStuck`` when the watchdog asks for a restart."""
        self.health.begin_run()
        if self._needs_session:
            # a ModelError here is a crash: the supervisor retries after its backoff
            self.model = self.model.with_new_backend()
            self.streams = StreamingRunner.for_model(self.model, self._max_streams)
            self._needs_session = False
        streams = self.streams
        try:
            self._run(stop, read_timeout_s)
        except PipelineAbandoned:
            if streams is not None:
                streams.close()  # this thread's; the thread running the pipeline now has its own
            raise
        except BaseException:
            self.close()
            raise
        self.close()
        self._release_own_model()

    def _run(self, stop: threading.Event, read_timeout_s: float) -> None:
        next_silence = time.monotonic() + self.silence_check_s
        clock, health = self._clock, self.health
        while not stop.is_set():
            health.check_abandoned()
            health.check_restart()
            try:
                readings = self.source.read(read_timeout_s)
            except Exception as exc:  # noqa: BLE001 - a source bug must not end the pipeline
                self._failed("read", exc)
                stop.wait(read_timeout_s)
                continue
            if readings:
                token = clock.begin()
                try:
                    self.process(readings)
                finally:
                    done = clock.end(token)
                health.last_progress_ns = done
            elif self.source.ended:
                self.finish()
                logger.info(
                    "pipeline %s: source ended after %d readings", self.name, self.stats.readings
                )
                return
            now = time.monotonic()
            if now >= next_silence:
                next_silence = now + self.silence_check_s
                ns = clock.begin()
                try:
                    self._handle(self.windower.check_silence(ns), ns, ns)
                finally:
                    clock.end(ns)

    def close(self) -> None:
        """Drop per-key model state and close per-stream sessions (the model is shared and
        closed by its owner); processing may start again afterwards."""
        if self.streams is not None:
            self.streams.close()

    def _release_own_model(self) -> None:
        """Close the session made after an abandoned inference (the loaded model is the app's)."""
        own, self.model = self.model, self._loaded_model
        if own is not self._loaded_model:
            own.close()
            self.streams = StreamingRunner.for_model(self.model, self._max_streams)

    def process(self, readings: Sequence[SensorReading]) -> list[Alert]:
        """Window, score and evaluate a batch of readings on the calling thread."""
        dequeued = time.monotonic_ns()
        if not readings:
            return []
        oldest = min(r.received_mono_ns for r in readings)
        out: list[Window | Gap] = []
        for reading in readings:
            try:
                out += self.windower.push(reading)
            except Exception as exc:  # noqa: BLE001 - one bad reading is counted, not fatal
                self._failed("window", exc)
        self.stats.readings += len(readings)
        return self._handle(out, oldest, dequeued)

    def finish(self) -> list[Alert]:
        """End of a finite stream: emit and score what the windower still holds."""
        now = time.monotonic_ns()
        return self._handle(self.windower.flush(), now, now)

    def _handle(
        self, items: Sequence[Window | Gap], received_mono_ns: int, dequeued_mono_ns: int
    ) -> list[Alert]:
        """``received_mono_ns``: arrival of the oldest reading of the batch (latency origin)."""
        alerts: list[Alert] = []
        windows: list[Window] = []
        for item in items:
            if isinstance(item, Gap):
                # rules see windows and gaps in the windower's order: score what came first
                alerts += self._score_all(windows, received_mono_ns, dequeued_mono_ns)
                windows = []
                self.stats.gaps += 1
                if self.streams is not None:
                    self.streams.reset(item.key)
                alerts += self._on_gap(item)
            elif item.partial or item.n_samples < _MIN_SAMPLES:
                self.stats.count_skip("partial")
            else:
                windows.append(item)
        return alerts + self._score_all(windows, received_mono_ns, dequeued_mono_ns)

    def _score_all(
        self, windows: Sequence[Window], received_mono_ns: int, dequeued_mono_ns: int
    ) -> list[Alert]:
        self.stats.windows += len(windows)
        alerts: list[Alert] = []
        for lo in range(0, len(windows), self.max_batch):
            batch = windows[lo : lo + self.max_batch]
            alerts += self._score(batch, received_mono_ns, dequeued_mono_ns)
        return alerts

    def _score(
        self, windows: Sequence[Window], received_mono_ns: int, dequeued_mono_ns: int
    ) -> list[Alert]:
        try:
            features = self.scorer.featurise(windows)
            featurised = time.monotonic_ns()
            scores = self._infer(features, windows)
            self.health.check_abandoned()
            inferred = time.monotonic_ns()
        except Exception as exc:  # noqa: BLE001 - a failed batch is counted, the next one runs
            self._failed("inference", exc)
            self.stats.count_skip("inference_failed", len(windows))
            return []
        zscores = self.scorer.zscores(features)
        alerts: list[Alert] = []
        for i, window in enumerate(windows):
            score = float(scores[i])
            if not np.isfinite(score):
                self.stats.count_skip("non_finite_score")
                self._log.log(
                    logging.WARNING,
                    "non-finite",
                    "pipeline %s: model gave score %s for %s; window skipped",
                    self.name,
                    score,
                    window.key,
                )
                continue
            scored = WindowScore(
                pipeline=self.name,
                key=window.key,
                seq=next(self._seq),
                start_ns=window.start_ns,
                end_ns=window.end_ns,
                n_samples=window.n_samples,
                partial=window.partial,
                model=self.model.info,
                score=score,
                threshold=self.scorer.threshold,
                feature_names=self.scorer.feature_names,
                features=features[i],
                zscores=None if zscores is None else zscores[i],
                received_mono_ns=received_mono_ns,
            )
            events = self._evaluate(scored)
            if not events:
                continue
            times = StageTimes(
                received_mono_ns, dequeued_mono_ns, featurised, inferred, time.monotonic_ns()
            )
            alerts += [self._alert(e, scored.seq, window.end_ns, times) for e in events]
        self.stats.windows_scored += len(windows)
        if self.observer is not None:
            done = time.monotonic_ns()
            batch = StageTimes(received_mono_ns, dequeued_mono_ns, featurised, inferred, done)
            self.observer.observe(batch, alerts, done)
        return alerts

    def _infer(
        self, features: NDArray[np.float32], windows: Sequence[Window]
    ) -> NDArray[np.float64]:
        """One model call for the batch, or one per window for a model with a fixed batch of 1
        or a streaming model (each window with its key's state, in the windows' order)."""
        n = features.shape[0]
        inputs = self.scorer.model_input(features)
        if self.streams is not None:
            parts: list[NDArray[np.float64]] = []
            for i, window in enumerate(windows):
                self.stats.model_calls += 1
                outputs = self.streams.run(
                    window.key, inputs[i : i + 1], start_ns=window.start_ns, end_ns=window.end_ns
                )
                parts.append(self.scorer.scores(outputs, 1))
            return np.concatenate(parts)
        if self.dynamic_batch:
            self.stats.model_calls += 1
            return self.scorer.scores(self.model.infer(inputs), n)
        parts = []
        for i in range(n):
            self.stats.model_calls += 1
            parts.append(self.scorer.scores(self.model.infer(inputs[i : i + 1]), 1))
        return np.concatenate(parts)

    def _evaluate(self, scored: WindowScore) -> list[RuleEvent]:
        events: list[RuleEvent] = []
        now = time.monotonic_ns()
        for rule_name, rule in self.rules:
            try:
                events += rule.on_window(scored, now)
            except Exception as exc:  # noqa: BLE001 - a rule bug is counted, others still run
                self._failed(f"rule:{rule_name}", exc)
        return events

    def _on_gap(self, gap: Gap) -> list[Alert]:
        now = time.monotonic_ns()
        alerts: list[Alert] = []
        for rule_name, rule in self.rules:
            try:
                events = rule.on_gap(gap, now)
            except Exception as exc:  # noqa: BLE001 - a rule bug is counted, others still run
                self._failed(f"rule:{rule_name}", exc)
                continue
            times = StageTimes(now, now, now, now, time.monotonic_ns())
            alerts += [self._alert(e, 0, gap.next_ts_ns, times) for e in events]
        return alerts

    def _alert(self, event: RuleEvent, seq: int, captured_at_ns: int, times: StageTimes) -> Alert:
        alert = self.alerts.stamp(
            self.name,
            event,
            self.model.info,
            source=event.sensor.key if event.sensor is not None else self.name,
            frame_seq=seq,
            captured_at_ns=captured_at_ns,
            captured_mono_ns=times.captured_mono_ns,
            latency_ms=times.latency_ms(time.monotonic_ns()),
        )
        self.stats.alerts += 1
        deliver(self.name, alert, self.sinks, self.stats, self._log)
        return alert

    # -- watchdog hooks (runtime.health.Watched) ----------------------------------------------

    def interrupt(self, stage: str, thread_ident: int, reason: str) -> bool:
        """Cancel a stuck model run where the backend can (not inside per-stream sessions)."""
        del reason
        return stage == "inference" and self.model.backend.cancel(thread_ident)

    def abandon(self, thread_ident: int) -> None:
        """Leave the thread stuck in inference; the next run starts with a fresh session of the
        model (and fresh per-key streams: the old ones are the old thread's)."""
        self.health.abandon(thread_ident)
        self._needs_session = True

    def _failed(self, stage: str, exc: Exception) -> None:
        self.stats.count_error(stage, exc)
        self._log.log(
            logging.WARNING,
            stage,
            "pipeline %s: %s failed: %s",
            self.name,
            stage,
            exc,
            exc_info=None if isinstance(exc, EdgewatchError) else exc,
        )

    def status(self) -> dict[str, object]:
        backend = self.model.backend
        return {
            "name": self.name,
            "kind": "sensor",
            "source": self.source.status(),
            "model": {**self.model.info.as_dict(), "backend": self.model.manifest.backend},
            "providers": {
                "requested": backend.requested_providers,
                "active": backend.active_providers,
            },
            "backend": backend.details(),
            "state": "running",
            "health": self.health.status(),
            "windower": {
                "keys": len(self.windower.keys),
                "dropped": dict(self.windower.dropped),
                "overflow": dict(self.windower.overflow),
            },
            **({} if self.streams is None else {"streams": self.streams.status()}),
            **self.stats.snapshot(),
        }


def _dynamic_batch(model: LoadedModel) -> bool:
    """True when the model's batch dimension is dynamic (one call can score many windows)."""
    first = model.manifest.inputs[0].shape[0]
    return not isinstance(first, int) or first != 1


def _check_model_scores(model: LoadedModel, scorer: AnomalyScorer) -> None:
    outputs = model.sample_outputs()
    batch = model.manifest.inputs[0].shape[0]
    try:
        scorer.scores(outputs, batch if isinstance(batch, int) else 1)
    except ModelError as exc:
        raise ModelError(f"{model.path}: {exc}") from exc
