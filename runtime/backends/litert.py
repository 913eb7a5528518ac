"""LiteRT (TFLite) backend: ai-edge-litert's Interpreter with XNNPACK, external delegates,
signature runners and dynamic input shapes. ``tflite_runtime`` is used only when ai-edge-litert
is not installed, and the status says so.

Graph partitions: after delegation the interpreter lists the model's ops plus one ``DELEGATE``
node per partition a delegate took. A partition's ops are found by walking back from its
outputs to its inputs. External delegates are applied when the interpreter is built, XNNPACK
at the first ``allocate_tensors``, so partitions that exist before that belong to the
external delegates. The counts cover the model's main subgraph.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from runtime.backends.base import BACKENDS, Backend, Dim, TensorInfo
from runtime.config.base import PluginConfig, StrictModel
from runtime.errors import ConfigError, ModelError

logger = logging.getLogger(__name__)

XNNPACK = "XNNPACK"
CPU = "CPU"
_DELEGATE_NODE = "DELEGATE"
_DELEGATE_SYMBOL = "tflite_plugin_create_delegate"
# what the interpreter raises for bad models, tensors and delegates (it has no own exception types)
_LITERT_ERRORS = (ValueError, RuntimeError)
CLOSE_WAIT_S = 2.0


class DelegateConfig(StrictModel):
    library: str = Field(
        min_length=1,
        description="TFLite external delegate: a path or a name the dynamic loader finds, "
        "e.g. /usr/lib/libedgetpu.so.1",
    )
    options: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="passed to the delegate as strings, e.g. device: usb"
    )


class LiteRtBackendConfig(PluginConfig):
    type: Literal["litert"] = "litert"
    num_threads: int = Field(1, ge=1, description="CPU threads for the interpreter and XNNPACK")
    xnnpack: bool = Field(
        True, description="apply the XNNPACK CPU delegate; off runs the builtin kernels only"
    )
    signature: str | None = Field(
        None,
        min_length=1,
        description="signature to run; by default the model's only signature, if it has one",
    )
    delegates: list[DelegateConfig] = Field(
        default_factory=list,
        description="external delegates in preference order; one that can't load is skipped "
        "with a warning and the model runs on the CPU",
    )


@dataclass(frozen=True, slots=True)
class Runtime:
    """The TFLite runtime in use: its ``interpreter`` module and a name for the status."""

    module: ModuleType
    name: str


@cache
def litert_runtime() -> Runtime:
    """ai-edge-litert if it is installed, else tflite_runtime; ConfigError if neither is."""
    try:
        module = importlib.import_module("ai_edge_litert.interpreter")
    except ImportError as exc:
        litert_error = exc
    else:
        return Runtime(module, f"ai-edge-litert {metadata.version('ai-edge-litert')}")
    try:
        module = importlib.import_module("tflite_runtime.interpreter")
    except ImportError:
        raise ConfigError(
            f"backend 'litert' needs ai-edge-litert (pip install ai-edge-litert): {litert_error}"
        ) from None
    version = getattr(importlib.import_module("tflite_runtime"), "__version__", "?")
    logger.warning(
        "ai-edge-litert is not installed (%s); using tflite_runtime %s instead",
        litert_error,
        version,
    )
    return Runtime(module, f"tflite_runtime {version} (ai-edge-litert not installed)")


@dataclass(frozen=True, slots=True)
class Partition:
    delegate: str
    ops: int


@dataclass(frozen=True, slots=True)
class GraphStats:
    ops: int
    partitions: tuple[Partition, ...]
    delegated_ops: int


@dataclass(frozen=True, slots=True)
class _Port:
    """One model input or output: the name we show, the tensor index and its shape signature."""

    name: str
    index: int
    signature: tuple[int, ...]


@BACKENDS.register("litert")
class LiteRtBackend(Backend):
    config_type = LiteRtBackendConfig

    def __init__(
        self,
        interpreter: Any,
        *,
        model_name: str,
        runtime: str,
        config: LiteRtBackendConfig,
        delegates: Sequence[tuple[str, Any]] = (),
        fallback: str | None = None,
        external_partitions: int = 0,
    ) -> None:
        """``interpreter`` is built with ``delegates`` (library, loaded delegate) applied and
        its tensors allocated; ``external_partitions`` is how many DELEGATE nodes it had
        before ``allocate_tensors`` (see the module docstring)."""
        self._interpreter: Any = interpreter
        self._delegates = list(delegates)  # kept alive as long as the interpreter
        self._model = model_name
        self._runtime = runtime
        self._config = config
        self._fallback = fallback
        self._lock = threading.Lock()  # an interpreter runs one call at a time
        self._signature, self._runner = _signature_runner(interpreter, config.signature, model_name)
        if self._runner is None:
            in_details = interpreter.get_input_details()
            out_details = interpreter.get_output_details()
        else:
            in_details = _named(self._runner.get_input_details())
            out_details = _named(self._runner.get_output_details())
        self._inputs = [_info(d) for d in in_details]
        self._outputs = [_info(d) for d in out_details]
        self._in_ports = [_port(d) for d in in_details]
        self._out_ports = [_port(d) for d in out_details]
        self._in_indices = [p.index for p in self._in_ports]
        self._out_indices = [p.index for p in self._out_ports]
        self._shapes: list[tuple[int, ...]] = [
            tuple(int(s) for s in d["shape"]) for d in in_details
        ]
        self._stats, self._stats_note = _graph_stats(interpreter, external_partitions, delegates)

    @classmethod
    def from_config(cls, config: PluginConfig, model_path: Path) -> LiteRtBackend:
        assert isinstance(config, LiteRtBackendConfig)
        runtime = litert_runtime()
        delegates, failures = _load_delegates(runtime.module, config.delegates)
        try:
            interpreter, partitions = _build(runtime.module, model_path, config, delegates)
        except _LITERT_ERRORS as exc:
            if not delegates:
                raise ModelError(f"LiteRT cannot load {model_path}: {_one_line(exc)}") from exc
            failures += [(lib, _one_line(exc)) for lib, _ in delegates]
            delegates = []
            try:
                interpreter, partitions = _build(runtime.module, model_path, config, [])
            except _LITERT_ERRORS as exc2:
                raise ModelError(f"LiteRT cannot load {model_path}: {_one_line(exc2)}") from exc2
        fallback = None
        if failures:
            rest = [lib for lib, _ in delegates] + ([XNNPACK] if config.xnnpack else [])
            fallback = "; ".join(f"delegate {lib} not used ({why})" for lib, why in failures)
            fallback += (
                f"; running on the CPU with {', '.join(rest)}" if rest else "; running on the CPU"
            )
            logger.warning("%s: %s", model_path.name, fallback)
        backend = cls(
            interpreter,
            model_name=model_path.name,
            runtime=runtime.name,
            config=config,
            delegates=delegates,
            fallback=fallback,
            external_partitions=partitions,
        )
        logger.info(
            "%s: %s, %d thread(s), requested %s, active %s",
            model_path.name,
            runtime.name,
            config.num_threads,
            backend.requested_providers,
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
        requested = [d.library for d in self._config.delegates]
        if self._config.xnnpack:
            requested.append(XNNPACK)
        return requested or [CPU]

    @property
    def active_providers(self) -> list[str]:
        """Delegates that took ops, then ``CPU`` when ops are left on the builtin kernels."""
        stats = self._stats
        if stats is None:  # partitions unknown: what was applied, and the CPU
            applied = [lib for lib, _ in self._delegates]
            return [*applied, *([XNNPACK] if self._config.xnnpack else []), CPU]
        active = list(dict.fromkeys(p.delegate for p in stats.partitions))
        if stats.delegated_ops < stats.ops or not active:
            active.append(CPU)
        return active

    def details(self) -> dict[str, object]:
        stats = self._stats
        out: dict[str, object] = {
            "runtime": self._runtime,
            "threads": self._config.num_threads,
            "xnnpack": self._config.xnnpack,
            "signature": self._signature,
            "delegates_requested": [d.library for d in self._config.delegates],
            "delegates_active": [lib for lib, _ in self._delegates],
            "fallback": self._fallback,
        }
        if stats is None:
            out["ops"] = None
            out["graph_note"] = self._stats_note
        else:
            out["ops"] = stats.ops
            out["ops_delegated"] = stats.delegated_ops
            out["ops_on_cpu"] = stats.ops - stats.delegated_ops
            out["partitions"] = [{"delegate": p.delegate, "ops": p.ops} for p in stats.partitions]
        return out

    def run(self, feeds: dict[str, NDArray[np.generic]]) -> list[NDArray[np.generic]]:
        with self._lock:
            interpreter = self._interpreter
            if interpreter is None:
                raise ModelError(f"{self._model}: LiteRT interpreter used after close()")
            values: list[NDArray[np.generic]] = []
            changed: list[int] = []  # inputs whose shape differs from the last call's
            shapes = self._shapes
            for i, port in enumerate(self._in_ports):
                value = feeds.get(port.name)
                if value is None:
                    raise ModelError(
                        f"{self._model}: no value for input {port.name!r}; the model takes "
                        f"{[p.name for p in self._in_ports]}"
                    )
                if value.shape != shapes[i]:
                    self._check_shape(port, value)
                    changed.append(i)
                values.append(value)
            try:
                if self._runner is not None:  # resizes and allocates by itself when needed
                    result = self._runner(**{p.name: feeds[p.name] for p in self._in_ports})
                    outputs = [result[p.name] for p in self._out_ports]
                else:
                    if changed:
                        for i in changed:
                            index = self._in_ports[i].index
                            interpreter.resize_tensor_input(index, values[i].shape, strict=True)
                        interpreter.allocate_tensors()
                    for index, value in zip(self._in_indices, values, strict=True):
                        interpreter.set_tensor(index, value)
                    interpreter.invoke()
                    outputs = [interpreter.get_tensor(i) for i in self._out_indices]
            except _LITERT_ERRORS as exc:
                raise ModelError(f"{self._model}: LiteRT run failed: {_one_line(exc)}") from exc
            for i in changed:
                shapes[i] = values[i].shape
            return outputs

    def close(self) -> None:
        """Drop the interpreter, then the delegates it used (in that order). An interpreter
        still running a call after ``CLOSE_WAIT_S`` (a thread the watchdog abandoned: an invoke
        can't be interrupted) is left to that thread."""
        if not self._lock.acquire(timeout=CLOSE_WAIT_S):
            logger.warning(
                "%s: LiteRT interpreter still busy after %.0f s; not closed (left to the call)",
                self._model,
                CLOSE_WAIT_S,
            )
            return
        try:
            self._interpreter = None
            self._runner = None
            self._delegates = []
        finally:
            self._lock.release()

    def _check_shape(self, port: _Port, value: NDArray[np.generic]) -> None:
        sig = port.signature
        if len(value.shape) != len(sig) or any(
            s not in (-1, v) for s, v in zip(sig, value.shape, strict=True)
        ):
            expected = [None if s == -1 else s for s in sig]
            raise ModelError(
                f"{self._model}: input {port.name!r} takes shape {expected}, "
                f"got {list(value.shape)}"
            )


def _load_delegates(
    module: ModuleType, configs: Sequence[DelegateConfig]
) -> tuple[list[tuple[str, Any]], list[tuple[str, str]]]:
    """(library, delegate) for each delegate that loads; (library, why) for each that doesn't."""
    loaded: list[tuple[str, Any]] = []
    failures: list[tuple[str, str]] = []
    for cfg in configs:
        try:
            # checked first: load_delegate on a library that isn't a delegate leaves a
            # half-built Delegate whose finaliser raises
            lib = ctypes.CDLL(cfg.library)
            if not hasattr(lib, _DELEGATE_SYMBOL):
                failures.append(
                    (cfg.library, f"not a TFLite external delegate: no {_DELEGATE_SYMBOL}")
                )
                continue
            options = {
                k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in cfg.options.items()
            }
            loaded.append((cfg.library, module.load_delegate(cfg.library, options)))
        except (OSError, ValueError, RuntimeError) as exc:
            why = _one_line(exc).removeprefix(f"{cfg.library}: ")
            failures.append(
                (cfg.library, why.removeprefix(f"Failed to load delegate from {cfg.library} "))
            )
    return loaded, failures


def _build(
    module: ModuleType,
    model_path: Path,
    config: LiteRtBackendConfig,
    delegates: Sequence[tuple[str, Any]],
) -> tuple[Any, int]:
    """An interpreter with its tensors allocated, and the partitions external delegates took."""
    resolver = module.OpResolverType
    interpreter = module.Interpreter(
        model_path=str(model_path),
        num_threads=config.num_threads,
        experimental_delegates=[d for _, d in delegates] or None,
        experimental_op_resolver_type=(
            resolver.AUTO if config.xnnpack else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        ),
    )
    external = _count_delegate_nodes(interpreter)
    interpreter.allocate_tensors()
    return interpreter, external


def _signature_runner(interpreter: Any, wanted: str | None, model: str) -> tuple[str | None, Any]:
    signatures = list(interpreter.get_signature_list())
    if wanted is None:
        if len(signatures) != 1:
            return None, None  # none, or several and no choice: the subgraph's own inputs
        wanted = signatures[0]
    elif wanted not in signatures:
        raise ConfigError(
            f"backend.signature {wanted!r}: {model} has "
            + (f"signatures {signatures}" if signatures else "no signatures")
        )
    return wanted, interpreter.get_signature_runner(wanted)


def _named(details: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Signature tensor details keyed by signature name → a list carrying those names."""
    return [{**d, "name": name} for name, d in details.items()]


def _info(d: dict[str, Any]) -> TensorInfo:
    sig = d.get("shape_signature")
    dims = d["shape"] if sig is None or len(sig) == 0 else sig
    shape: tuple[Dim, ...] = tuple(None if int(s) < 0 else int(s) for s in dims)
    return TensorInfo(
        name=str(d["name"]),
        shape=shape,
        dtype=np.dtype(d["dtype"]).name,
        quantization=_quantization(d),
    )


def _port(d: dict[str, Any]) -> _Port:
    sig = d.get("shape_signature")
    dims = d["shape"] if sig is None or len(sig) == 0 else sig
    return _Port(str(d["name"]), int(d["index"]), tuple(int(s) for s in dims))


def _quantization(d: dict[str, Any]) -> tuple[float, int] | None:
    """Per-tensor (scale, zero_point); None for float tensors (scale 0) and per-axis ones."""
    params = d.get("quantization_parameters") or {}
    scales = params.get("scales", ())
    zero_points = params.get("zero_points", ())
    if len(scales) != 1 or len(zero_points) != 1 or not scales[0] > 0:
        return None
    return float(scales[0]), int(zero_points[0])


def _count_delegate_nodes(interpreter: Any) -> int:
    try:
        return sum(1 for op in interpreter._get_ops_details() if op["op_name"] == _DELEGATE_NODE)
    except (AttributeError, *_LITERT_ERRORS):
        return 0


def _graph_stats(
    interpreter: Any, external_partitions: int, delegates: Sequence[tuple[str, Any]]
) -> tuple[GraphStats | None, str | None]:
    """Ops in the model and the ones each delegate partition took (see the module docstring)."""
    try:
        ops = interpreter._get_ops_details()
    except (AttributeError, *_LITERT_ERRORS) as exc:
        return None, f"op details not exposed by this runtime ({_one_line(exc)})"
    kernels = [op for op in ops if op["op_name"] == _DELEGATE_NODE]
    originals = [op for op in ops if op["op_name"] != _DELEGATE_NODE]
    producer = {int(t): i for i, op in enumerate(originals) for t in op["outputs"]}
    external = (
        delegates[0][0]
        if len(delegates) == 1
        else "external delegates (" + ", ".join(lib for lib, _ in delegates) + ")"
    )
    partitions: list[Partition] = []
    taken: set[int] = set()
    for k, kernel in enumerate(kernels):
        boundary = {int(t) for t in kernel["inputs"]}
        inside: set[int] = set()
        stack = [int(t) for t in kernel["outputs"]]
        while stack:
            t = stack.pop()
            i = producer.get(t)
            if t in boundary or i is None or i in inside:
                continue
            inside.add(i)
            stack.extend(int(x) for x in originals[i]["inputs"] if int(x) >= 0)
        taken |= inside
        partitions.append(Partition(external if k < external_partitions else XNNPACK, len(inside)))
    return GraphStats(len(originals), tuple(partitions), len(taken)), None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
