"""Loads a model bundle: checks the file's sha256 and its real inputs against the manifest."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError

from runtime.backends.base import BACKENDS, Backend, TensorInfo
from runtime.config.base import PluginConfig
from runtime.errors import ModelError
from runtime.manifest import (
    MANIFEST_FILE,
    InputSpec,
    ManifestBase,
    OutputSpec,
    Quantization,
    manifest_model,
)
from runtime.messages import ModelInfo
from runtime.processing.preprocess import Preprocessor, quantize

logger = logging.getLogger(__name__)


def read_manifest(bundle_dir: Path) -> ManifestBase:
    path = bundle_dir / MANIFEST_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"model bundle {bundle_dir}: no {MANIFEST_FILE} in it") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: cannot read manifest: {exc}") from exc
    try:
        return manifest_model().model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(manifest)'}: {e['msg']}"
            for e in exc.errors()
        )
        raise ModelError(f"{path}: invalid manifest: {problems}") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class LoadedModel:
    manifest: ManifestBase
    info: ModelInfo
    backend: Backend
    preprocessor: Preprocessor | None  # None for non-image inputs (sensor feature vectors)
    path: Path
    backend_config: PluginConfig | None = None  # to make more sessions (per-stream instances)

    @classmethod
    def load(
        cls,
        bundle_dir: Path,
        backend_config: PluginConfig,
        warmup_runs: int = 2,
        public_key: Path | None = None,
    ) -> LoadedModel:
        """With ``public_key``, the bundle's manifest signature is verified before anything
        else is read (:mod:`runtime.signature`); an unsigned bundle is then refused too."""
        if public_key is not None:
            from runtime.signature import verify_bundle

            verify_bundle(bundle_dir, public_key)
        manifest = read_manifest(bundle_dir)
        model_path = bundle_dir / manifest.file
        if not model_path.is_file():
            raise ModelError(f"model bundle {bundle_dir}: model file {manifest.file} is missing")
        actual = sha256_file(model_path)
        if actual != manifest.sha256:
            raise ModelError(
                f"{model_path}: sha256 {actual[:16]}… does not match the manifest's "
                f"{manifest.sha256[:16]}…; refusing to load a modified or corrupted model"
            )
        if manifest.backend != backend_config.type:
            raise ModelError(
                f"{bundle_dir}: manifest is for backend {manifest.backend!r} but the config "
                f"asks for {backend_config.type!r}"
            )
        _check_extra_inputs(bundle_dir, manifest)
        backend = BACKENDS.get(backend_config.type).from_config(backend_config, model_path)
        try:
            _check_tensors(model_path, "input", manifest.inputs, backend.inputs)
            _check_tensors(model_path, "output", manifest.outputs, backend.outputs)
            manifest = _with_model_quantization(model_path, manifest, backend)
            model = cls(
                manifest=manifest,
                info=ModelInfo(manifest.name, manifest.version, manifest.sha256),
                backend=backend,
                preprocessor=_preprocessor_for(bundle_dir, manifest.inputs[0]),
                path=model_path,
                backend_config=backend_config,
            )
            model.warm_up(warmup_runs)
        except BaseException:
            backend.close()
            raise
        return model

    def infer(
        self,
        tensor: NDArray[np.generic],
        *,
        state: Mapping[str, NDArray[np.generic]] | None = None,
        backend: Backend | None = None,
    ) -> list[NDArray[np.float32]]:
        """Run the model on a preprocessed tensor; quantized outputs come back as real values.

        Streaming models also get their constants and ``state`` (zeros for any state not given);
        ``backend`` runs it on another session of the same model (a per-stream instance)."""
        raw = (backend or self.backend).run(self.feeds(tensor, state))
        return [
            _dequantize(out, spec) for out, spec in zip(raw, self.manifest.outputs, strict=True)
        ]

    def feeds(
        self,
        tensor: NDArray[np.generic],
        state: Mapping[str, NDArray[np.generic]] | None = None,
    ) -> dict[str, NDArray[np.generic]]:
        """Every input of one call: ``tensor`` as the first, then a streaming model's constants
        and state inputs (from ``state``, else zeros of the declared shape, batch 1)."""
        first = self.manifest.inputs[0]
        feeds = {first.name: as_input(tensor, first)}
        streaming = self.manifest.streaming
        if streaming is None:
            return feeds
        specs = {i.name: i for i in self.manifest.inputs}
        for name, value in streaming.constants.items():
            feeds[name] = _constant(self.path, specs[name], value)
        for s in streaming.state:
            spec = specs[s.input]
            given = None if state is None else state.get(s.input)
            feeds[s.input] = (
                zero_state(spec)
                if given is None
                else as_input(given, spec).astype(spec.dtype, copy=False)
            )
        return feeds

    def new_backend(self) -> Backend:
        """Another session of this model with the same backend config (one per stream for
        models that keep state inside the session)."""
        if self.backend_config is None:
            raise ModelError(f"{self.path}: loaded without a backend config; cannot make another")
        return BACKENDS.get(self.backend_config.type).from_config(self.backend_config, self.path)

    def with_new_backend(self) -> LoadedModel:
        """This model on a session of its own, e.g. to go on after a thread got stuck in the
        shared one (the watchdog abandons it: see ``runtime.health``); the caller closes it."""
        return replace(self, backend=self.new_backend())

    def warm_up(self, runs: int) -> None:
        for _ in range(runs):
            self.sample_outputs()

    def sample_outputs(self) -> list[NDArray[np.float32]]:
        """The model's outputs for an all-zero input: real shapes and dtypes for start-up checks."""
        spec = self.manifest.inputs[0]
        shape = [d if isinstance(d, int) else 1 for d in spec.shape]
        return self.infer(np.zeros(shape, dtype=spec.dtype))

    def close(self) -> None:
        self.backend.close()


