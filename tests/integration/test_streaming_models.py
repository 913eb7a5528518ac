"""Stateful streaming models on real models from PyPI wheels: silero-vad's ONNX voice activity
detector (state in/out tensors, one state per microphone) through sensor pipelines, against the
model run by hand with its state carried window by window; interleaved microphones keep their own
state; a gap starts a microphone afresh; voice over a real Mosquitto raises a "voice" alert."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import paho.mqtt.client as mqtt
import pytest
import yaml
from ai_edge_litert.interpreter import Interpreter
from numpy.typing import NDArray
from paho.mqtt.enums import CallbackAPIVersion

from runtime.app import App
from runtime.backends.litert import LiteRtBackendConfig
from runtime.backends.onnxruntime import OrtBackendConfig
from runtime.config.base import PluginConfig
from runtime.config.loader import load_config
from runtime.messages import Alert, RuleEvent, SensorReading, WindowScore
from runtime.model import LoadedModel
from runtime.pipeline import AlertFactory
from runtime.processing.anomaly import AnomalyScorer
from runtime.processing.streaming import StreamingRunner
from runtime.processing.windows import Windower
from runtime.rules.sensor_base import SensorRule
from runtime.sensor_pipeline import SensorPipeline
from runtime.sinks.base import Sink, SinkContext
from runtime.sources.sensor_base import SensorSource, SensorSourceContext
from tests.brokers import (
    BrokerFactory,
    BrokerOptions,
    MosquittoBroker,
    SubscriberFactory,
    wait_until,
)
from tools.bundle import write_bundle
from tools.model_wheels import cached

pytestmark = pytest.mark.integration

SR = 16_000
HOP = 512  # silero-vad's chunk at 16 kHz
CONTEXT = 64  # silero's wrapper prepends the previous chunk's last 64 samples
WINDOW = HOP + CONTEXT
RATE_NS = 1_000_000_000 // SR
T0 = 1_767_225_600_000_000_000


# --------------------------------------------------------------------------- audio


def _resonate(x: NDArray[np.float64], freq: float, bandwidth: float) -> NDArray[np.float64]:
    """A two-pole resonator (one formant) with unit gain at DC."""
    r = np.exp(-np.pi * bandwidth / SR)
    c, d = 2 * r * np.cos(2 * np.pi * freq / SR), -r * r
    g = 1 - c - d
    y = np.zeros_like(x)
    y1 = y2 = 0.0
    for i, v in enumerate(x):
        y[i] = g * v + c * y1 + d * y2
        y1, y2 = y[i], y1
    return y


_VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480))


def speech_like(seconds: float, seed: int) -> NDArray[np.float32]:
    """Voiced speech without a recording: words of 2-3 syllables, each a glottal pulse train at a
    falling 100-160 Hz pitch through three vowel formants, fricative bursts, pauses between."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    out = np.zeros(n)
    pos = 0
    pulse = np.exp(-np.arange(80) / 12) * np.sin(np.arange(80) / 80 * np.pi)
    while pos < n:
        for _ in range(rng.integers(2, 4)):
            length = int(rng.uniform(0.12, 0.25) * SR)
            if pos + length > n:
                break
            t = np.arange(length) / SR
            f0 = rng.uniform(100, 160) * (1 - 0.25 * t / t[-1])
            pulses = np.diff(np.floor(np.cumsum(f0 / SR)), prepend=0)
            source = np.convolve(pulses, pulse, "same")
            formants = _VOWELS[rng.integers(len(_VOWELS))]
            y = sum(
                _resonate(source, f, bw) * a
                for f, bw, a in zip(formants, (80, 100, 120), (1.0, 0.6, 0.3), strict=True)
            )
            y = np.asarray(y) * np.sin(np.linspace(0, np.pi, length)) ** 0.5
            out[pos : pos + length] = y / np.abs(y).max()
            pos += length
            burst = int(0.03 * SR)
            if pos + burst < n:
                out[pos : pos + burst] = rng.normal(0, 0.05, burst)
                pos += burst
        pos += int(rng.uniform(0.1, 0.2) * SR)
    out += rng.normal(0, 0.002, n)
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


def noise(seconds: float, seed: int, level: float = 0.05) -> NDArray[np.float32]:
    return np.random.default_rng(seed).normal(0, level, int(seconds * SR)).astype(np.float32)


def quantize16(audio: NDArray[np.float32]) -> NDArray[np.float32]:
    """The audio as int16 PCM carries it, back in [-1, 1)."""
    return (np.round(audio * 32767).astype(np.int16).astype(np.float32) / 32768).astype(np.float32)


# --------------------------------------------------------------------------- silero by hand


class SileroByHand:
    """silero-vad's ONNX model run directly with onnxruntime, state carried call to call."""

    def __init__(self, path: Path) -> None:
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.reset()

    def reset(self) -> None:
        self.state = np.zeros((2, 1, 128), np.float32)

    def __call__(self, chunk: NDArray[np.float32]) -> float:
        out, self.state = self.session.run(
            None, {"input": chunk[None, :], "state": self.state, "sr": np.array(SR, np.int64)}
        )
        return float(out[0, 0])

    def stream(self, audio: NDArray[np.float32]) -> list[float]:
        """The probabilities of every window the pipeline cuts from ``audio``: WINDOW samples
        (the chunk and the previous chunk's context) every HOP samples."""
        return [self(audio[i : i + WINDOW]) for i in range(0, len(audio) - WINDOW + 1, HOP)]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def silero_path() -> Path:
    return cached("silero-vad")


def silero_manifest(**streaming: Any) -> dict[str, Any]:
    return {
        "backend": "onnxruntime",
        "inputs": [
            {"name": "input", "shape": [1, WINDOW], "dtype": "float32"},
            {"name": "state", "shape": [2, 1, 128], "dtype": "float32"},
            {"name": "sr", "shape": [], "dtype": "int64"},
        ],
        "outputs": [
            {"name": "output", "shape": [None, 1], "dtype": "float32"},
            {"name": "stateN", "shape": [None, None, None], "dtype": "float32"},
        ],
        "sensor": {
            "fields": ["audio"],
            "window": {"kind": "count", "size": WINDOW, "hop": HOP},
            "features": {"raw": True, "time": []},
            "feature_names": [f"audio.raw_{i}" for i in range(WINDOW)],
            "score_output": "output",
            "threshold": 0.5,
        },
        "streaming": {
            "state": [{"input": "state", "output": "stateN"}],
            "constants": {"sr": SR},
            **streaming,
        },
        "description": "silero-vad 6 (MIT), voice probability per 32 ms chunk at 16 kHz",
        "provenance": {"wheel": "silero-vad", "file": "silero_vad/data/silero_vad.onnx"},
    }


@pytest.fixture(scope="module")
def silero_bundle(tmp_path_factory: pytest.TempPathFactory, silero_path: Path) -> Path:
    root = tmp_path_factory.mktemp("models")
    return write_bundle(root, "silero-vad", "6.2.3", silero_path.read_bytes(), silero_manifest())


@pytest.fixture(scope="module")
def silero(silero_bundle: Path) -> Iterator[LoadedModel]:
    model = LoadedModel.load(silero_bundle, OrtBackendConfig(type="onnxruntime"))
    try:
        yield model
    finally:
        model.close()


@pytest.fixture(scope="module")
def by_hand(silero_path: Path) -> SileroByHand:
    return SileroByHand(silero_path)


# --------------------------------------------------------------------------- pipeline doubles


class Recorder(SensorRule):
    """Records every scored window (a test double for a rule); raises nothing."""

    config_type = PluginConfig

    def __init__(self) -> None:
        self.scores: dict[str, list[float]] = {}

    @classmethod
    def from_config(cls, config: PluginConfig, name: str, model_threshold: float) -> Recorder:
        raise NotImplementedError

    def on_window(self, window: WindowScore, now_mono_ns: int) -> list[RuleEvent]:
        self.scores.setdefault(window.key, []).append(window.score)
        return []


class NoSource(SensorSource):
    config_type = PluginConfig

    @classmethod
    def from_config(cls, config: PluginConfig, context: SensorSourceContext) -> NoSource:
        raise NotImplementedError

    def start(self) -> None:
        return None

    def read(self, timeout_s: float, max_readings: int = 4096) -> list[SensorReading]:
        return []

    def stop(self) -> None:
        return None

    @property
    def ended(self) -> bool:
        return True

    def status(self) -> dict[str, object]:
        return {}


class NoSink(Sink):
    config_type = PluginConfig

    @classmethod
    def from_config(cls, config: PluginConfig, context: SinkContext) -> NoSink:
        raise NotImplementedError

    def publish(self, alert: Alert) -> None:
        raise AssertionError(f"no alert expected, got {alert}")


def pipeline_for(
    model: LoadedModel, gap_s: float | None = None, **kwargs: Any
) -> tuple[SensorPipeline, Recorder]:
    scorer = AnomalyScorer.for_manifest(model.manifest, model.path)
    recorder = Recorder()
    pipeline = SensorPipeline(
        "mics",
        NoSource(),
        Windower(scorer.default_window(0.0, gap_s)),
        model,
        scorer,
        [("record", recorder)],
        [NoSink()],
        AlertFactory("gw-test"),
        **kwargs,
    )
    return pipeline, recorder


def readings(key: str, audio: NDArray[np.float32], t0_ns: int = T0) -> list[SensorReading]:
    return [
        SensorReading(key, t0_ns + i * RATE_NS, 0, ("audio",), np.array([v], np.float64))
        for i, v in enumerate(audio.tolist())
    ]


def interleave(*streams: Sequence[SensorReading]) -> list[SensorReading]:
    return [r for group in zip(*streams, strict=True) for r in group]


def feed(pipeline: SensorPipeline, rows: Sequence[SensorReading], batch: int = 1000) -> None:
    for lo in range(0, len(rows), batch):
        pipeline.process(rows[lo : lo + batch])


# --------------------------------------------------------------------------- tests


def test_silero_says_the_synthetic_speech_is_voice_and_noise_is_not(
    by_hand: SileroByHand,
) -> None:
    """The stand-in for a recording is one silero itself calls speech; noise and silence not."""
    results = {}
    for name, audio in {
        "speech": speech_like(2.0, seed=0),
        "noise": noise(2.0, seed=1),
        "silence": np.zeros(2 * SR, np.float32),
    }.items():
        by_hand.reset()
        results[name] = np.array(by_hand.stream(audio))
    assert (results["speech"] > 0.5).mean() > 0.6
    assert results["noise"].max() < 0.2 and results["silence"].max() < 0.2


