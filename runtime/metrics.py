"""Prometheus metrics of one App, in a registry of its own (never the global ``REGISTRY``).

Two kinds:

* counters and gauges are read from ``App.status()`` at scrape time by ``StatusCollector``, so the
  status document and ``/metrics`` can never disagree and the hot path pays nothing for them;
* latency histograms are observed in the hot path through pre-bound children (about 1 us per
  observation): per pipeline and stage from each frame's ``StageTimes`` (per model batch for
  sensor pipelines), capture→alert per alert, and capture→PUBACK per acknowledged alert.

``SPECS`` and ``HISTOGRAMS`` name every metric; the README's Observability table lists them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from runtime.healthcheck import Health, assess
from runtime.messages import Alert, StageTimes

logger = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (
    *(0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05),
    *(0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
)
ACK_BUCKETS_S = (
    *(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
    *(10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
)
"""capture→PUBACK reaches minutes when alerts wait in the outbox through an outage."""

STAGES = ("queue", "preprocess", "infer", "postprocess", "total")
"""queue: capture → prepare starts; preprocess: → tensor (sensor: features); infer: model call;
postprocess: decode and rules; total: capture → results handed to every sink."""


@dataclass(frozen=True, slots=True)
class Spec:
    kind: Literal["counter", "gauge", "info", "histogram"]
    help: str
    labels: tuple[str, ...] = ()


_P = ("pipeline",)
_S = ("sink",)
SPECS: dict[str, Spec] = {
    "edgewatch_build": Spec("info", "device and build", ("device_id", "version", "boot_id")),
    "edgewatch_start_time_seconds": Spec("gauge", "when the app was built (unix time)"),
    "edgewatch_healthy": Spec("gauge", "1 when /healthz says ok"),
    "edgewatch_pipeline_healthy": Spec("gauge", "1 when the pipeline runs and isn't stuck", _P),
    "edgewatch_pipeline_restarts": Spec("counter", "restarts after a crash", _P),
    "edgewatch_pipeline_stuck": Spec("counter", "times a stage was found stuck", (*_P, "stage")),
    "edgewatch_pipeline_last_progress_age_seconds": Spec(
        "gauge", "since the last frame or batch was finished", _P
    ),
    "edgewatch_frames_captured": Spec("counter", "frames the source captured (frames in)", _P),
    "edgewatch_frames_processed": Spec("counter", "frames inferred and evaluated", _P),
    "edgewatch_frames_dropped": Spec(
        "counter",
        "frames not processed: source_overrun (replaced at the source before being read), "
        "pipeline_overrun (replaced before inference), error (a stage failed)",
        (*_P, "reason"),
    ),
    "edgewatch_source_up": Spec("gauge", "1 while the source state is running", _P),
    "edgewatch_source_reconnects": Spec("counter", "camera reconnects", _P),
    "edgewatch_sensor_messages": Spec("counter", "messages the sensor source received", _P),
    "edgewatch_sensor_messages_dropped": Spec(
        "counter", "sensor messages not turned into readings", (*_P, "reason")
    ),
    "edgewatch_sensor_readings": Spec("counter", "readings windowed", _P),
    "edgewatch_sensor_readings_dropped": Spec(
        "counter", "readings the windower dropped", (*_P, "reason")
    ),
    "edgewatch_windows": Spec("counter", "complete windows cut", _P),
    "edgewatch_windows_skipped": Spec("counter", "windows not scored", (*_P, "reason")),
    "edgewatch_model_calls": Spec("counter", "model calls (sensor batches)", _P),
    "edgewatch_inferences": Spec("counter", "frames or windows the model scored", _P),
    "edgewatch_errors": Spec("counter", "errors by stage (sink:<Type> for sinks)", (*_P, "stage")),
    "edgewatch_alerts": Spec("counter", "alerts raised or cleared", _P),
    "edgewatch_backend": Spec(
        "info",
        "model and the execution provider(s) or delegate(s) actually running it",
        (*_P, "model", "model_version", "backend", "provider"),
    ),
    "edgewatch_backend_fallback": Spec("gauge", "1 when the backend fell back to CPU", _P),
    "edgewatch_mqtt_connected": Spec("gauge", "1 while connected to the broker"),
    "edgewatch_mqtt_connects": Spec("counter", "successful connects"),
    "edgewatch_mqtt_disconnects": Spec("counter", "connections lost or closed"),
    "edgewatch_mqtt_failed_connects": Spec("counter", "connect attempts that failed"),
    "edgewatch_mqtt_published": Spec("counter", "messages handed to the client"),
    "edgewatch_mqtt_acked": Spec("counter", "messages the broker acknowledged"),
    "edgewatch_mqtt_rejected": Spec("counter", "messages the broker rejected"),
    "edgewatch_mqtt_pending": Spec("gauge", "messages awaiting acknowledgement"),
    "edgewatch_sink_published": Spec("counter", "alerts the sink published", _S),
    "edgewatch_sink_acked": Spec("counter", "alerts the broker acknowledged", _S),
    "edgewatch_sink_unacked": Spec("gauge", "alerts awaiting acknowledgement", _S),
    "edgewatch_outbox_depth": Spec("gauge", "alerts in the outbox", _S),
    "edgewatch_outbox_bytes": Spec("gauge", "bytes in the outbox", _S),
    "edgewatch_outbox_oldest_age_seconds": Spec("gauge", "age of the oldest alert; 0 if empty", _S),
    "edgewatch_outbox_inflight": Spec("gauge", "outbox alerts sent, not yet acknowledged", _S),
    "edgewatch_outbox_replayed": Spec("counter", "outbox alerts sent again after reconnecting", _S),
    "edgewatch_alerts_dropped": Spec("counter", "alerts the outbox gave up on", (*_S, "reason")),
}

HISTOGRAMS: dict[str, Spec] = {
    "edgewatch_stage_latency_seconds": Spec(
        "histogram", "time per stage, see STAGES", (*_P, "stage")
    ),
    "edgewatch_capture_to_alert_seconds": Spec("histogram", "capture → alert handed to sinks", _P),
    "edgewatch_capture_to_puback_seconds": Spec("histogram", "capture → broker PUBACK", _P),
}


class PipelineLatency:
    """One pipeline's pre-bound histogram children; ``observe`` runs on its infer thread."""

    __slots__ = ("_alert", "_infer", "_post", "_prep", "_queue", "_total")

    def __init__(self, stages: Histogram, alerts: Histogram, pipeline: str) -> None:
        self._queue = stages.labels(pipeline, "queue")
        self._prep = stages.labels(pipeline, "preprocess")
        self._infer = stages.labels(pipeline, "infer")
        self._post = stages.labels(pipeline, "postprocess")
        self._total = stages.labels(pipeline, "total")
        self._alert = alerts.labels(pipeline)

    def observe(self, times: StageTimes, alerts: Sequence[Alert], done_mono_ns: int) -> None:
        self._queue.observe((times.dequeued_mono_ns - times.captured_mono_ns) / 1e9)
        self._prep.observe((times.preprocessed_mono_ns - times.dequeued_mono_ns) / 1e9)
        self._infer.observe((times.inferred_mono_ns - times.preprocessed_mono_ns) / 1e9)
        self._post.observe((times.postprocessed_mono_ns - times.inferred_mono_ns) / 1e9)
        self._total.observe((done_mono_ns - times.captured_mono_ns) / 1e9)
        for alert in alerts:
            self._alert.observe((done_mono_ns - alert.captured_mono_ns) / 1e9)