def _check_extra_inputs(bundle_dir: Path, manifest: ManifestBase) -> None:
    """Pipelines feed the first input; any other must be a state or a constant (streaming)."""
    extra = [i.name for i in manifest.inputs[1:]]
    if not extra:
        return
    streaming = manifest.streaming
    fed = (
        set()
        if streaming is None
        else {s.input for s in streaming.state} | set(streaming.constants)
    )
    unfed = [name for name in extra if name not in fed]
    if unfed:
        raise ModelError(
            f"{bundle_dir}: pipelines feed the first input ({manifest.inputs[0].name!r}); the "
            f"other inputs {unfed} must be declared in the manifest's `streaming` section as "
            "state or constants"
        )


def zero_state(spec: InputSpec) -> NDArray[np.generic]:
    """A state input's start value: zeros of its declared shape, unknown dims (batch) as 1."""
    return np.zeros([d if isinstance(d, int) else 1 for d in spec.shape], dtype=spec.dtype)


def _constant(model_path: Path, spec: InputSpec, value: object) -> NDArray[np.generic]:
    """A streaming constant as the input wants it: a scalar fills the input's shape (0-d for
    ``[]``), a list must hold exactly as many values as the shape."""
    array = np.asarray(value, dtype=spec.dtype)
    shape = [d if isinstance(d, int) else 1 for d in spec.shape]
    if array.ndim == 0:
        return np.full(shape, array, dtype=spec.dtype) if shape else array
    if array.size != int(np.prod(shape)):
        raise ModelError(
            f"{model_path}: streaming constant {spec.name!r} has {array.size} values but the "
            f"input's shape is {spec.shape}"
        )
    return array.reshape(shape)


def _preprocessor_for(bundle_dir: Path, spec: InputSpec) -> Preprocessor | None:
    """Images are 4-D (NCHW/NHWC); anything else (e.g. [N, D] features) is fed as it is."""
    if len(spec.shape) != 4:
        return None
    try:
        return Preprocessor(spec)
    except ValueError as exc:
        raise ModelError(f"{bundle_dir}: input {spec.name!r}: {exc}") from exc


