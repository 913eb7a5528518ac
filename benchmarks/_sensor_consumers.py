"""The sensor benchmark's consumers, each run in its own process (multiprocessing, spawn).

* ``raw``: a paho subscriber whose ``on_message`` does ``json.loads(payload)`` and nothing else;
* ``naive`` / ``naive_hop``: a paho ``on_message`` that decodes the reading, appends it to its
  key's last-``size`` readings and, once the key has a full window, computes that window's
  features (edgewatch's own ``FeatureSpec``, so both compute the same thing), runs onnxruntime on
  the one feature row and publishes the score (QoS 0). ``naive`` does it for every message (the
  issue's "model run per message"); ``naive_hop`` only when the key completes a hop, i.e. exactly
  the windows edgewatch scores, one model call each;
* ``edgewatch``: ``runtime.app.App`` built from a device config file, started as ``edgewatch
  run`` starts it; instead of the CLI's status loop, the process copies the pipeline's counters
  into shared memory every 10 ms so the benchmark sees progress without waiting for a status
  message.

Every consumer publishes its progress in a shared ``Counters`` array and sets ``ready`` once it
is subscribed; errors go back through a pipe as ``("error", text)``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ConsumerKind = Literal["raw", "naive", "naive_hop", "edgewatch"]
PROCESSED, RECEIVED, DROPPED, ALERTS = range(4)
N_COUNTERS = 4
SUBSCRIBE_TIMEOUT_S = 10.0
EDGEWATCH_POLL_S = 0.01

Counters = Any
"""A ``multiprocessing.RawArray('q', N_COUNTERS)``: one writer (the consumer), lock-free reads."""


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    kind: ConsumerKind
    host: str
    port: int
    subscription: str  # e.g. "$share/bench/bench/+/data"
    qos: int = 1
    protocol: Literal["5", "3.1.1"] = "5"
    bundle: str = ""  # naive consumers: the model bundle directory
    result_root: str = "bench-naive"
    config: str = ""  # edgewatch: the device config file
    log_file: str = ""  # edgewatch: where its log goes


def consumer_main(
    spec: ConsumerSpec,
    counters: Counters,
    ready: Any,  # multiprocessing.Event
    stop: Any,  # multiprocessing.Event
    conn: Connection,
) -> None:
    """Process entry point for every consumer kind."""
    try:
        if spec.kind == "edgewatch":
            _run_edgewatch(spec, counters, ready, stop)
        else:
            _run_paho(spec, counters, ready, stop)
    except Exception as exc:
        conn.send(("error", f"{spec.kind} consumer: {type(exc).__name__}: {exc}"))
        raise


# --------------------------------------------------------------------------- paho consumers


class _NaiveScorer:
    """Per message: window of the key's last ``size`` readings → features → model → publish."""

    def __init__(self, spec: ConsumerSpec, every_message: bool) -> None:
        import numpy as np
        import onnxruntime as ort

        from runtime.backends.onnxruntime import OrtBackendConfig, session_options
        from runtime.model import read_manifest

        bundle = Path(spec.bundle)
        manifest = read_manifest(bundle)
        if manifest.sensor is None:
            raise RuntimeError(f"{bundle} is not a sensor model (no `sensor` in its manifest)")
        self.np = np
        self.fields = tuple(manifest.sensor.fields)
        self.size = int(manifest.sensor.window.size)
        self.hop = int(manifest.sensor.window.hop)
        self.features = manifest.sensor.features
        self.session = ort.InferenceSession(
            str(bundle / manifest.file),
            session_options(OrtBackendConfig()),
            providers=["CPUExecutionProvider"],
        )
        self.input_name = manifest.inputs[0].name
        self.score_output = manifest.sensor.score_output
        self.every_message = every_message
        self.result_root = spec.result_root
        self.buffers: dict[str, deque[tuple[float, ...]]] = {}
        self.counts: dict[str, int] = {}

    def __call__(self, client: mqtt.Client, topic: str, payload: bytes | bytearray) -> None:
        doc = json.loads(payload)
        key = topic.split("/")[1]
        buf = self.buffers.get(key)
        if buf is None:
            buf = self.buffers[key] = deque(maxlen=self.size)
            self.counts[key] = 0
        buf.append((doc["ts"], *(doc[f] for f in self.fields)))
        n = self.counts[key] = self.counts[key] + 1
        if n < self.size or (not self.every_message and (n - self.size) % self.hop):
            return
        np = self.np
        rows = np.asarray(buf, np.float64)
        ts = (rows[:, 0] * 1e9).astype(np.int64)
        features = self.features.compute(rows[None, :, 1:], ts[None, :])
        (score,) = self.session.run([self.score_output], {self.input_name: features})
        result = b'{"ts":%.6f,"score":%.6f}' % (doc["ts"], float(score[0]))
        client.publish(f"{self.result_root}/{key}/score", result, qos=0)


