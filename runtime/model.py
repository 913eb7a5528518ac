"""Loads a model bundle: checks the file's sha256 and its real inputs against the manifest."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError

from runtime.backends.base import BACKENDS, Backend, TensorInfo
from runtime.config.base import PluginConfig
from runtime.errors import ModelError
from runtime.manifest import MANIFEST_FILE, InputSpec, ManifestBase, OutputSpec, manifest_model
from runtime.messages import ModelInfo
from runtime.processing.preprocess import Preprocessor

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

    @classmethod
    def load(
        cls, bundle_dir: Path, backend_config: PluginConfig, warmup_runs: int = 2
    ) -> LoadedModel:
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
            model = cls(
                manifest=manifest,
                info=ModelInfo(manifest.name, manifest.version, manifest.sha256),
                backend=backend,
                preprocessor=_preprocessor_for(bundle_dir, manifest.inputs[0]),
                path=model_path,
            )
            model.warm_up(warmup_runs)
        except BaseException:
            backend.close()
            raise
        return model

    def infer(self, tensor: NDArray[np.generic]) -> list[NDArray[np.float32]]:
        """Run the model on a preprocessed tensor; quantized outputs come back as real values."""
        raw = self.backend.run({self.manifest.inputs[0].name: tensor})
        return [
            _dequantize(out, spec) for out, spec in zip(raw, self.manifest.outputs, strict=True)
        ]

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


def _preprocessor_for(bundle_dir: Path, spec: InputSpec) -> Preprocessor | None:
    """Images are 4-D (NCHW/NHWC); anything else (e.g. [N, D] features) is fed as it is."""
    if len(spec.shape) != 4:
        return None
    try:
        return Preprocessor(spec)
    except ValueError as exc:
        raise ModelError(f"{bundle_dir}: input {spec.name!r}: {exc}") from exc


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