_QUANTIZED = ("int8", "uint8")
_SCALE_REL_TOL = 1e-5  # manifests hold float64 scales, models float32 ones
_Spec = TypeVar("_Spec", InputSpec, OutputSpec)


def _with_model_quantization(
    model_path: Path, manifest: ManifestBase, backend: Backend
) -> ManifestBase:
    """The manifest with every int8/uint8 tensor's effective quantization: the manifest's, else
    the model's (LiteRT reports it; onnxruntime doesn't). Both given and different, or an int8
    input with neither, is a ModelError. A uint8 input with neither takes raw values (pixels)."""
    inputs = [
        _effective_quantization(model_path, "input", spec, real)
        for spec, real in zip(manifest.inputs, backend.inputs, strict=True)
    ]
    outputs = [
        _effective_quantization(model_path, "output", spec, real)
        for spec, real in zip(manifest.outputs, backend.outputs, strict=True)
    ]
    return manifest.model_copy(update={"inputs": inputs, "outputs": outputs})


def _effective_quantization(model_path: Path, kind: str, spec: _Spec, real: TensorInfo) -> _Spec:
    declared, model = spec.quantization, real.quantization
    if spec.dtype not in _QUANTIZED:
        return spec
    if declared is not None and model is not None:
        scale, zero_point = model
        if declared.zero_point != zero_point or not math.isclose(
            declared.scale, scale, rel_tol=_SCALE_REL_TOL
        ):
            raise ModelError(
                f"{model_path}: {kind} {spec.name!r}: manifest says scale={declared.scale:.9g}, "
                f"zero_point={declared.zero_point} but the model has scale={scale:.9g}, "
                f"zero_point={zero_point}"
            )
        return spec
    if model is not None:
        q = Quantization(scale=model[0], zero_point=model[1])
        return spec.model_copy(update={"quantization": q})
    if declared is None and kind == "input" and spec.dtype == "int8":
        raise ModelError(
            f"{model_path}: input {spec.name!r} is int8 but neither the manifest nor the model "
            "gives its quantization (scale, zero_point)"
        )
    return spec


def as_input(tensor: NDArray[np.generic], spec: InputSpec) -> NDArray[np.generic]:
    """Real values for an int8/uint8 input with quantization are quantized, and float values
    for a float16/float32 input are cast; anything else is passed on as it is."""
    if tensor.dtype == np.dtype(spec.dtype) or not np.issubdtype(tensor.dtype, np.floating):
        return tensor
    q = spec.quantization
    if q is not None and spec.dtype in _QUANTIZED:
        return quantize(tensor.astype(np.float32, copy=False), q.scale, q.zero_point, spec.dtype)
    if spec.dtype in ("float16", "float32"):
        return tensor.astype(spec.dtype)
    return tensor


def _dequantize(out: NDArray[np.generic], spec: OutputSpec) -> NDArray[np.float32]:
    q = spec.quantization
    if q is None:
        return out.astype(np.float32, copy=False)
    return ((out.astype(np.float32) - np.float32(q.zero_point)) * np.float32(q.scale)).astype(
        np.float32
    )


def _check_tensors(
    model_path: Path,
    kind: str,
    declared: Sequence[InputSpec | OutputSpec],
    actual: list[TensorInfo],
) -> None:
    names = [t.name for t in actual]
    if [d.name for d in declared] != names:
        raise ModelError(
            f"{model_path}: manifest {kind}s {[d.name for d in declared]} but the model has {names}"
        )
    for spec, real in zip(declared, actual, strict=True):
        if spec.dtype != real.dtype:
            raise ModelError(
                f"{model_path}: {kind} {spec.name!r} is {real.dtype} in the model, "
                f"manifest says {spec.dtype}"
            )
        if len(spec.shape) != len(real.shape) or any(
            isinstance(m, int) and isinstance(r, int) and m != r
            for m, r in zip(spec.shape, real.shape, strict=True)
        ):
            raise ModelError(
                f"{model_path}: {kind} {spec.name!r} has shape {list(real.shape)} in the model, "
                f"manifest says {spec.shape}"
            )