class Metrics:
    """The registry of one App: its status collector and its latency histograms."""

    def __init__(
        self, status: Callable[[], Mapping[str, object]], alive: Callable[[str], bool]
    ) -> None:
        self.registry = CollectorRegistry()
        self._status = status
        self._alive = alive

        def histogram(name: str, buckets: Sequence[float]) -> Histogram:
            spec = HISTOGRAMS[name]
            return Histogram(name, spec.help, spec.labels, registry=self.registry, buckets=buckets)

        self._stages = histogram("edgewatch_stage_latency_seconds", LATENCY_BUCKETS_S)
        self._alerts = histogram("edgewatch_capture_to_alert_seconds", LATENCY_BUCKETS_S)
        self._acks = histogram("edgewatch_capture_to_puback_seconds", ACK_BUCKETS_S)
        self._ack_children: dict[str, Histogram] = {}
        self.registry.register(StatusCollector(self.snapshot))

    def pipeline(self, name: str) -> PipelineLatency:
        """The observer for pipeline ``name``; its series exist (count 0) from now on."""
        self._ack_child(name)
        return PipelineLatency(self._stages, self._alerts, name)

    def observe_ack(self, pipeline: str, seconds: float) -> None:
        """capture→PUBACK of one alert; called by sinks on their network thread."""
        self._ack_child(pipeline).observe(seconds)

    def _ack_child(self, pipeline: str) -> Histogram:
        child = self._ack_children.get(pipeline)
        if child is None:
            child = self._ack_children[pipeline] = self._acks.labels(pipeline)
        return child

    def health(self) -> Health:
        return assess(self._status(), self._alive)

    def snapshot(self) -> tuple[Mapping[str, object], Health]:
        status = self._status()
        return status, assess(status, self._alive)

    def latency_summary(self) -> dict[str, dict[str, dict[str, float | None]]]:
        """pipeline → stage (and ``alert``, ``puback``) → p50/p99 in ms, estimated from the
        histogram buckets (so no finer than the buckets); stages without observations left out.
        """
        out: dict[str, dict[str, dict[str, float | None]]] = {}
        for histogram, stage in (
            (self._stages, None),
            (self._alerts, "alert"),
            (self._acks, "puback"),
        ):
            for (pipeline, name), buckets in _buckets(histogram).items():
                if buckets and buckets[-1][1] > 0:
                    out.setdefault(pipeline, {})[stage or name] = {
                        "p50": _ms(bucket_quantile(buckets, 0.50)),
                        "p99": _ms(bucket_quantile(buckets, 0.99)),
                    }
        return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 3)


