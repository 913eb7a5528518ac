"""Keras model (``.keras``/``.h5``) or SavedModel directory → TFLite with the TF converter.

A Keras model is traced with a fixed batch (the input shape's first dim, 1 by default) unless
``--dynamic-batch``; its outputs are named ``output_0``, ``output_1``... by signature, and the
TFLite tensors are renamed to their signature names (:func:`tools.tflite_export.name_io_tensors`).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tools.export import Exported, ExportError, ExportOptions, chunks, sample_inputs


def run_tflite(model_bytes: bytes, samples: NDArray[Any]) -> tuple[list[str], list[NDArray[Any]]]:
    """Output names and outputs of a one-input TFLite model, fed in its own batch size."""
    from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-untyped]

    interpreter = Interpreter(model_content=model_bytes, num_threads=1)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    outs = interpreter.get_output_details()
    per_batch = []
    for batch in chunks(samples, int(inp["shape"][0])):
        interpreter.set_tensor(inp["index"], np.ascontiguousarray(batch, inp["dtype"]))
        interpreter.invoke()
        per_batch.append([interpreter.get_tensor(o["index"]).copy() for o in outs])
    names = [str(o["name"]) for o in outs]
    return names, [np.concatenate(parts) for parts in zip(*per_batch, strict=True)]


def export(source: str, options: ExportOptions) -> Exported:
    import tensorflow as tf  # type: ignore[import-untyped]

    from tools.tflite_export import name_io_tensors

    path = Path(source)
    if not path.exists():
        raise ExportError(f"{path}: no such Keras file or SavedModel directory")
    with (
        tempfile.TemporaryDirectory(prefix="edgewatch-export-") as tmp,
        contextlib.redirect_stdout(sys.stderr),  # TF prints tracing details to stdout
    ):
        if path.is_dir():
            reference_fn, converter, shape = _saved_model(tf, path, options)
        else:
            reference_fn, converter, shape = _keras(tf, path, options, Path(tmp))
        samples = sample_inputs(options, shape[1:])
        try:
            model_bytes = name_io_tensors(bytes(converter.convert()))
        except (RuntimeError, ValueError) as exc:
            raise ExportError(f"the TFLite converter failed: {exc}") from exc
    names, exported = run_tflite(model_bytes, samples)
    by_name = [reference_fn(batch) for batch in chunks(samples, int(shape[0]) or None)]
    missing = [name for name in names if name not in by_name[0]]
    if missing:
        raise ExportError(f"TFLite outputs {missing} not among the source's {sorted(by_name[0])}")
    reference = [np.concatenate([b[name] for b in by_name]) for name in names]
    return Exported(
        model_bytes=model_bytes,
        backend="litert",
        file_name="model.tflite",
        output_names=names,
        inputs=samples,
        reference=reference,
        exported=exported,
        provenance={"framework": f"tensorflow {tf.__version__}", "exporter": "TFLiteConverter"},
    )


def _shape(given: tuple[int, ...] | None, model_shape: list[Any], batch: int) -> tuple[int, ...]:
    dims = list(given) if given else [batch, *model_shape[1:]]
    if len(dims) != len(model_shape) or any(not isinstance(d, int) or d < 1 for d in dims):
        raise ExportError(
            f"input shape {model_shape} has unknown dims; give --input-shape with all of them"
        )
    return tuple(dims)


def _keras(
    tf: Any, path: Path, options: ExportOptions, tmp: Path
) -> tuple[Any, Any, tuple[int, ...]]:
    """Keras 3 → SavedModel (``model.export``) → converter: converting a traced function of a
    Keras 3 model directly gives NaN outputs (its variables aren't frozen)."""
    import keras  # type: ignore[import-untyped]

    try:
        model = keras.models.load_model(path, compile=False)
    except (ValueError, OSError, TypeError) as exc:
        raise ExportError(f"{path}: cannot load the Keras model: {exc}") from exc
    if len(model.inputs) != 1:
        raise ExportError(f"{path}: {len(model.inputs)} inputs; export handles one")
    shape = _shape(options.input_shape, list(model.inputs[0].shape), 1)
    spec_shape = [None if options.dynamic_batch else shape[0], *shape[1:]]
    saved = tmp / "saved_model"
    model.export(
        str(saved),
        format="tf_saved_model",
        input_signature=[tf.TensorSpec(spec_shape, tf.float32, name=options.input_name)],
        verbose=False,
    )
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))

    def reference(batch: NDArray[Any]) -> dict[str, NDArray[Any]]:
        out = model(tf.constant(batch), training=False)
        tensors = list(out) if isinstance(out, list | tuple) else [out]
        return {f"output_{i}": np.asarray(t) for i, t in enumerate(tensors)}

    return reference, converter, shape


def _saved_model(tf: Any, path: Path, options: ExportOptions) -> tuple[Any, Any, tuple[int, ...]]:
    try:
        loaded = tf.saved_model.load(str(path))
        function = loaded.signatures["serving_default"]
    except (OSError, KeyError, ValueError) as exc:
        raise ExportError(f"{path}: no SavedModel with a serving_default signature: {exc}") from exc
    _, kwargs = function.structured_input_signature
    if len(kwargs) != 1:
        raise ExportError(
            f"{path}: serving_default has inputs {sorted(kwargs)}; export handles one"
        )
    ((name, spec),) = kwargs.items()
    shape = _shape(options.input_shape, spec.shape.as_list(), 1)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(path))

    def reference(batch: NDArray[Any]) -> dict[str, NDArray[Any]]:
        return {k: v.numpy() for k, v in function(**{name: tf.constant(batch)}).items()}

    return reference, converter, shape
