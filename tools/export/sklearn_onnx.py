"""scikit-learn estimator or pipeline → ONNX with skl2onnx (float32 input [N, D]).

Classifiers are converted without the ZipMap so they output ``label`` [N] and
``probabilities`` [N, C] tensors; each ONNX output is compared with the estimator method that
computes it (``label``→predict, ``probabilities``→predict_proba, ``scores``→decision_function,
``variable``→predict or transform).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tools.export import Exported, ExportError, ExportOptions, load_callable, sample_inputs
from tools.export.torch_onnx import run_onnx

ML_OPSET = 3
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")


def load_estimator(source: str) -> Any:
    if Path(source).suffix in PICKLE_SUFFIXES:
        import joblib  # type: ignore[import-untyped]

        try:
            return joblib.load(source)
        except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise ExportError(f"{source}: cannot unpickle: {exc}") from exc
    return load_callable(source)


def _reference(estimator: Any, name: str, x: NDArray[np.float32]) -> NDArray[Any]:
    from sklearn.base import is_regressor  # type: ignore[import-untyped]

    methods = {
        "label": "predict",
        "probabilities": "predict_proba",
        "scores": "decision_function",
        "variable": "predict" if is_regressor(estimator) else "transform",
    }
    method = getattr(estimator, methods.get(name, ""), None)
    if method is None:
        raise ExportError(f"ONNX output {name!r}: no estimator method to compare it with")
    out = np.asarray(method(x))
    return out.reshape(len(x), -1) if name == "variable" and out.ndim == 1 else out


def export(source: str, options: ExportOptions) -> Exported:
    import sklearn  # type: ignore[import-untyped]
    from onnx.onnx_cpp2py_export.checker import ValidationError
    from skl2onnx import to_onnx  # type: ignore[import-untyped]
    from skl2onnx.common.exceptions import MissingShapeCalculator  # type: ignore[import-untyped]
    from sklearn.base import is_classifier

    estimator = load_estimator(source)
    n_features = (
        options.input_shape[-1]
        if options.input_shape
        else getattr(estimator, "n_features_in_", None)
    )
    if not isinstance(n_features, int):
        raise ExportError("cannot tell the number of features; give --input-shape 1xD")
    samples = sample_inputs(options, (n_features,))
    try:
        model = to_onnx(
            estimator,
            X=np.zeros((1, n_features), np.float32),
            target_opset={"": options.opset, "ai.onnx.ml": ML_OPSET},
            options={"zipmap": False} if is_classifier(estimator) else None,
        )
    except (MissingShapeCalculator, RuntimeError, ValueError, TypeError, ValidationError) as exc:
        raise ExportError(f"skl2onnx cannot convert {type(estimator).__name__}: {exc}") from exc
    model_bytes: bytes = model.SerializeToString()
    names = [o.name for o in model.graph.output]
    return Exported(
        model_bytes=model_bytes,
        backend="onnxruntime",
        file_name="model.onnx",
        output_names=names,
        inputs=samples,
        reference=[_reference(estimator, name, samples) for name in names],
        exported=run_onnx(model_bytes, model.graph.input[0].name, [samples]),
        provenance={
            "framework": f"scikit-learn {sklearn.__version__}",
            "estimator": type(estimator).__name__,
            "exporter": "skl2onnx",
            "opset": options.opset,
        },
    )
