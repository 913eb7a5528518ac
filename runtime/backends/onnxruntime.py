"""ONNX Runtime backend: execution providers in preference order, with a CPU fallback."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
from pydantic import Field

from runtime.backends.base import BACKENDS, Backend, Dim, TensorInfo
from runtime.config.base import PluginConfig
from runtime.errors import ConfigError, ModelError

logger = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"

ORT_ERRORS: tuple[type[Exception], ...] = (
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.InvalidGraph,
    ort_state.InvalidProtobuf,
    ort_state.NoSuchFile,
    ort_state.NoModel,
    ort_state.NotImplemented,
    ort_state.RuntimeException,
    ort_state.EPFail,
    RuntimeError,
)

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


class OrtBackendConfig(PluginConfig):
    type: Literal["onnxruntime"] = "onnxruntime"
    providers: list[str] = Field(
        default_factory=lambda: [CPU],
        min_length=1,
        description="execution providers in preference order; CPU is always the last fallback",
    )
    provider_options: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="provider name → options passed to that provider"
    )
    intra_op_threads: int = Field(1, ge=0, description="0 lets onnxruntime choose")
    inter_op_threads: int = Field(1, ge=0, description="0 lets onnxruntime choose")
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    allow_spinning: bool = Field(
        False,
        description="let idle onnxruntime worker threads spin; off by default because spinning "
        "threads steal the cores that capture and preprocessing need on a small device",
    )


@BACKENDS.register("onnxruntime")
class OrtBackend(Backend):
    config_type = OrtBackendConfig

    def __init__(self, session: ort.InferenceSession, requested: list[str]) -> None:
        self._session: ort.InferenceSession | None = session
        self._active: list[str] = session.get_providers()
        self._requested = requested
        self._inputs = [_info(i) for i in session.get_inputs()]
        self._outputs = [_info(o) for o in session.get_outputs()]
        self._output_names = [o.name for o in self._outputs]

    @classmethod
    def from_config(cls, config: PluginConfig, model_path: Path) -> OrtBackend:
        assert isinstance(config, OrtBackendConfig)
        known = set(ort.get_all_providers())
        unknown = [p for p in config.providers if p not in known]
        if unknown:
            raise ConfigError(
                f"unknown onnxruntime provider(s) {', '.join(unknown)}; "
                f"expected names like: {', '.join(sorted(known))}"
            )
        available = ort.get_available_providers()
        chosen = [p for p in config.providers if p in available]
        missing = [p for p in config.providers if p not in available]
        if missing:
            logger.warning(
                "%s: provider(s) %s not available in this onnxruntime build (available: %s); "
                "falling back",
                model_path.name,
                ", ".join(missing),
                ", ".join(available),
            )
        if CPU not in chosen:
            chosen.append(CPU)
        options = session_options(config)
        providers = [(p, config.provider_options.get(p, {})) for p in chosen]
        try:
            session = ort.InferenceSession(str(model_path), options, providers=providers)
        except ORT_ERRORS as exc:
            if chosen == [CPU]:
                raise ModelError(f"onnxruntime cannot load {model_path}: {exc}") from exc
            logger.warning(
                "%s: session with %s failed (%s); retrying on CPU only",
                model_path.name,
                ", ".join(chosen),
                exc,
            )
            try:
                session = ort.InferenceSession(str(model_path), options, providers=[CPU])
            except ORT_ERRORS as exc2:
                raise ModelError(f"onnxruntime cannot load {model_path}: {exc2}") from exc2
        backend = cls(session, list(config.providers))
        logger.info(
            "%s: onnxruntime %s, providers requested %s, active %s",
            model_path.name,
            ort.__version__,
            config.providers,
            backend.active_providers,
        )
        return backend

    @property
    def inputs(self) -> list[TensorInfo]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorInfo]:
        return self._outputs

    @property
    def requested_providers(self) -> list[str]:
        return self._requested

    @property
    def active_providers(self) -> list[str]:
        return self._active

    def run(self, feeds: dict[str, NDArray[np.generic]]) -> list[NDArray[np.generic]]:
        session = self._session
        if session is None:
            raise ModelError("onnxruntime session used after close()")
        try:
            outputs: list[NDArray[np.generic]] = session.run(self._output_names, feeds)
        except ORT_ERRORS as exc:
            raise ModelError(f"onnxruntime run failed: {exc}") from exc
        return outputs

    def close(self) -> None:
        """Drop the session (onnxruntime frees it with the last reference)."""
        self._session = None


def session_options(config: OrtBackendConfig) -> ort.SessionOptions:
    """The session options edgewatch uses for ``config`` (benchmarks build identical sessions)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.intra_op_threads
    options.inter_op_num_threads = config.inter_op_threads
    options.graph_optimization_level = _OPT_LEVELS[config.graph_optimization]
    options.log_severity_level = 3  # errors only; our own logs say what matters
    spin = "1" if config.allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return options


def _info(node: ort.NodeArg) -> TensorInfo:
    shape: tuple[Dim, ...] = tuple(d if isinstance(d, int | str) else None for d in node.shape)
    return TensorInfo(name=node.name, shape=shape, dtype=_DTYPES.get(node.type, node.type))