def _run_paho(spec: ConsumerSpec, counters: Counters, ready: Any, stop: Any) -> None:
    scorer = None if spec.kind == "raw" else _NaiveScorer(spec, spec.kind == "naive")
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-{spec.kind}-{time.monotonic_ns() % 10**6}",
        protocol=mqtt.MQTTv5 if spec.protocol == "5" else mqtt.MQTTv311,
    )
    subscribed = threading.Event()
    loads = json.loads

    def on_connect(c: mqtt.Client, _u: object, _f: object, rc: Any, _p: object) -> None:
        if not rc.is_failure:
            c.subscribe(spec.subscription, spec.qos)

    def on_subscribe(_c: mqtt.Client, _u: object, _m: int, codes: list[Any], _p: object) -> None:
        if all(not rc.is_failure for rc in codes):
            subscribed.set()

    if scorer is None:

        def on_message(c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            loads(msg.payload)
            counters[PROCESSED] += 1

    else:

        def on_message(c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            scorer(c, msg.topic, msg.payload)
            counters[PROCESSED] += 1

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(spec.host, spec.port, keepalive=30)
    client.loop_start()
    try:
        if not subscribed.wait(SUBSCRIBE_TIMEOUT_S):
            raise RuntimeError(
                f"not subscribed to {spec.subscription} within {SUBSCRIBE_TIMEOUT_S} s"
            )
        ready.set()
        stop.wait()
    finally:
        client.disconnect()
        client.loop_stop()


# --------------------------------------------------------------------------- edgewatch


def _run_edgewatch(spec: ConsumerSpec, counters: Counters, ready: Any, stop: Any) -> None:
    from runtime.app import App
    from runtime.config.loader import load_config
    from runtime.sensor_pipeline import SensorPipeline

    logging.basicConfig(
        filename=spec.log_file or None,
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = App.from_config(load_config(Path(spec.config)))
    if app.failed or len(app.pipelines) != 1:
        raise RuntimeError(f"edgewatch could not build its pipeline: {app.failed}")
    pipeline = app.pipelines[0]
    if not isinstance(pipeline, SensorPipeline):
        raise RuntimeError(f"expected a sensor pipeline, got {type(pipeline).__name__}")
    app.start()
    try:
        if app.link is None or not app.link.wait_connected(SUBSCRIBE_TIMEOUT_S):
            raise RuntimeError("edgewatch did not connect to the broker")
        time.sleep(0.3)  # the SUBACK follows the CONNACK; the warm-up run checks delivery
        ready.set()
        windower = pipeline.windower
        while not stop.wait(EDGEWATCH_POLL_S):
            source = pipeline.source.status()
            dropped = source["dropped"]
            assert isinstance(dropped, dict)
            counters[PROCESSED] = pipeline.stats.readings
            counters[RECEIVED] = int(str(source["received"]))
            counters[DROPPED] = sum(dropped.values()) + sum(windower.dropped.values())
            counters[ALERTS] = pipeline.stats.alerts
    finally:
        app.stop()
