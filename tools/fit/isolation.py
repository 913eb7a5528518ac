"""IsolationForest anomaly model (scikit-learn), exported with skl2onnx.

skl2onnx's converter outputs ``label`` and ``scores`` (sklearn's ``decision_function``); with the
converter option ``score_samples`` it also outputs ``score_samples``. The exported graph keeps only
``score = -score_samples`` [N]: higher is more anomalous. skl2onnx's conversion time grows about
quadratically with the number of trees (100 trees take ~8 s), hence the default of 64. Trees split on
one feature at a time between its observed min and max, so standardising the features would not
change the model; the raw features go in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

from tools.fit.thresholds import ThresholdSpec, fit_threshold

logger = logging.getLogger(__name__)

OPSET = 17
ML_OPSET = 3


@dataclass(frozen=True, slots=True)
class IsolationForestModel:
    forest: Any  # sklearn.ensemble.IsolationForest (untyped library)
    n_features: int
    threshold: float

    kind: ClassVar[str] = "iforest"

    def score(self, features: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
        """``-score_samples``, as scikit-learn computes it."""
        x = np.asarray(features, np.float32)
        return -np.asarray(self.forest.score_samples(x), np.float64)

    def output_specs(self) -> list[dict[str, Any]]:
        return [{"name": "score", "shape": [None], "dtype": "float32"}]

    def provenance(self) -> dict[str, Any]:
        return {
            "n_estimators": int(self.forest.n_estimators),
            "max_samples": int(self.forest.max_samples_),
            "offset": float(self.forest.offset_),
        }

    def to_onnx(self) -> bytes:
        """features [N, D] → score [N] float32."""
        from skl2onnx import to_onnx  # type: ignore[import-untyped]

        converted = to_onnx(
            self.forest,
            initial_types=None,
            X=np.zeros((1, self.n_features), np.float32),
            target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
            options={id(self.forest): {"score_samples": True}},
        )
        graph = converted.graph
        samples = next(o for o in graph.output if o.name == "score_samples")
        in_name = graph.input[0].name
        if in_name != "features":
            for node in graph.node:
                node.input[:] = ["features" if i == in_name else i for i in node.input]
            graph.input[0].name = "features"
        graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
        graph.node.extend(
            [
                helper.make_node("Neg", [samples.name], ["score_col"]),
                helper.make_node("Squeeze", ["score_col", "axis1"], ["score"]),
            ]
        )
        del graph.output[:]
        graph.output.append(helper.make_tensor_value_info("score", TensorProto.FLOAT, [None]))
        onnx.checker.check_model(converted, full_check=True)
        return bytes(converted.SerializeToString())


def fit_isolation_forest(
    features: NDArray[np.floating[Any]],
    threshold: ThresholdSpec,
    *,
    n_estimators: int = 64,
    seed: int = 0,
) -> IsolationForestModel:
    from sklearn.ensemble import IsolationForest  # type: ignore[import-untyped]

    x = np.asarray(features, np.float32)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"IsolationForest: expected at least 2 feature rows (N, D), got {x.shape}")
    forest = IsolationForest(n_estimators=n_estimators, random_state=seed).fit(x)
    draft = IsolationForestModel(forest, x.shape[1], 0.0)
    value = fit_threshold(draft.score(x), threshold)
    logger.info("IsolationForest: %d trees, threshold %.4g", n_estimators, value)
    return IsolationForestModel(forest, x.shape[1], value)