def _buckets(histogram: Histogram) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """(pipeline, stage or "") → cumulative (upper bound, count) pairs, in bound order."""
    out: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for family in histogram.collect():
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                key = (sample.labels["pipeline"], sample.labels.get("stage", ""))
                out.setdefault(key, []).append((float(sample.labels["le"]), sample.value))
    for pairs in out.values():
        pairs.sort()
    return out


def bucket_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """The ``q`` quantile from cumulative ``(upper bound, count)`` pairs, interpolating linearly
    inside the bucket as Prometheus' ``histogram_quantile`` does; the highest finite bound when
    it falls in the +Inf bucket, None without observations."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


class _Families:
    """Metric families by name (from ``SPECS``), created on first use, in first-use order."""

    def __init__(self) -> None:
        self._families: dict[str, Metric] = {}

    def add(self, name: str, labels: Sequence[str], value: object) -> None:
        """Add a sample; a value that isn't a number (a field absent from the status) is
        skipped, so a status without a part simply has fewer metrics."""
        if isinstance(value, bool):
            value = float(value)
        if not isinstance(value, int | float):
            return
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = _family(name)
        family.add_metric(list(labels), value)  # type: ignore[attr-defined]

    def add_info(self, name: str, labels: Sequence[str]) -> None:
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = _family(name)
        assert isinstance(family, InfoMetricFamily)
        family.add_metric(list(labels), {})

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._families.values())


def _family(name: str) -> Metric:
    spec = SPECS[name]
    if spec.kind == "counter":
        return CounterMetricFamily(name, spec.help, labels=spec.labels)
    if spec.kind == "info":
        return InfoMetricFamily(name, spec.help, labels=spec.labels)
    return GaugeMetricFamily(name, spec.help, labels=spec.labels)


class StatusCollector(Collector):
    """Yields the counters and gauges of a status document at scrape time."""

    def __init__(self, snapshot: Callable[[], tuple[Mapping[str, object], Health]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        status, health = self._snapshot()
        return collect_status(status, health)


def collect_status(status: Mapping[str, object], health: Health) -> list[Metric]:
    f = _Families()
    f.add_info(
        "edgewatch_build",
        [str(status.get(k, "")) for k in ("device_id", "version", "boot_id")],
    )
    started = status.get("started_at_ns")
    if isinstance(started, int):
        f.add("edgewatch_start_time_seconds", [], started / 1e9)
    f.add("edgewatch_healthy", [], health.healthy)
    for name, ok in health.pipelines.items():
        f.add("edgewatch_pipeline_healthy", [name], ok)
    for entry in _dicts(status.get("pipelines")):
        if entry.get("state") != "failed":
            _pipeline(f, str(entry.get("name")), entry)
    _mqtt(f, status.get("mqtt"))
    _sinks(f, _dicts(status.get("sinks")))
    return list(f)


def _pipeline(f: _Families, name: str, p: Mapping[str, Any]) -> None:
    f.add(
        "edgewatch_pipeline_restarts",
        [name],
        p.get("restarts", _dict(p.get("health")).get("restarts")),
    )
    for stage, n in _dict(p.get("errors_by_stage")).items():
        f.add("edgewatch_errors", [name, stage], n)
    f.add("edgewatch_alerts", [name], p.get("alerts"))
    _health(f, name, _dict(p.get("health")))
    _backend(f, name, p)
    source = _dict(p.get("source"))
    f.add("edgewatch_source_up", [name], source.get("state") == "running")
    if p.get("kind") == "sensor":
        _sensor(f, name, p, source)
        return
    f.add("edgewatch_frames_captured", [name], source.get("frames_captured"))
    f.add("edgewatch_frames_processed", [name], p.get("frames_processed"))
    f.add("edgewatch_inferences", [name], p.get("frames_processed"))
    f.add("edgewatch_frames_dropped", [name, "source_overrun"], source.get("frames_dropped"))
    f.add("edgewatch_frames_dropped", [name, "pipeline_overrun"], p.get("frames_dropped"))
    f.add("edgewatch_frames_dropped", [name, "error"], p.get("frame_errors"))
    f.add("edgewatch_source_reconnects", [name], source.get("reconnects"))


def _sensor(f: _Families, name: str, p: Mapping[str, Any], source: Mapping[str, Any]) -> None:
    f.add("edgewatch_sensor_messages", [name], source.get("received"))
    for reason, n in _dict(source.get("dropped")).items():
        f.add("edgewatch_sensor_messages_dropped", [name, reason], n)
    f.add("edgewatch_sensor_readings", [name], p.get("readings"))
    for reason, n in _dict(_dict(p.get("windower")).get("dropped")).items():
        f.add("edgewatch_sensor_readings_dropped", [name, reason], n)
    f.add("edgewatch_windows", [name], p.get("windows"))
    for reason, n in _dict(p.get("windows_skipped")).items():
        f.add("edgewatch_windows_skipped", [name, reason], n)
    f.add("edgewatch_model_calls", [name], p.get("model_calls"))
    f.add("edgewatch_inferences", [name], p.get("windows_scored"))


def _health(f: _Families, name: str, health: Mapping[str, Any]) -> None:
    """The pipeline's ``health`` part (``runtime.health``), when there is one."""
    for stage, n in _dict(health.get("stuck")).items():
        f.add("edgewatch_pipeline_stuck", [name, stage], n)
    f.add("edgewatch_pipeline_last_progress_age_seconds", [name], health.get("last_progress_age_s"))


