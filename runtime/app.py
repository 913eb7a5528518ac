"""Builds pipelines from a device config, starts, supervises and stops them.

Each pipeline runs under a ``Supervisor`` (restarts with backoff) and the ``Watchdog`` (stuck
stages); see ``runtime.health``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import runtime
from runtime.config.loader import LoadedConfig
from runtime.config.schema import PipelineConfigBase, SensorPipelineConfigBase
from runtime.errors import ConfigError, EdgewatchError
from runtime.health import Supervisor, Watchdog, WatchdogConfig, failed_health
from runtime.metrics import Metrics
from runtime.metrics_http import MetricsConfig, MetricsServer
from runtime.model import LoadedModel
from runtime.mqtt_link import MqttLink
from runtime.pipeline import AlertFactory, FramePipeline
from runtime.sensor_pipeline import SensorPipeline
from runtime.sinks.base import SINKS, Sink, SinkContext
from runtime.sources.sensor_base import SensorSourceContext

logger = logging.getLogger(__name__)

Pipeline = FramePipeline | SensorPipeline


@dataclass(frozen=True, slots=True)
class FailedPipeline:
    name: str
    reason: str

    def status(self) -> dict[str, object]:
        return {
            "name": self.name,
            "state": "failed",
            "last_error": self.reason,
            "health": failed_health(self.reason),
        }


@runtime_checkable
class AckObservable(Protocol):
    """A sink that reports capture->PUBACK latency of each acknowledged alert."""

    ack_observer: Callable[[str, float], None] | None


class StartupError(EdgewatchError):
    """Nothing could be started; the message is the one-line reason."""


class App:
    def __init__(
        self,
        device_id: str,
        link: MqttLink | None,
        sinks: list[Sink],
        pipelines: list[Pipeline],
        failed: list[FailedPipeline],
        alerts: AlertFactory,
        models: list[LoadedModel],
        status_interval_s: float = 30.0,
        metrics: MetricsConfig | None = None,
        watchdog: WatchdogConfig | None = None,
    ) -> None:
        self.device_id = device_id
        self.link = link
        self.sinks = sinks
        self.pipelines = pipelines
        self.failed = failed
        self.alerts = alerts
        self.models = models
        self.status_interval_s = status_interval_s
        self.started_at_ns = time.time_ns()
        self.restarts: dict[str, int] = {}
        self._threads: dict[str, Supervisor] = {}
        self._stop = threading.Event()
        self.watchdog_config = watchdog or WatchdogConfig()
        self.watchdog = Watchdog(self.watchdog_config)
        self.metrics = Metrics(self.status, self._alive)
        self._metrics_config = metrics or MetricsConfig()
        self._metrics_server: MetricsServer | None = None
        for pipeline in pipelines:
            pipeline.observer = self.metrics.pipeline(pipeline.name)
        for sink in sinks:
            if isinstance(sink, AckObservable):
                sink.ack_observer = self.metrics.observe_ack

    @classmethod
    def from_config(cls, loaded: LoadedConfig) -> App:
        """Build everything; a pipeline that can't be built is listed as failed, not fatal."""
        cfg = loaded.config
        link = None
        if cfg.mqtt is not None:
            password = loaded.secrets.mqtt_password
            link = MqttLink.from_settings(
                cfg.mqtt, cfg.device.id, None if password is None else password.get_secret_value()
            )
        context = SinkContext(
            device_id=cfg.device.id,
            topic_prefix=cfg.mqtt.topic_prefix if cfg.mqtt else "edgewatch",
            mqtt=link,
        )
        sinks = [SINKS.get(s.type).from_config(s, context) for s in cfg.sinks]
        alerts = AlertFactory(cfg.device.id)
        models: dict[str, LoadedModel | EdgewatchError] = {}
        pipelines: list[Pipeline] = []
        failed: list[FailedPipeline] = []
        sensor_context = SensorSourceContext(mqtt=link)
        configs: list[PipelineConfigBase | SensorPipelineConfigBase] = [
            *cfg.pipelines,
            *cfg.sensor_pipelines,
        ]
        for p in configs:
            if not p.enabled:
                logger.info("pipeline %s is disabled in the config", p.name)
                continue
            try:
                model = _model_for(p, loaded, models)
                if isinstance(p, SensorPipelineConfigBase):
                    pipelines.append(
                        SensorPipeline.from_config(p, model, sinks, alerts, sensor_context)
                    )
                else:
                    pipelines.append(FramePipeline.from_config(p, model, sinks, alerts))
            except EdgewatchError as exc:
                logger.error("pipeline %s cannot start: %s", p.name, exc)
                failed.append(FailedPipeline(p.name, str(exc)))
        loaded_models = [m for m in models.values() if isinstance(m, LoadedModel)]
        return cls(
            cfg.device.id,
            link,
            sinks,
            pipelines,
            failed,
            alerts,
            loaded_models,
            cfg.status_interval_s,
            metrics=cfg.metrics,
            watchdog=cfg.watchdog,
        )

    def status(self) -> dict[str, object]:
        latency = self.metrics.latency_summary()
        return {
            "state": "online",
            "device_id": self.device_id,
            "boot_id": self.alerts.boot_id,
            "version": runtime.__version__,
            "started_at_ns": self.started_at_ns,
            "pipelines": [
                {
                    **p.status(),
                    "restarts": self.restarts.get(p.name, 0),
                    "latency_ms": latency.get(p.name, {}),
                }
                for p in self.pipelines
            ]
            + [f.status() for f in self.failed],
            "sinks": [{"type": type(s).__name__, **s.status()} for s in self.sinks],
            "mqtt": None if self.link is None else self.link.status(),
        }

    def start(self) -> None:
        """Start sinks, sources and pipeline threads. Raises StartupError if nothing can run."""
        if self.link is not None:
            self.link.start()
        for sink in self.sinks:
            sink.start()
        for pipeline in list(self.pipelines):
            try:
                pipeline.source.start()
            except EdgewatchError as exc:
                logger.error("pipeline %s cannot start: %s", pipeline.name, exc)
                self.pipelines.remove(pipeline)
                self.failed.append(FailedPipeline(pipeline.name, str(exc)))
                continue
            supervisor = Supervisor(
                pipeline, self._stop, self.watchdog_config.backoff(), self._restarted(pipeline.name)
            )
            self._threads[pipeline.name] = supervisor
            self.watchdog.watch(pipeline, supervisor.respawn)
            supervisor.start()
        if self.watchdog_config.enabled and self._threads:
            self.watchdog.start()
        self.publish_status()
        if not self._threads:
            reasons = "; ".join(f"{f.name}: {f.reason}" for f in self.failed) or "none configured"
            raise StartupError(f"no pipeline could start ({reasons})")
        self._serve_metrics()
        logger.info(
            "edgewatch %s running %d pipeline(s) on device %s",
            runtime.__version__,
            len(self._threads),
            self.device_id,
        )

    def _serve_metrics(self) -> None:
        """Serve /metrics and /healthz when configured; a port that can't be bound is logged,
        not fatal: alerts matter more than their observability."""
        cfg = self._metrics_config
        if not cfg.enabled:
            return
        try:
            server = MetricsServer(self.metrics, cfg.host, cfg.port)
        except ConfigError as exc:
            logger.error("%s; running without /metrics and /healthz", exc)
            return
        server.start()
        self._metrics_server = server

    @property
    def metrics_port(self) -> int | None:
        """The port /metrics is served on (the bound one when configured as 0), None if not."""
        return None if self._metrics_server is None else self._metrics_server.port

    def _restarted(self, name: str) -> Callable[[], None]:
        """Counts the restarts of pipeline ``name`` (its supervisor calls it)."""

        def count() -> None:
            self.restarts[name] = self.restarts.get(name, 0) + 1

        return count

    def run_until(self, stop: threading.Event, duration_s: float | None = None) -> None:
        """Publish status periodically until ``stop``, the duration, or every pipeline ended."""
        deadline = None if duration_s is None else time.monotonic() + duration_s
        next_status = time.monotonic() + self.status_interval_s
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            if not any(t.is_alive() for t in self._threads.values()):
                logger.info("every pipeline has finished")
                break
            if time.monotonic() >= next_status:
                self.publish_status()
                next_status = time.monotonic() + self.status_interval_s
            stop.wait(0.2)

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every pipeline to finish; True if they all have."""
        deadline = time.monotonic() + timeout_s
        for thread in self._threads.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads.values())

    def publish_status(self) -> None:
        if self.link is not None:
            self.link.set_status(self.status())

    def stop(self) -> None:
        """Stop the metrics server, sources, then pipelines (one shared deadline), then sinks,
        link and models."""
        self._stop.set()
        self.watchdog.stop()
        if self._metrics_server is not None:
            self._metrics_server.stop()
            self._metrics_server = None
        for pipeline in self.pipelines:
            pipeline.source.stop()
        if not self.wait(timeout_s=5.0):
            stuck = [name for name, t in self._threads.items() if t.is_alive()]
            logger.warning("pipeline(s) %s did not stop within 5 s", ", ".join(stuck))
        self.publish_status()
        for sink in self.sinks:
            sink.stop()
        if self.link is not None:
            self.link.stop()
        busy = {id(p.model) for p in self.pipelines if self._alive(p.name)}
        for model in self.models:
            if id(model) not in busy:
                model.close()

    def _alive(self, name: str) -> bool:
        thread = self._threads.get(name)
        return thread is not None and thread.is_alive()


def _model_for(
    pipeline: PipelineConfigBase | SensorPipelineConfigBase,
    loaded: LoadedConfig,
    cache: dict[str, LoadedModel | EdgewatchError],
) -> LoadedModel:
    """Each model is loaded once and shared; a model that failed fails every pipeline using it."""
    if pipeline.model not in cache:
        ref = loaded.config.models[pipeline.model]
        try:
            key = loaded.config.security.model_public_key
            cache[pipeline.model] = LoadedModel.load(
                Path(ref.bundle), ref.backend, public_key=None if key is None else Path(key)
            )
        except EdgewatchError as exc:
            cache[pipeline.model] = exc
    model = cache[pipeline.model]
    if isinstance(model, EdgewatchError):
        raise model
    return model
