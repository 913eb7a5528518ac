"""``edgewatch export``: a trained model → ONNX or TFLite, verified against its source, bundled.

One module per source kind (torch_onnx, sklearn_onnx, keras_tflite, torch_tflite), each with
``export(source, options) -> Exported``; :mod:`.verify` compares the two models' outputs and
:mod:`.bundling` reads the exported model's I/O into the manifest.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.errors import EdgewatchError


class ExportError(EdgewatchError):
    """The source can't be loaded or converted, or the export doesn't match it."""


class MissingExtra(ExportError):
    """A converter this export needs isn't installed; the message names the pip install."""


@dataclass(frozen=True, slots=True)
class ExportOptions:
    input_shape: tuple[int, ...] | None = None
    opset: int = 17
    dynamic_batch: bool = False
    input_name: str = "input"
    samples: NDArray[np.float32] | None = None  # given inputs; else seeded random ones
    num_samples: int = 8
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Exported:
    """The exported model and both models' outputs on the same ``inputs`` (output order)."""

    model_bytes: bytes
    backend: str
    file_name: str
    output_names: list[str]
    inputs: NDArray[Any]
    reference: list[NDArray[Any]]
    exported: list[NDArray[Any]]
    provenance: dict[str, Any] = field(default_factory=dict)


def load_callable(source: str) -> Any:
    """``package.module:callable`` or ``path/to/file.py:callable``, called with no arguments."""
    module_name, sep, attr = source.rpartition(":")
    if not sep or not module_name or not attr:
        raise ExportError(f"source {source!r}: expected module:callable or file.py:callable")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            spec = importlib.util.spec_from_file_location(path.stem, path)
            if spec is None or spec.loader is None or not path.is_file():
                raise ExportError(f"source {source!r}: {path} is not a Python file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module  # pickling and torch tracing look modules up
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
        factory = getattr(module, attr)
    except (ImportError, AttributeError, OSError, SyntaxError) as exc:
        raise ExportError(f"source {source!r}: cannot load: {exc}") from exc
    return factory()


def sample_inputs(options: ExportOptions, per_sample_shape: tuple[int, ...]) -> NDArray[np.float32]:
    """``options.samples`` checked against the input shape, else ``num_samples`` seeded
    standard-normal ones."""
    if options.samples is not None:
        samples = np.asarray(options.samples, np.float32)
        if samples.shape[1:] != per_sample_shape:
            raise ExportError(
                f"samples have shape {list(samples.shape)}; expected [N, "
                f"{', '.join(map(str, per_sample_shape))}]"
            )
        return samples
    rng = np.random.default_rng(options.seed)
    shape = (options.num_samples, *per_sample_shape)
    return rng.standard_normal(shape).astype(np.float32)


def chunks(samples: NDArray[Any], batch: int | None) -> list[NDArray[Any]]:
    """All samples in one call (dynamic batch) or in calls of the model's fixed batch."""
    if batch is None:
        return [samples]
    usable = len(samples) - len(samples) % batch
    if usable == 0:
        raise ExportError(f"need at least {batch} samples for the model's batch of {batch}")
    return [samples[i : i + batch] for i in range(0, usable, batch)]
