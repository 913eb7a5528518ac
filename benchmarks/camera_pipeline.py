"""Camera pipeline benchmark: edgewatch end to end against its parts and a naive loop.

On a generated 640x480 mp4v video and the MobileNetV2-size classifier bundle, one run measures

  (a) raw ``InferenceSession.run`` on pre-decoded, preprocessed frames (edgewatch's session
      options, taken from the same config object the app is built from);
  (b) decoding only (``cv2.VideoCapture.read`` loop);
  (p) preprocessing only (``runtime.processing.preprocess.Preprocessor`` on decoded frames);
  (c) a naive single loop: read -> preprocess -> run -> publish a small JSON QoS 1 message per
      frame with paho and wait for its PUBACK;
  (d) edgewatch end to end (``App.from_config``, camera source with ``pace: max``, an mqtt sink)
      to a real Mosquitto on a free loopback port; alerts come from a threshold rule that flips
      with the scene, so capture->PUBACK latency is measured on every scene change.

The whole set is repeated ``--runs`` times; medians (and min/max) are reported, with the targets
d >= 0.9 * min(a, b) and d >= 1.3 * c judged on the medians of the per-run ratios.

Run: ``.venv/bin/python benchmarks/camera_pipeline.py [--runs 5] [--frames 300] [--threads 1]``
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import onnxruntime as ort
import paho.mqtt.client as mqtt
import yaml
from _common import (
    Stopwatch,
    Summary,
    fmt,
    machine_description,
    markdown_table,
    p50,
    p99,
    progress,
    rate,
    repeat_runs,
)
from numpy.typing import NDArray
from paho.mqtt.enums import CallbackAPIVersion

from runtime.app import App
from runtime.backends.onnxruntime import OrtBackendConfig, session_options
from runtime.config.loader import LoadedConfig, load_config
from runtime.model import read_manifest
from runtime.processing.postprocess.base import POSTPROCESSORS, Postprocessor
from runtime.processing.preprocess import Geometry, Preprocessor
from runtime.sinks.mqtt import MqttSink
from tools.demo_models import BENCHMARK_NAME, VERSION, build_benchmark_model
from tools.mosquitto import MosquittoBroker
from tools.scenes import draw_scene, sample_layout

REPO = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT, FPS = 640, 480, 30.0
MODEL_KEY = "bench"
PIPELINE = "cam"
DEVICE_ID = "bench-gw"
TOPIC_PREFIX = "bench"
SCENES = ("lit", "dim")
"""The video alternates a lit conveyor and the same conveyor with the lights dimmed: the random
network's top-1 is the same class for both, but its top-5 differs, which the rule can use."""
DIM_GAIN = 0.25
PUBACK_TIMEOUT_S = 10.0
WARMUP_RUNS = 2
TARGET_VS_MIN_AB = 0.9
TARGET_VS_NAIVE = 1.3


class BenchmarkError(RuntimeError):
    """The benchmark could not set itself up or a variant misbehaved."""


# --------------------------------------------------------------------------- inputs


def ensure_bundle(models_root: Path, scratch: Path) -> Path:
    """The MobileNetV2 bench bundle from ``models_root``, else built (about 1 s) in ``scratch``."""
    bundle = models_root / BENCHMARK_NAME / VERSION
    if (bundle / "manifest.json").is_file():
        return bundle
    progress(f"{bundle} not found; building it in a temp dir (make models puts it there)")
    return build_benchmark_model(scratch)


