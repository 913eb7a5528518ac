"""Builds pipelines from a device config, starts and stops them. No business logic here."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import runtime
from runtime.config.base import PluginConfig
from runtime.config.loader import LoadedConfig
from runtime.errors import EdgewatchError
from runtime.model import LoadedModel
from runtime.mqtt_link import MqttLink
from runtime.pipeline import AlertFactory, FramePipeline
from runtime.processing.postprocess.base import POSTPROCESSORS
from runtime.rules.base import RULES
from runtime.sinks.base import SINKS, Sink, SinkContext
from runtime.sources.base import SOURCES

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FailedPipeline:
    name: str
    reason: str

    def status(self) -> dict[str, object]:
        return {"name": self.name, "state": "failed", "last_error": self.reason}


class StartupError(EdgewatchError):
    """Nothing could be started; the message is the one-line reason."""


class App:
    def __init__(
        self,
        device_id: str,
        link: MqttLink | None,
        sinks: list[Sink],
        pipelines: list[FramePipeline],
        failed: list[FailedPipeline],
        alerts: AlertFactory,
        status_interval_s: float = 30.0,
    ) -> None:
        self.device_id = device_id
        self.link = link
        self.sinks = sinks
        self.pipelines = pipelines
        self.failed = failed
        self.alerts = alerts
        self.status_interval_s = status_interval_s
        self.started_at_ns = time.time_ns()
        self._threads: dict[str, threading.Thread] = {}
        self._stop = threading.Event()

    @classmethod
    def from_config(cls, loaded: LoadedConfig) -> App:
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
        models: dict[str, LoadedModel | str] = {}
        pipelines: list[FramePipeline] = []
        failed: list[FailedPipeline] = []
        for p in cfg.pipelines:
            if not p.enabled:
                logger.info("pipeline %s is disabled in the config", p.name)
                continue
            try:
                model = models.get(p.model)
                if model is None:
                    ref = cfg.models[p.model]
                    model = models[p.model] = _load_model(ref.bundle, ref.backend)
                if isinstance(model, str):
                    raise EdgewatchError(model)
                post_cfg = p.postprocess or model.manifest.postprocess
                postprocessor = POSTPROCESSORS.get(post_cfg.type).from_config(
                    post_cfg, model.manifest.labels
                )
                rules = [(n, RULES.get(r.type).from_config(r, n)) for n, r in p.rules.items()]
                source = SOURCES.get(p.source.type).from_config(p.source)  # type: ignore[attr-defined]
            except EdgewatchError as exc:
                if isinstance(exc, _ModelLoadFailed):
                    models[p.model] = str(exc)
                logger.error("pipeline %s cannot start: %s", p.name, exc)
                failed.append(FailedPipeline(p.name, str(exc)))
                continue
            pipelines.append(
                FramePipeline(p.name, source, model, postprocessor, rules, sinks, alerts)
            )
        return cls(cfg.device.id, link, sinks, pipelines, failed, alerts, cfg.status_interval_s)

    def status(self) -> dict[str, object]:
        return {
            "state": "online",
            "device_id": self.device_id,
            "boot_id": self.alerts.boot_id,
            "version": runtime.__version__,
            "started_at_ns": self.started_at_ns,
            "pipelines": [p.status() for p in self.pipelines] + [f.status() for f in self.failed],
            "sinks": {type(s).__name__: s.status() for s in self.sinks},
            "mqtt": None if self.link is None else self.link.status(),
        }

    def start(self) -> None:
        """Start sinks, sources and pipeline threads. Raises StartupError if nothing can run."""
        if self.link is not None:
            self.link.set_status(self.status())
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
            thread = threading.Thread(
                target=self._supervise,
                args=(pipeline,),
                name=f"pipeline-{pipeline.name}",
                daemon=True,
            )
            self._threads[pipeline.name] = thread
            thread.start()
        if not self._threads:
            reasons = "; ".join(f"{f.name}: {f.reason}" for f in self.failed) or "none configured"
            raise StartupError(f"no pipeline could start ({reasons})")
        logger.info(
            "edgewatch %s running %d pipeline(s) on device %s",
            runtime.__version__,
            len(self._threads),
            self.device_id,
        )

    def _supervise(self, pipeline: FramePipeline) -> None:
        try:
            pipeline.run(self._stop)
        except Exception as exc:
            logger.exception("pipeline %s stopped on an unexpected error", pipeline.name)
            pipeline.stats.count_error("crash", exc)

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
        self._stop.set()
        for pipeline in self.pipelines:
            pipeline.source.stop()
        for name, thread in self._threads.items():
            thread.join(timeout=5.0)
            if thread.is_alive():
                logger.warning("pipeline %s did not stop within 5 s", name)
        self.publish_status()
        for sink in self.sinks:
            sink.stop()
        if self.link is not None:
            self.link.stop()
        for pipeline in self.pipelines:
            pipeline.model.close()


class _ModelLoadFailed(EdgewatchError):
    """A model bundle failed to load; pipelines sharing it fail with the same reason."""


def _load_model(bundle: str, backend: PluginConfig) -> LoadedModel:
    try:
        return LoadedModel.load(Path(bundle), backend)
    except EdgewatchError as exc:
        raise _ModelLoadFailed(str(exc)) from exc
