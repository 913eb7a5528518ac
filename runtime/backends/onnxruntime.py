"""ONNX Runtime backend: execution providers in preference order, with a CPU fallback.

Providers the installed build lacks are skipped (one warning naming what it has); a session
that fails to start with an accelerator is retried on CPU only. ``details()`` says which
providers were asked for, which exist here, which run, why any fallback happened, and how many
graph nodes each provider took (onnxruntime >= 1.23 records that when asked to).

Every run gets its own ``RunOptions``, so ``cancel`` can stop the run of one thread (a pipeline
the watchdog found stuck) while other pipelines keep using the same session: the run fails at its
next node with "Exiting due to terminate flag being set to true"."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
from pydantic import Field, field_validator, model_validator

from runtime.backends.base import BACKENDS, Backend, Dim, TensorInfo
from runtime.config.base import PluginConfig
from runtime.errors import ModelError

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
    ValueError,  # onnxruntime's Python layer checks provider arguments with ValueError
)

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_OPT_NAMES = {level: name for name, level in _OPT_LEVELS.items()}

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

_SPINNING = "session.intra_op.allow_spinning"
_RECORD_ASSIGNMENT = "session.record_ep_graph_assignment_info"

OptionValue = str | int | float | bool


class OrtBackendConfig(PluginConfig):
    type: Literal["onnxruntime"] = "onnxruntime"
    providers: list[str] = Field(
        default_factory=lambda: [CPU],
        min_length=1,
        description="execution providers in preference order, e.g. [OpenVINOExecutionProvider, "
        "CUDAExecutionProvider, CPUExecutionProvider]; ones this onnxruntime build lacks are "
        "skipped, and CPU is always the last fallback",
    )
    provider_options: dict[str, dict[str, OptionValue]] = Field(
        default_factory=dict,
        description="provider name → options passed to that provider (e.g. device_id, "
        "device_type); values are passed as strings, booleans as 1/0",
    )
    intra_op_threads: int = Field(1, ge=0, description="0 lets onnxruntime choose")
    inter_op_threads: int = Field(1, ge=0, description="0 lets onnxruntime choose")
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    allow_spinning: bool = Field(
        False,
        description="let idle onnxruntime worker threads spin; off by default because spinning "
        "threads steal the cores that capture and preprocessing need on a small device",
    )

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, providers: list[str]) -> list[str]:
        _check_names(providers)
        if len(set(providers)) != len(providers):
            raise ValueError(f"providers are listed more than once: {providers}")
        return providers

    @model_validator(mode="after")
    def _options_for_listed_providers(self) -> OrtBackendConfig:
        _check_names(list(self.provider_options))
        stray = [p for p in self.provider_options if p not in self.providers]
        if stray:
            raise ValueError(
                f"provider_options given for {', '.join(stray)}, which is not in providers "
                f"{self.providers}"
            )
        return self

    def options_for(self, provider: str) -> dict[str, str]:
        """The provider's options as the strings onnxruntime expects."""
        return {
            key: ("1" if value else "0") if isinstance(value, bool) else str(value)
            for key, value in self.provider_options.get(provider, {}).items()
        }


def _check_names(providers: list[str]) -> None:
    """A name that is no onnxruntime provider at all is a typo, not a missing accelerator."""
    known = ort.get_all_providers()
    unknown = [p for p in providers if p not in known]
    if unknown:
        raise ValueError(
            f"unknown onnxruntime provider(s) {', '.join(unknown)}; valid names: "
            f"{', '.join(sorted(known))}"
        )