def _backend(f: _Families, name: str, p: Mapping[str, Any]) -> None:
    model = _dict(p.get("model"))
    active = _dict(p.get("providers")).get("active")
    provider = ",".join(map(str, active)) if isinstance(active, list) else ""
    labels = [name, str(model.get("name", "")), str(model.get("version", ""))]
    f.add_info("edgewatch_backend", [*labels, str(model.get("backend", "")), provider])
    backend = _dict(p.get("backend"))
    if "fallback" in backend:
        f.add("edgewatch_backend_fallback", [name], bool(backend["fallback"]))


def _mqtt(f: _Families, mqtt: object) -> None:
    if not isinstance(mqtt, Mapping):
        return
    f.add("edgewatch_mqtt_connected", [], bool(mqtt.get("connected")))
    for key in ("connects", "disconnects", "failed_connects", "published", "acked", "rejected"):
        f.add(f"edgewatch_mqtt_{key}", [], mqtt.get(key))
    f.add("edgewatch_mqtt_pending", [], mqtt.get("pending"))


def _sinks(f: _Families, sinks: list[Mapping[str, Any]]) -> None:
    seen: dict[str, int] = {}
    for sink in sinks:
        kind = str(sink.get("type", "sink"))
        seen[kind] = seen.get(kind, 0) + 1
        label = kind if seen[kind] == 1 else f"{kind}-{seen[kind]}"
        f.add("edgewatch_sink_published", [label], sink.get("published"))
        f.add("edgewatch_sink_acked", [label], sink.get("acked"))
        f.add("edgewatch_sink_unacked", [label], sink.get("unacked"))
        outbox = _dict(sink.get("outbox"))
        if not outbox:
            continue
        for key in ("depth", "bytes", "inflight"):
            f.add(f"edgewatch_outbox_{key}", [label], outbox.get(key))
        f.add("edgewatch_outbox_oldest_age_seconds", [label], outbox.get("oldest_age_s") or 0.0)
        f.add("edgewatch_outbox_replayed", [label], outbox.get("replayed"))
        for reason, n in _dict(outbox.get("dropped")).items():
            f.add("edgewatch_alerts_dropped", [label, reason], n)


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _dicts(value: object) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []
