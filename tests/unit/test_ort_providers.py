"""ONNX Runtime execution providers: name checks, options, skips and the CPU fallback.

Sessions are real (CPU); only an accelerator that can't exist on this machine is faked, by
claiming it is available and, for the failure path, by failing the session that asks for it."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
from pydantic import ValidationError

from runtime.backends.onnxruntime import CPU, OrtBackend, OrtBackendConfig
from runtime.config.loader import ConfigErrors, load_config
from runtime.errors import ModelError

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "demo-hazard-classifier" / "1.0.0" / "model.onnx"
CUDA = "CUDAExecutionProvider"
OPENVINO = "OpenVINOExecutionProvider"
REAL_SESSION = ort.InferenceSession


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """Records the providers every session is created with; sessions stay real."""
    calls: list[list[Any]] = []

    def spy(path: str, options: ort.SessionOptions, **kwargs: Any) -> ort.InferenceSession:
        calls.append(list(kwargs["providers"]))
        return REAL_SESSION(path, options, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    return calls


def claim_available(monkeypatch: pytest.MonkeyPatch, *providers: str) -> None:
    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: [*providers, *real])


def probs(backend: OrtBackend) -> Any:
    (out,) = backend.run({"image": np.zeros((1, 3, 64, 64), np.float32)})
    return out


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"providers": ["CUDAProvider"]}, r"unknown onnxruntime provider\(s\) CUDAProvider"),
        ({"providers": [CPU, CPU]}, "listed more than once"),
        (
            {"providers": [CPU], "provider_options": {CUDA: {"device_id": 0}}},
            "provider_options given for CUDAExecutionProvider, which is not in providers",
        ),
        (
            {"providers": [CPU], "provider_options": {"Cuda": {}}},
            r"unknown onnxruntime provider\(s\) Cuda",
        ),
    ],
)
def test_bad_provider_config_fails_validation(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        OrtBackendConfig(**config)


def test_unknown_provider_is_a_config_error_naming_the_valid_ones(tmp_path: Path) -> None:
    path = tmp_path / "device.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            device: {id: gw-1}
            models:
              m:
                bundle: bundles/m
                backend:
                  type: onnxruntime
                  providers: [CUDAProvider, CPUExecutionProvider]
            pipelines:
              - name: line1
                source: {type: camera, uri: a.mp4}
                model: m
                rules:
                  fire: {type: threshold, labels: [fire], raise_score: 0.8}
            sinks:
              - type: console
            """
        ),
        encoding="utf-8",
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(path, {})
    (problem,) = info.value.problems
    assert "models.m.backend.providers: line 7" in problem
    assert "unknown onnxruntime provider(s) CUDAProvider" in problem
    for valid in (CUDA, OPENVINO, "TensorrtExecutionProvider", "QNNExecutionProvider", CPU):
        assert valid in problem


def test_every_accelerator_name_of_the_preference_list_is_accepted() -> None:
    preference = [
        OPENVINO,
        CUDA,
        "TensorrtExecutionProvider",
        "CoreMLExecutionProvider",
        "MIGraphXExecutionProvider",
        "QNNExecutionProvider",
        CPU,
    ]
    assert OrtBackendConfig(providers=preference).providers == preference


def test_unavailable_providers_are_skipped_with_one_warning(
    sessions: list[list[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    config = OrtBackendConfig(providers=[OPENVINO, CUDA, CPU])
    with caplog.at_level(logging.WARNING):
        backend = OrtBackend.from_config(config, MODEL)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert f"{OPENVINO}, {CUDA} not available" in message
    assert f"available: {', '.join(ort.get_available_providers())}" in message
    assert sessions == [[(CPU, {})]], "unavailable providers never reach onnxruntime"
    details = backend.details()
    assert details["providers"] == {
        "requested": [OPENVINO, CUDA, CPU],
        "available": ort.get_available_providers(),
        "active": [CPU],
    }
    assert details["fallback"] == f"not in this onnxruntime build: {OPENVINO}, {CUDA}"
    assert probs(backend).shape == (1, 3)


def test_provider_options_are_passed_as_strings(sessions: list[list[Any]]) -> None:
    config = OrtBackendConfig(
        providers=[CPU], provider_options={CPU: {"arena_extend_strategy": 1, "use_arena": True}}
    )
    OrtBackend.from_config(config, MODEL)
    assert sessions == [[(CPU, {"arena_extend_strategy": "1", "use_arena": "1"})]]


def test_accelerator_session_failure_falls_back_to_cpu(
    monkeypatch: pytest.MonkeyPatch, sessions: list[list[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    claim_available(monkeypatch, CUDA)

    def accelerator_fails(path: str, options: ort.SessionOptions, **kwargs: Any) -> Any:
        names = [p for p, _ in kwargs["providers"]]
        if CUDA in names:
            raise ort_state.EPFail("CUDA failure 100: no CUDA-capable device is detected")
        return REAL_SESSION(path, options, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", accelerator_fails)
    config = OrtBackendConfig(providers=[CUDA, CPU], provider_options={CUDA: {"device_id": 0}})
    with caplog.at_level(logging.WARNING):
        backend = OrtBackend.from_config(config, MODEL)
    assert backend.active_providers == [CPU]
    fallback = backend.details()["fallback"]
    assert isinstance(fallback, str)
    assert fallback.startswith(f"session with {CUDA}, {CPU} failed: CUDA failure 100")
    assert "retrying on CPU only" in caplog.text
    assert float(probs(backend).sum()) == pytest.approx(1.0, abs=1e-5)


def test_provider_onnxruntime_silently_drops_is_reported(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Asked for a provider its build lacks, onnxruntime only warns and runs without it."""
    claim_available(monkeypatch, CUDA)
    with caplog.at_level(logging.WARNING), pytest.warns(UserWarning, match="CUDAExecutionProvider"):
        backend = OrtBackend.from_config(OrtBackendConfig(providers=[CUDA, CPU]), MODEL)
    assert backend.active_providers == [CPU]
    assert backend.details()["fallback"] == f"onnxruntime did not activate {CUDA}"
    assert f"did not activate {CUDA}" in caplog.text


def test_cpu_only_failure_is_a_model_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(MODEL.read_bytes()[:64])
    with pytest.raises(ModelError, match=r"onnxruntime cannot load .*broken\.onnx"):
        OrtBackend.from_config(OrtBackendConfig(), broken)


def test_details_report_threads_optimization_spinning_and_placement() -> None:
    config = OrtBackendConfig(
        intra_op_threads=2, inter_op_threads=1, graph_optimization="basic", allow_spinning=True
    )
    details = OrtBackend.from_config(config, MODEL).details()
    assert details["runtime"] == f"onnxruntime {ort.__version__}"
    assert details["fallback"] is None
    assert details["threads"] == {"intra_op": 2, "inter_op": 1}
    assert details["graph_optimization"] == "basic"
    assert details["allow_spinning"] is True
    assert details["nodes"] == {CPU: 8}, "the demo classifier has 8 nodes, all on CPU"
    assert details["op_types"] == {
        "AveragePool": 1,
        "Conv": 1,
        "Flatten": 1,
        "Gemm": 2,
        "Relu": 2,
        "Softmax": 1,
    }
    spinning_off = OrtBackend.from_config(OrtBackendConfig(), MODEL).details()
    assert spinning_off["allow_spinning"] is False
    assert spinning_off["graph_optimization"] == "all"