def test_streaming_scores_equal_silero_run_by_hand_with_its_state_carried(
    silero: LoadedModel, by_hand: SileroByHand
) -> None:
    audio = quantize16(speech_like(1.5, seed=2))
    pipeline, recorder = pipeline_for(silero)
    feed(pipeline, readings("mic-1", audio))
    by_hand.reset()
    expected = by_hand.stream(audio)
    assert len(recorder.scores["mic-1"]) == len(expected) == (len(audio) - WINDOW) // HOP + 1
    assert recorder.scores["mic-1"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # the state matters: without it (every window from zeros) the scores are different
    stateless = []
    for i in range(0, len(audio) - WINDOW + 1, HOP):
        by_hand.reset()
        stateless.append(by_hand(audio[i : i + WINDOW]))
    assert np.abs(np.array(stateless) - np.array(expected)).max() > 0.05
    status = pipeline.status()
    assert status["streams"] == {
        "streams": 1,
        "max_streams": 1024,
        "per_stream_instances": False,
        "created": 1,
        "resets": 0,
        "gap_resets": 0,
        "evicted": 0,
        "instances_created": 0,
        "instances_closed": 0,
    }
    assert status["model_calls"] == len(expected)


def test_interleaved_microphones_keep_their_own_state(
    silero: LoadedModel, by_hand: SileroByHand
) -> None:
    audio = {
        "mic-1": quantize16(speech_like(1.2, seed=3)),
        "mic-2": quantize16(noise(1.2, seed=4)),
        "mic-3": quantize16(speech_like(1.2, seed=5)),
    }
    pipeline, recorder = pipeline_for(silero)
    feed(pipeline, interleave(*(readings(k, a) for k, a in audio.items())), batch=3000)
    for key, samples in audio.items():
        by_hand.reset()
        assert recorder.scores[key] == pytest.approx(by_hand.stream(samples), rel=1e-5, abs=1e-6)
    assert pipeline.streams is not None and sorted(pipeline.streams.keys) == sorted(audio)


def test_a_gap_starts_the_microphone_afresh(silero: LoadedModel, by_hand: SileroByHand) -> None:
    before = quantize16(speech_like(1.0, seed=6))
    after = quantize16(speech_like(1.0, seed=7))
    resumed_ns = T0 + len(before) * RATE_NS + 2_000_000_000  # 2 s without a sample
    pipeline, recorder = pipeline_for(silero, gap_s=0.5)
    other = quantize16(noise(2.0, seed=8))
    feed(pipeline, readings("mic-2", other[: len(other) // 2]))
    feed(pipeline, readings("mic-1", before) + readings("mic-1", after, resumed_ns))
    feed(pipeline, readings("mic-2", other[len(other) // 2 :], T0 + len(other) // 2 * RATE_NS))
    by_hand.reset()
    expected_before = by_hand.stream(before)
    carried = by_hand.stream(after)  # what the state would give had it not been reset
    by_hand.reset()
    expected_after = by_hand.stream(after)
    assert recorder.scores["mic-1"] == pytest.approx(
        expected_before + expected_after, rel=1e-5, abs=1e-6
    )
    assert np.abs(np.array(carried) - np.array(expected_after)).max() > 1e-3
    by_hand.reset()  # the other microphone's state went on across mic-1's gap
    assert recorder.scores["mic-2"] == pytest.approx(by_hand.stream(other), rel=1e-5, abs=1e-6)
    assert pipeline.stats.gaps == 1
    assert pipeline.streams is not None and pipeline.streams.stats.resets == 1


def test_more_microphones_than_max_streams_evict_the_least_recent(
    silero: LoadedModel, by_hand: SileroByHand
) -> None:
    audio = {f"mic-{i}": quantize16(speech_like(0.2, seed=10 + i)) for i in range(3)}
    pipeline, recorder = pipeline_for(silero, max_streams=2)
    for key in ("mic-0", "mic-1", "mic-2"):
        feed(pipeline, readings(key, audio[key][: 2 * HOP + CONTEXT]))
    # mic-0 was evicted when mic-2 came: its next windows start from a zero state
    feed(
        pipeline,
        readings("mic-0", audio["mic-0"][2 * HOP + CONTEXT :], T0 + (2 * HOP + CONTEXT) * RATE_NS),
    )
    assert pipeline.streams is not None
    assert pipeline.streams.stats.evicted == 2  # mic-0, then mic-1 when mic-0 came back
    assert pipeline.streams.keys == ["mic-2", "mic-0"]
    by_hand.reset()
    first = by_hand.stream(audio["mic-0"][: 2 * HOP + CONTEXT])
    by_hand.reset()
    rest = by_hand.stream(audio["mic-0"][2 * HOP :])
    assert recorder.scores["mic-0"] == pytest.approx(first + rest, rel=1e-5, abs=1e-6)


# --------------------------------------------------------------------------- over MQTT


@pytest.fixture
def audio_broker(make_broker: BrokerFactory) -> MosquittoBroker:
    return make_broker(BrokerOptions(extra_config=("max_queued_messages 100000",)))


def test_voice_on_one_microphone_raises_a_voice_alert_over_mqtt(
    tmp_path: Path,
    audio_broker: MosquittoBroker,
    subscriber: SubscriberFactory,
    silero_bundle: Path,
) -> None:
    """int16 PCM with a timestamp per sample, 512 samples a message, two microphones on a real
    Mosquitto → the silero bundle per microphone → a "voice" alert for the one that speaks."""
    config: dict[str, Any] = {
        "device": {"id": "gw-vad"},
        "mqtt": {"host": audio_broker.host, "port": audio_broker.port},
        "models": {"vad": {"bundle": str(silero_bundle)}},
        "sensor_pipelines": [
            {
                "name": "mics",
                "source": {
                    "type": "mqtt",
                    "topics": ["room/+/audio"],
                    "decoder": {
                        "type": "binary",
                        "format": "q h",
                        "fields": ["ts", "audio"],
                        "timestamp_index": 0,
                        "timestamp_format": "epoch_ns",
                        "repeat": True,
                        "key_topic_levels": [1],
                    },
                },
                "model": "vad",
                "max_lateness_s": 0,
                "rules": {"voice": {"type": "threshold", "label": "voice", "for_windows": 3}},
            }
        ],
        "sinks": [{"type": "mqtt", "qos": 1}],
        "status_interval_s": 60,
    }
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(config))
    alerts = subscriber(audio_broker, "edgewatch/gw-vad/alerts/#")
    app = App.from_config(load_config(path, {}))
    assert app.failed == []
    app.start()
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="mics")
    publisher.connect(audio_broker.host, audio_broker.port)
    publisher.loop_start()
    try:
        assert app.link is not None and app.link.wait_connected(5)
        wait_until(lambda: "Sending SUBACK" in audio_broker.log_text(), what="subscribed")
        t0 = time.time_ns() - 5_000_000_000
        mics = {"kitchen": speech_like(2.0, seed=20), "hall": noise(2.0, seed=21)}
        record = struct.Struct("<qh")
        sent = 0
        for lo in range(0, 2 * SR, HOP):
            for key, audio in mics.items():
                pcm = np.round(audio[lo : lo + HOP] * 32767).astype(np.int16)
                payload = b"".join(
                    record.pack(t0 + (lo + i) * RATE_NS, int(v)) for i, v in enumerate(pcm)
                )
                info = publisher.publish(f"room/{key}/audio", payload, qos=1)
                sent += len(pcm)
        info.wait_for_publish(10)
        (pipeline,) = app.pipelines
        wait_until(lambda: pipeline.status()["readings"] == sent, timeout_s=30, what="every sample")
        (first,) = alerts.wait_for(1, timeout_s=10)
        status = pipeline.status()
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        app.stop()
    alert = first.json()
    assert (alert["rule"], alert["label"], alert["state"]) == ("voice", "voice", "raised")
    assert alert["sensor"]["key"] == "kitchen" and alert["sensor"]["value"] > 0.5
    # the kitchen's voice raises and clears between words; the hall's noise raises nothing
    assert {m.json()["sensor"]["key"] for m in alerts.messages} == {"kitchen"}
    streams = status["streams"]
    assert isinstance(streams, dict) and streams["streams"] == 2 and streams["resets"] == 0


# --------------------------------------------------------------------------- int8 wake word


WAKE_INPUT = "input_audio"
WAKE_OUTPUT = "dense_1"
WAKE_IN_Q = {"scale": 0.10196078568696976, "zero_point": -128}
WAKE_OUT_Q = {"scale": 0.00390625, "zero_point": 0}
WAKE_FIELDS = [f"mel{i}" for i in range(40)]
FRAME_NS = 10_000_000


@pytest.fixture(scope="module")
def wake_path() -> Path:
    return cached("micro-wakeword-okay-nabu")


@pytest.fixture(scope="module")
def wake_word(tmp_path_factory: pytest.TempPathFactory, wake_path: Path) -> Iterator[LoadedModel]:
    """okay_nabu: int8 in, uint8 out, its streaming buffers in TFLite resource variables."""
    manifest = {
        "backend": "litert",
        "inputs": [
            {"name": WAKE_INPUT, "shape": [1, 3, 40], "dtype": "int8", "quantization": WAKE_IN_Q}
        ],
        "outputs": [
            {"name": WAKE_OUTPUT, "shape": [1, 1], "dtype": "uint8", "quantization": WAKE_OUT_Q}
        ],
        "sensor": {
            "fields": WAKE_FIELDS,
            "window": {"kind": "count", "size": 3, "hop": 3},
            "features": {"raw": True, "time": []},
            "feature_names": [f"{f}.raw_{i}" for i in range(3) for f in WAKE_FIELDS],
            "score_output": WAKE_OUTPUT,
            "threshold": 0.85,
        },
        "streaming": {"per_stream_instances": True},
        "description": "microWakeWord 'okay nabu' (pymicro-wakeword, Apache-2.0): three 10 ms "
        "frames of 40 spectral features a call",
    }
    root = tmp_path_factory.mktemp("wake")
    bundle = write_bundle(
        root, "okay-nabu", "2", wake_path.read_bytes(), manifest, file_name="model.tflite"
    )
    model = LoadedModel.load(bundle, LiteRtBackendConfig(type="litert"))
    try:
        yield model
    finally:
        model.close()


def wake_frames(seed: int, n: int = 40) -> list[NDArray[np.int8]]:
    """Quantized spectrogram frames, 3 per call, that make the model's output move (a plain
    random spectrogram leaves it at 0): a random spectral profile swept by a slow sine."""
    rng = np.random.default_rng(seed)
    profile = rng.integers(-128, 40) + rng.normal(0, 30, (1, 1, 40)) * rng.uniform(0, 2)
    spread, period = rng.uniform(0, 40), rng.uniform(1, 8)
    return [
        np.clip(profile + rng.normal(0, spread, (1, 3, 40)) + 40 * np.sin(k / period), -128, 127)
        .round()
        .astype(np.int8)
        for k in range(n)
    ]


class WakeByHand:
    """The model in an interpreter of its own, as pymicro-wakeword runs it: one per stream."""

    def __init__(self, path: Path) -> None:
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        interpreter.allocate_tensors()
        self.runner = interpreter.get_signature_runner()

    def __call__(self, frames: NDArray[np.int8]) -> float:
        out = self.runner(**{WAKE_INPUT: frames})[WAKE_OUTPUT]
        return float(out[0, 0]) * WAKE_OUT_Q["scale"]

    @classmethod
    def stream(cls, path: Path, frames: Sequence[NDArray[np.int8]]) -> list[float]:
        alone = cls(path)
        return [alone(f) for f in frames]


def test_wake_word_streams_get_their_own_interpreters(
    wake_word: LoadedModel, wake_path: Path
) -> None:
    frames = {"mic-a": wake_frames(47), "mic-b": wake_frames(293)}
    runner = StreamingRunner(wake_word)
    got: dict[str, list[float]] = {k: [] for k in frames}
    for a, b in zip(frames["mic-a"], frames["mic-b"], strict=True):
        for key, x in (("mic-a", a), ("mic-b", b)):
            got[key].append(float(runner.run(key, x)[0][0, 0]))
    alone = {k: WakeByHand.stream(wake_path, f) for k, f in frames.items()}
    assert got == alone
    assert sum(p > 0 for p in alone["mic-a"]) > 10  # the outputs carry information
    # one interpreter shared by both streams mixes their state: different outputs
    shared = WakeByHand(wake_path)
    mixed = [
        shared(x) for a, b in zip(frames["mic-a"], frames["mic-b"], strict=True) for x in (a, b)
    ]
    assert mixed[::2] != alone["mic-a"]
    assert runner.status()["instances_created"] == 2
    runner.close()
    assert runner.status()["instances_closed"] == 2


def frame_readings(
    key: str, frames: Sequence[NDArray[np.int8]], t0_ns: int = T0
) -> list[SensorReading]:
    """One reading per 10 ms spectrogram frame, as real values (the model quantizes them)."""
    scale, zero_point = WAKE_IN_Q["scale"], WAKE_IN_Q["zero_point"]
    rows = np.concatenate([f[0] for f in frames]).astype(np.float64)
    real = (rows - zero_point) * scale
    return [
        SensorReading(key, t0_ns + i * FRAME_NS, 0, tuple(WAKE_FIELDS), real[i])
        for i in range(real.shape[0])
    ]


def test_wake_word_pipeline_gives_each_microphone_its_interpreter_and_a_fresh_one_after_a_gap(
    wake_word: LoadedModel, wake_path: Path
) -> None:
    before, after, other = wake_frames(293, 20), wake_frames(47, 20), wake_frames(47)
    resumed_ns = T0 + 60 * FRAME_NS + 2_000_000_000
    pipeline, recorder = pipeline_for(wake_word, gap_s=0.5)
    a = frame_readings("mic-a", before) + frame_readings("mic-a", after, resumed_ns)
    b = frame_readings("mic-b", other)
    feed(pipeline, sorted(a + b, key=lambda r: r.ts_ns), batch=50)
    expected_after = WakeByHand.stream(wake_path, after)
    assert recorder.scores["mic-a"] == WakeByHand.stream(wake_path, before) + expected_after
    assert recorder.scores["mic-b"] == WakeByHand.stream(wake_path, other)
    carried = WakeByHand(wake_path)
    for x in before:
        carried(x)
    assert [carried(x) for x in after] != expected_after  # without the reset it would differ
    streams = pipeline.status()["streams"]
    assert isinstance(streams, dict)
    assert (streams["instances_created"], streams["resets"]) == (3, 1)
    pipeline.close()
    assert pipeline.status()["streams"]["instances_closed"] == 3  # type: ignore[index]