def write_video(path: Path, frames: int, segment_frames: int) -> list[str]:
    """An mp4v video of one conveyor view whose lighting flips every ``segment_frames`` frames;
    returns each frame's scene name."""
    rng = np.random.default_rng(1)
    layout = sample_layout(rng, WIDTH, HEIGHT)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise BenchmarkError(f"cv2.VideoWriter cannot write mp4v to {path}")
    scenes = [SCENES[(i // segment_frames) % 2] for i in range(frames)]
    try:
        for i, scene in enumerate(scenes):
            image = draw_scene(layout, None, i / FPS, rng)
            if scene == "dim":
                image = np.asarray(cv2.convertScaleAbs(image, alpha=DIM_GAIN), np.uint8)
            writer.write(image)
    finally:
        writer.release()
    return scenes


def decode_all(video: Path) -> list[NDArray[np.uint8]]:
    cap = cv2.VideoCapture(str(video), cv2.CAP_ANY)
    if not cap.isOpened():
        raise BenchmarkError(f"cv2.VideoCapture cannot open {video}")
    images: list[NDArray[np.uint8]] = []
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                break
            images.append(np.asarray(image, np.uint8))
    finally:
        cap.release()
    return images


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class RuleChoice:
    """A threshold rule that raises on one scene and clears on the other."""

    label: str
    raise_on: str
    raise_score: float
    margin: float  # lowest raising score minus highest other score
    expected_alerts: int


def write_config(
    path: Path,
    *,
    port: int,
    bundle: Path,
    video: Path,
    threads: int,
    rule: RuleChoice | None,
    live_fps: float | None = None,
) -> LoadedConfig:
    """Write the device config and load it the way ``edgewatch run`` does."""
    label, raise_score = ("*", 1.0) if rule is None else (rule.label, rule.raise_score)
    source: dict[str, Any] = {"type": "camera", "uri": str(video), "pace": "max"}
    if live_fps is not None:  # played like a live camera: latest-frame semantics, real time
        source = {"type": "camera", "uri": str(video), "pace": "native", "fps": live_fps}
    config = {
        "device": {"id": DEVICE_ID},
        "mqtt": {
            "host": "127.0.0.1",
            "port": port,
            "topic_prefix": TOPIC_PREFIX,
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 1.0,
        },
        "models": {
            MODEL_KEY: {
                "bundle": str(bundle),
                "backend": {"type": "onnxruntime", "intra_op_threads": threads},
            }
        },
        "pipelines": [
            {
                "name": PIPELINE,
                "source": source,
                "model": MODEL_KEY,
                "rules": {
                    "scene-flip": {
                        "type": "threshold",
                        "labels": [label],
                        "raise_score": raise_score,
                        "raise_frames": 1,
                        "clear_frames": 1,
                    }
                },
            }
        ],
        "sinks": [{"type": "mqtt", "qos": 1}],
        "status_interval_s": 60,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return load_config(path)


def backend_config(loaded: LoadedConfig) -> OrtBackendConfig:
    backend = loaded.config.models[MODEL_KEY].backend
    if not isinstance(backend, OrtBackendConfig):
        raise BenchmarkError(f"expected an onnxruntime backend, got {type(backend).__name__}")
    return backend


def open_session(
    model_path: Path, backend: OrtBackendConfig, sample: NDArray[np.generic]
) -> ort.InferenceSession:
    """A session with exactly the options and providers edgewatch's OrtBackend builds, warmed up
    like ``LoadedModel.load`` does (two runs)."""
    providers = [(p, backend.provider_options.get(p, {})) for p in backend.providers]
    session = ort.InferenceSession(str(model_path), session_options(backend), providers=providers)
    feeds = {session.get_inputs()[0].name: np.zeros_like(sample)}
    for _ in range(WARMUP_RUNS):
        session.run(None, feeds)
    return session


def choose_rule(
    session: ort.InferenceSession,
    tensors: Sequence[NDArray[np.generic]],
    scenes: Sequence[str],
    postprocessor: Postprocessor,
    geometry: Geometry,
) -> RuleChoice:
    """Run every frame once (a raw run) and pick the label whose score, as the threshold rule sees
    it (the postprocessor's top-k, 0 when absent), best separates the two scenes."""
    input_name = session.get_inputs()[0].name
    per_frame: list[dict[str, float]] = []
    for tensor in tensors:
        outputs = session.run(None, {input_name: tensor})
        classes, _ = postprocessor.decode([np.asarray(o, np.float32) for o in outputs], geometry)
        per_frame.append({c.label: c.score for c in classes})
    labels = sorted({label for scores in per_frame for label in scores})
    best: RuleChoice | None = None
    for label in labels:
        score = np.array([s.get(label, 0.0) for s in per_frame])
        for raise_on in SCENES:
            on = np.array([s == raise_on for s in scenes])
            low_hit, high_miss = float(score[on].min()), float(score[~on].max())
            margin = low_hit - high_miss
            if best is None or margin > best.margin:
                threshold = (low_hit + high_miss) / 2
                best = RuleChoice(label, raise_on, threshold, margin, count_flips(score, threshold))
    if best is None or best.margin <= 0:
        raise BenchmarkError(
            "no label's top-k score separates the two scenes, so the rule can't raise regularly; "
            f"best was {best}"
        )
    return best


def count_flips(scores: NDArray[np.float64], threshold: float) -> int:
    """Alerts a raise_frames=1/clear_frames=1 threshold rule emits over ``scores``."""
    raised, alerts = False, 0
    for s in scores:
        if (s >= threshold) != raised:
            raised, alerts = not raised, alerts + 1
    return alerts


# --------------------------------------------------------------------------- variants


def bench_raw_inference(
    session: ort.InferenceSession, tensors: Sequence[NDArray[np.generic]]
) -> float:
    """(a) frames/s of ``session.run`` alone."""
    input_name = session.get_inputs()[0].name
    output_names = [o.name for o in session.get_outputs()]
    with Stopwatch() as sw:
        for tensor in tensors:
            session.run(output_names, {input_name: tensor})
    return rate(len(tensors), sw.seconds)


def bench_decode(video: Path) -> tuple[float, int]:
    """(b) frames/s of the ``VideoCapture.read`` loop, and the frame count."""
    cap = cv2.VideoCapture(str(video), cv2.CAP_ANY)
    if not cap.isOpened():
        raise BenchmarkError(f"cv2.VideoCapture cannot open {video}")
    frames = 0
    try:
        with Stopwatch() as sw:
            while cap.read()[0]:
                frames += 1
    finally:
        cap.release()
    return rate(frames, sw.seconds), frames


def bench_preprocess(preprocessor: Preprocessor, images: Sequence[NDArray[np.uint8]]) -> float:
    """(p) frames/s of edgewatch's preprocessing alone."""
    with Stopwatch() as sw:
        for image in images:
            preprocessor(image)
    return rate(len(images), sw.seconds)


class NaivePublisher:
    """A plain paho client the way a quick script would use one: connect, loop_start, publish."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-naive")
        self._connected = threading.Event()
        self.client.on_connect = lambda *_args: self._connected.set()
        rc = self.client.connect("127.0.0.1", port, keepalive=30)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise BenchmarkError(f"naive client: connect failed: {mqtt.error_string(rc)}")
        self.client.loop_start()
        if not self._connected.wait(5.0):
            self.close()
            raise BenchmarkError("naive client: no CONNACK within 5 s")

    def publish_and_wait(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise BenchmarkError(f"naive publish failed: {mqtt.error_string(info.rc)}")
        info.wait_for_publish(PUBACK_TIMEOUT_S)
        if not info.is_published():
            raise BenchmarkError(f"naive publish: no PUBACK within {PUBACK_TIMEOUT_S} s")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def bench_naive(
    video: Path,
    preprocessor: Preprocessor,
    session: ort.InferenceSession,
    publisher: NaivePublisher,
) -> tuple[float, list[float]]:
    """(c) frames/s of read -> preprocess -> run -> publish QoS 1 -> wait for PUBACK, one loop;
    and each frame's capture->PUBACK latency (ms)."""
    input_name = session.get_inputs()[0].name
    topic = f"{TOPIC_PREFIX}/naive/results"
    cap = cv2.VideoCapture(str(video), cv2.CAP_ANY)
    if not cap.isOpened():
        raise BenchmarkError(f"cv2.VideoCapture cannot open {video}")
    latencies: list[float] = []
    frames = 0
    try:
        with Stopwatch() as sw:
            while True:
                ok, image = cap.read()
                if not ok:
                    break
                captured = time.monotonic_ns()
                tensor, _ = preprocessor(cast(NDArray[np.uint8], image))
                logits = session.run(None, {input_name: tensor})[0].reshape(-1)
                top = int(np.argmax(logits))
                payload = {
                    "frame": frames,
                    "class_id": top,
                    "logit": float(logits[top]),
                    "ts": time.time(),
                }
                publisher.publish_and_wait(topic, json.dumps(payload).encode())
                latencies.append((time.monotonic_ns() - captured) / 1e6)
                frames += 1
    finally:
        cap.release()
    return rate(frames, sw.seconds), latencies


def bench_overlapped(
    video: Path, preprocessor: Preprocessor, session: ort.InferenceSession
) -> float:
    """(e) reference, not a target: decode + preprocess on a second thread, handing tensors to
    ``session.run`` through a 1-slot queue (no frame dropped). Shows what a pipeline whose
    inference thread only infers can reach on this machine, GIL and core sharing included."""
    input_name = session.get_inputs()[0].name
    handoff: queue.Queue[NDArray[np.generic] | None] = queue.Queue(maxsize=1)
    stop = threading.Event()
    failure: list[BaseException] = []

    def put(item: NDArray[np.generic] | None) -> None:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def produce() -> None:
        cap = cv2.VideoCapture(str(video), cv2.CAP_ANY)
        try:
            while not stop.is_set():
                ok, image = cap.read()
                if not ok:
                    break
                put(preprocessor(cast(NDArray[np.uint8], image))[0])
        except Exception as exc:  # noqa: BLE001 - re-raised on the measuring thread
            failure.append(exc)
        finally:
            cap.release()
            put(None)

    frames = 0
    producer = threading.Thread(target=produce, name="bench-overlap-producer", daemon=True)
    with Stopwatch() as sw:
        producer.start()
        try:
            while (tensor := handoff.get()) is not None:
                session.run(None, {input_name: tensor})
                frames += 1
        finally:
            stop.set()
            producer.join(5.0)
    if failure:
        raise BenchmarkError(f"overlapped reference: producer failed: {failure[0]!r}")
    return rate(frames, sw.seconds)


@dataclass(frozen=True, slots=True)
class EdgewatchRun:
    fps: float
    frames: int
    captured: int
    dropped: int
    frame_errors: int
    alerts: int
    acked: int
    latencies_ms: list[float]


def bench_edgewatch(loaded: LoadedConfig, expected_frames: int) -> EdgewatchRun:
    """(d) edgewatch end to end: frames processed / wall time from ``App.start()`` until the
    source ended and the pipeline thread returned; then waits for every PUBACK."""
    app = App.from_config(loaded)
    if app.failed or len(app.pipelines) != 1:
        raise BenchmarkError(f"edgewatch could not build the pipeline: {app.failed}")
    pipeline = app.pipelines[0]
    sink = next((s for s in app.sinks if isinstance(s, MqttSink)), None)
    if sink is None:
        raise BenchmarkError("the config has no mqtt sink")
    try:
        with Stopwatch() as sw:
            app.start()
            finished = app.wait(timeout_s=max(60.0, expected_frames / 2.0))
        if not finished:
            raise BenchmarkError("the edgewatch pipeline did not finish the video in time")
        deadline = time.monotonic() + PUBACK_TIMEOUT_S
        while time.monotonic() < deadline:
            status = sink.status()
            if status["acked"] == status["published"]:
                break
            time.sleep(0.01)
        status = sink.status()
        source = pipeline.source.status()
        return EdgewatchRun(
            fps=rate(pipeline.stats.frames_processed, sw.seconds),
            frames=pipeline.stats.frames_processed,
            captured=source.frames_captured,
            dropped=source.frames_dropped,
            frame_errors=pipeline.stats.frame_errors,
            alerts=pipeline.stats.alerts,
            acked=int(str(status["acked"])),
            latencies_ms=sink.ack_latencies_ms(),
        )
    finally:
        app.stop()


# --------------------------------------------------------------------------- report


def ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


ROWS: tuple[tuple[str, str, str], ...] = (
    ("a_fps", "(a) raw session.run", "frames/s"),
    ("b_fps", "(b) decode only", "frames/s"),
    ("p_fps", "(p) preprocess only", "frames/s"),
    ("c_fps", "(c) naive loop (PUBACK per frame)", "frames/s"),
    ("d_fps", "(d) edgewatch end to end", "frames/s"),
    ("d_over_a", "d / a", "ratio"),
    ("d_over_c", "d / c", "ratio"),
    ("d_over_min_ab", "d / min(a, b)", "ratio"),
    ("d_p50_ms", "(d) capture->PUBACK p50", "ms"),
    ("d_p99_ms", "(d) capture->PUBACK p99", "ms"),
    ("c_p50_ms", "(c) capture->PUBACK p50", "ms"),
    ("c_p99_ms", "(c) capture->PUBACK p99", "ms"),
    ("d_alerts", "(d) alerts acked per run", "count"),
    ("d_dropped", "(d) frames dropped by the source", "count"),
    ("e_fps", "(e) ref: decode+preprocess thread -> run", "frames/s"),
    ("e_over_a", "e / a", "ratio"),
    ("f_fps", "(f) edgewatch, file played as a live camera", "frames/s"),
    ("f_p50_ms", "(f) capture->PUBACK p50 at live pace", "ms"),
    ("f_p99_ms", "(f) capture->PUBACK p99 at live pace", "ms"),
    ("f_dropped", "(f) frames dropped (latest-frame)", "count"),
    ("load_1m", "1-min load average after the run", "load"),
)
TARGETS = {"d_over_min_ab": TARGET_VS_MIN_AB, "d_over_c": TARGET_VS_NAIVE}


def verdicts(summary: dict[str, Summary]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, target in TARGETS.items():
        value = summary[key].median
        out[key] = {"target": target, "median": value, "pass": bool(value >= target)}
    return out


def report_table(summary: dict[str, Summary]) -> str:
    judged = verdicts(summary)
    rows = []
    for key, name, unit in ROWS:
        s = summary.get(key)
        if s is None:
            continue
        digits = 2 if unit in ("ratio", "load") else 0 if unit == "count" else 1
        target = judged.get(key)
        verdict = (
            ""
            if target is None
            else (f"≥ {target['target']:.2f}  {'PASS' if target['pass'] else 'MISS'}")
        )
        rows.append(
            [
                name,
                unit,
                fmt(s.median, digits),
                fmt(s.minimum, digits),
                fmt(s.maximum, digits),
                verdict,
            ]
        )
    return markdown_table(["metric", "unit", "median", "min", "max", "target"], rows, "llrrrl")


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="camera_pipeline.py", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--runs", type=int, default=5, help="repeat the whole set N times (5)")
    parser.add_argument("--frames", type=int, default=300, help="frames in the video (300)")
    parser.add_argument(
        "--threads", type=int, default=1, help="onnxruntime intra-op threads, every variant (1)"
    )
    parser.add_argument(
        "--segment-frames", type=int, default=5, help="frames per scene before it flips (5)"
    )
    parser.add_argument(
        "--models", type=Path, default=REPO / "models", help="bundle root (default: models/)"
    )
    parser.add_argument(
        "--live-fps",
        type=float,
        default=30.0,
        help="also run edgewatch with the file played as a live camera at this rate, for "
        "capture->PUBACK latency without back-pressure queueing (30; 0 skips it)",
    )
    parser.add_argument("--json", type=Path, default=None, help="save the results here")
    parser.add_argument("--log-level", default="WARNING", help="runtime log level (WARNING)")
    args = parser.parse_args(argv)
    for name in ("runs", "frames", "threads", "segment_frames"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    machine = machine_description()
    with tempfile.TemporaryDirectory(prefix="edgewatch-bench-") as tmp:
        work = Path(tmp)
        bundle = ensure_bundle(args.models, work / "models")
        manifest = read_manifest(bundle)
        video = work / "video.mp4"
        progress(f"rendering {args.frames} frames of {WIDTH}x{HEIGHT} into {video.name}")
        scenes = write_video(video, args.frames, args.segment_frames)
        images = decode_all(video)
        if len(images) != args.frames:
            raise BenchmarkError(f"{video} decodes to {len(images)} frames, wrote {args.frames}")
        preprocessor = Preprocessor(manifest.inputs[0])
        tensors = [preprocessor(image)[0] for image in images]
        geometry = preprocessor(images[0])[1]
        postprocessor = POSTPROCESSORS.get(manifest.postprocess.type).from_config(
            manifest.postprocess, manifest.labels
        )
        with MosquittoBroker(work / "broker") as broker:
            config_path = work / "device.yaml"

            def configure(rule: RuleChoice | None, live_fps: float | None = None) -> LoadedConfig:
                return write_config(
                    config_path if live_fps is None else work / "device-live.yaml",
                    port=broker.port,
                    bundle=bundle,
                    video=video,
                    threads=args.threads,
                    rule=rule,
                    live_fps=live_fps,
                )

            calibration = open_session(
                bundle / manifest.file, backend_config(configure(None)), tensors[0]
            )
            progress("raw calibration run: choosing a label that flips with the scene")
            rule = choose_rule(calibration, tensors, scenes, postprocessor, geometry)
            del calibration
            progress(
                f"rule: {rule.label} >= {rule.raise_score:.5f} raises on '{rule.raise_on}' "
                f"(margin {rule.margin:.5f}); expect {rule.expected_alerts} alerts per run"
            )
            loaded = configure(rule)  # (a) and (c) use the backend settings App gets from this
            live = configure(rule, live_fps=args.live_fps) if args.live_fps > 0 else None
            backend = backend_config(loaded)
            session = open_session(bundle / manifest.file, backend, tensors[0])
            publisher = NaivePublisher(broker.port)
            try:

                def run_once(i: int) -> dict[str, float]:
                    a = bench_raw_inference(session, tensors)
                    b, decoded = bench_decode(video)
                    p = bench_preprocess(preprocessor, images)
                    c, c_lat = bench_naive(video, preprocessor, session, publisher)
                    d = bench_edgewatch(loaded, args.frames)
                    e = bench_overlapped(video, preprocessor, session)
                    f = None if live is None else bench_edgewatch(live, args.frames)
                    if d.frames != decoded or d.frame_errors or d.alerts != rule.expected_alerts:
                        progress(
                            f"  warning: edgewatch processed {d.frames}/{decoded} frames, "
                            f"{d.frame_errors} errors, {d.alerts} alerts "
                            f"(expected {rule.expected_alerts})"
                        )
                    if d.acked != d.alerts:
                        progress(f"  warning: only {d.acked} of {d.alerts} alerts were acked")
                    return {
                        "a_fps": a,
                        "b_fps": b,
                        "p_fps": p,
                        "c_fps": c,
                        "d_fps": d.fps,
                        "d_over_a": ratio(d.fps, a),
                        "d_over_c": ratio(d.fps, c),
                        "d_over_min_ab": ratio(d.fps, min(a, b)),
                        "d_p50_ms": p50(d.latencies_ms),
                        "d_p99_ms": p99(d.latencies_ms),
                        "c_p50_ms": p50(c_lat),
                        "c_p99_ms": p99(c_lat),
                        "d_alerts": float(d.acked),
                        "d_dropped": float(d.dropped),
                        "e_fps": e,
                        "e_over_a": ratio(e, a),
                        **(
                            {}
                            if f is None
                            else {
                                "f_fps": f.fps,
                                "f_p50_ms": p50(f.latencies_ms),
                                "f_p99_ms": p99(f.latencies_ms),
                                "f_dropped": float(f.dropped),
                            }
                        ),
                        "load_1m": os.getloadavg()[0],
                    }

                def show(i: int, r: Mapping[str, float]) -> None:
                    progress(
                        f"run {i}/{args.runs}: a {r['a_fps']:.1f}  b {r['b_fps']:.0f}  "
                        f"p {r['p_fps']:.0f}  c {r['c_fps']:.1f}  d {r['d_fps']:.1f} frames/s; "
                        f"d/a {r['d_over_a']:.2f}  d/c {r['d_over_c']:.2f}; "
                        f"d p50/p99 {r['d_p50_ms']:.1f}/{r['d_p99_ms']:.1f} ms; "
                        f"e {r['e_fps']:.1f} frames/s; load {r['load_1m']:.2f}"
                    )

                runs, summary = repeat_runs(args.runs, run_once, show)
            finally:
                publisher.close()

    settings = {
        "runs": args.runs,
        "frames": args.frames,
        "size": f"{WIDTH}x{HEIGHT}",
        "segment_frames": args.segment_frames,
        "intra_op_threads": backend.intra_op_threads,
        "inter_op_threads": backend.inter_op_threads,
        "graph_optimization": backend.graph_optimization,
        "providers": backend.providers,
        "model": f"{manifest.name} {manifest.version}",
    }
    print(f"# camera pipeline benchmark\n\n{machine}\n")
    print(
        f"{args.frames} frames {WIDTH}x{HEIGHT} mp4v, model {settings['model']}, onnxruntime "
        f"intra-op {backend.intra_op_threads} / inter-op {backend.inter_op_threads} threads, "
        f"{args.runs} runs; rule {rule.label} >= {rule.raise_score:.4g} on '{rule.raise_on}'\n"
    )
    print(report_table(summary))
    judged = verdicts(summary)
    print(f"\ntargets: {'all PASS' if all(v['pass'] for v in judged.values()) else 'MISS'}")
    if args.json is not None:
        doc = {
            "benchmark": "camera_pipeline",
            "machine": machine,
            "settings": settings,
            "rule": asdict(rule),
            "runs": runs,
            "summary": {k: s.as_dict() for k, s in summary.items()},
            "targets": judged,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        progress(f"results saved to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