@BACKENDS.register("onnxruntime")
class OrtBackend(Backend):
    config_type = OrtBackendConfig

    def __init__(
        self,
        session: ort.InferenceSession,
        requested: list[str],
        available: list[str] | None = None,
        fallback: str | None = None,
    ) -> None:
        self._session: ort.InferenceSession | None = session
        self._active: list[str] = session.get_providers()
        self._requested = requested
        self._available = ort.get_available_providers() if available is None else available
        self._fallback = fallback
        self._inputs = [_info(i) for i in session.get_inputs()]
        self._outputs = [_info(o) for o in session.get_outputs()]
        self._output_names = [o.name for o in self._outputs]
        self._details = _session_details(session)
        self._runs: dict[int, ort.RunOptions] = {}  # thread ident → its run in progress

    @classmethod
    def from_config(cls, config: PluginConfig, model_path: Path) -> OrtBackend:
        assert isinstance(config, OrtBackendConfig)
        available = ort.get_available_providers()
        chosen = [p for p in config.providers if p in available]
        missing = [p for p in config.providers if p not in available]
        reasons = [f"not in this onnxruntime build: {', '.join(missing)}"] if missing else []
        if missing:
            logger.warning(
                "%s: provider(s) %s not available in this onnxruntime build (available: %s); "
                "skipping them",
                model_path.name,
                ", ".join(missing),
                ", ".join(available),
            )
        if CPU not in chosen:
            chosen.append(CPU)
        options = session_options(config)
        try:
            session = _session(model_path, options, [(p, config.options_for(p)) for p in chosen])
        except ORT_ERRORS as exc:
            if chosen == [CPU]:
                raise ModelError(f"onnxruntime cannot load {model_path}: {exc}") from exc
            reasons.append(f"session with {', '.join(chosen)} failed: {_first_line(exc)}")
            logger.warning("%s: %s; retrying on CPU only", model_path.name, reasons[-1])
            try:
                session = _session(model_path, options, [(CPU, config.options_for(CPU))])
            except ORT_ERRORS as exc2:
                raise ModelError(f"onnxruntime cannot load {model_path}: {exc2}") from exc2
        else:
            dropped = [p for p in chosen if p not in session.get_providers()]
            if dropped:
                # onnxruntime skips a provider it can't register without raising
                reasons.append(f"onnxruntime did not activate {', '.join(dropped)}")
                logger.warning("%s: %s", model_path.name, reasons[-1])
        fallback = "; ".join(reasons) if reasons else None
        backend = cls(session, list(config.providers), available, fallback)
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
        options = ort.RunOptions()
        options.log_severity_level = 4  # a failed run becomes our ModelError; no second report
        ident = threading.get_ident()
        self._runs[ident] = options
        try:
            outputs: list[NDArray[np.generic]] = session.run(self._output_names, feeds, options)
        except ORT_ERRORS as exc:
            if options.terminate:
                raise ModelError("onnxruntime run cancelled") from exc
            raise ModelError(f"onnxruntime run failed: {exc}") from exc
        finally:
            del self._runs[ident]
        return outputs

    def cancel(self, thread_ident: int | None = None) -> bool:
        """Terminate the run of ``thread_ident`` (every run when None) at its next node."""
        runs = self._runs.copy()  # one C call under the GIL: safe while runs come and go
        hits = [o for i, o in runs.items() if thread_ident is None or i == thread_ident]
        for options in hits:
            options.terminate = True
        return bool(hits)

    def details(self) -> dict[str, object]:
        return {
            "runtime": f"onnxruntime {ort.__version__}",
            "providers": {
                "requested": self._requested,
                "available": self._available,
                "active": self._active,
            },
            "fallback": self._fallback,
            **self._details,
        }

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
    options.add_session_config_entry(_SPINNING, spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    options.add_session_config_entry(_RECORD_ASSIGNMENT, "1")
    return options


def _session(
    model_path: Path, options: ort.SessionOptions, providers: list[tuple[str, dict[str, str]]]
) -> ort.InferenceSession:
    # enable_fallback=0: onnxruntime's own retry prints to stdout and hides why; we do it here.
    return ort.InferenceSession(str(model_path), options, providers=providers, enable_fallback=0)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _session_details(session: ort.InferenceSession) -> dict[str, object]:
    """Threads, optimization and spinning as the session reports them, and node placement."""
    options = session.get_session_options()
    details: dict[str, object] = {
        "threads": {
            "intra_op": options.intra_op_num_threads,
            "inter_op": options.inter_op_num_threads,
        },
        "graph_optimization": _OPT_NAMES.get(
            options.graph_optimization_level, str(options.graph_optimization_level)
        ),
        "allow_spinning": _config_entry(options, _SPINNING) == "1",
    }
    details.update(_placement(session))
    return details


def _config_entry(options: ort.SessionOptions, key: str) -> str | None:
    try:
        value: str = options.get_session_config_entry(key)
    except RuntimeError:
        return None
    return value


def _placement(session: ort.InferenceSession) -> dict[str, object]:
    """Nodes (after graph optimization) and subgraphs per provider, and op types."""
    getter = getattr(session, "get_provider_graph_assignment_info", None)
    if getter is None:
        return {"nodes": None, "nodes_note": f"not reported by onnxruntime {ort.__version__}"}
    try:
        subgraphs = getter()
    except ORT_ERRORS as exc:
        return {"nodes": None, "nodes_note": _first_line(exc)}
    nodes: Counter[str] = Counter()
    partitions: Counter[str] = Counter()
    op_types: Counter[str] = Counter()
    for subgraph in subgraphs:
        members = subgraph.get_nodes()
        partitions[subgraph.ep_name] += 1
        nodes[subgraph.ep_name] += len(members)
        op_types.update(node.op_type for node in members)
    return {
        "nodes": dict(nodes),
        "subgraphs": dict(partitions),
        "op_types": dict(sorted(op_types.items())),
    }


def _info(node: ort.NodeArg) -> TensorInfo:
    shape: tuple[Dim, ...] = tuple(d if isinstance(d, int | str) else None for d in node.shape)
    return TensorInfo(name=node.name, shape=shape, dtype=_DTYPES.get(node.type, node.type))
