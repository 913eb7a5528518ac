"""PCA anomaly model: Hotelling T² in the principal subspace and Q (SPE) off it.

``score = max(T²/T²_thr, Q/Q_thr)``, so 1.0 is the alarm threshold. Each statistic's threshold
gets half of the false-alarm budget, so the combined score exceeds 1.0 on at most about the
budgeted fraction of normal windows. The ONNX graph outputs ``score`` (the decision score the
manifest's threshold applies to), then the raw ``t2`` and ``q`` for diagnosis.

Eigenvectors are sign-normalised (largest entry positive), so a rebuild on another LAPACK gives
the same components; the scores do not depend on the signs anyway.
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
_STD_FLOOR = 1e-12


@dataclass(frozen=True, slots=True)
class PcaModel:
    mean: NDArray[np.float64]  # (D,)
    std: NDArray[np.float64]  # (D,)
    components: NDArray[np.float64]  # (D, k), orthonormal columns
    eigenvalues: NDArray[np.float64]  # (k,)
    explained_variance: float
    t2_threshold: float
    q_threshold: float

    kind: ClassVar[str] = "pca"
    threshold: ClassVar[float] = 1.0

    def statistics(
        self, features: NDArray[np.floating[Any]]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(T², Q) of every row, in float64."""
        z = (np.asarray(features, np.float64) - self.mean) / self.std
        t = z @ self.components
        t2 = (t * t / self.eigenvalues).sum(axis=1)
        resid = z - t @ self.components.T
        return t2, (resid * resid).sum(axis=1)

    def score(self, features: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
        t2, q = self.statistics(features)
        return np.maximum(t2 / self.t2_threshold, q / self.q_threshold)

    def output_specs(self) -> list[dict[str, Any]]:
        return [{"name": n, "shape": [None], "dtype": "float32"} for n in ("score", "t2", "q")]

    def provenance(self) -> dict[str, Any]:
        return {
            "n_components": int(self.components.shape[1]),
            "explained_variance": self.explained_variance,
            "t2_threshold": self.t2_threshold,
            "q_threshold": self.q_threshold,
        }

    def to_onnx(self) -> bytes:
        """features [N, D] → score, t2, q [N], all float32."""
        d, _ = self.components.shape
        p = self.components
        inits = [
            _const("mean", self.mean),
            _const("std", self.std),
            _const("w_t2", p / np.sqrt(self.eigenvalues)),
            _const("w_q", np.eye(d) - p @ p.T),
            _const("inv_t2_thr", np.array([1.0 / self.t2_threshold])),
            _const("inv_q_thr", np.array([1.0 / self.q_threshold])),
            numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        ]
        nodes = [
            helper.make_node("Sub", ["features", "mean"], ["centred"]),
            helper.make_node("Div", ["centred", "std"], ["z"]),
            helper.make_node("MatMul", ["z", "w_t2"], ["t_scaled"]),
            helper.make_node("Mul", ["t_scaled", "t_scaled"], ["t_sq"]),
            helper.make_node("ReduceSum", ["t_sq", "axis1"], ["t2"], keepdims=0),
            helper.make_node("MatMul", ["z", "w_q"], ["resid"]),
            helper.make_node("Mul", ["resid", "resid"], ["resid_sq"]),
            helper.make_node("ReduceSum", ["resid_sq", "axis1"], ["q"], keepdims=0),
            helper.make_node("Mul", ["t2", "inv_t2_thr"], ["t2_ratio"]),
            helper.make_node("Mul", ["q", "inv_q_thr"], ["q_ratio"]),
            helper.make_node("Max", ["t2_ratio", "q_ratio"], ["score"]),
        ]
        graph = helper.make_graph(
            nodes,
            "pca_t2_q",
            [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", d])],
            [
                helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N"])
                for n in ("score", "t2", "q")
            ],
            inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return bytes(model.SerializeToString())


def _const(name: str, value: NDArray[np.float64]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def fit_pca(
    features: NDArray[np.floating[Any]], threshold: ThresholdSpec, variance: float = 0.95
) -> PcaModel:
    """Standardise with the training mean/std, keep the fewest components explaining
    ``variance`` of the standardised variance, and set the T² and Q thresholds."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"PCA: expected at least 2 feature rows (N, D), got shape {x.shape}")
    if not 0.0 < variance <= 1.0:
        raise ValueError(f"PCA variance {variance}: expected 0 < variance <= 1")
    mean = x.mean(axis=0)
    std = x.std(axis=0, ddof=1)
    std = np.where(std > _STD_FLOOR * np.maximum(1.0, np.abs(mean)), std, 1.0)
    z = (x - mean) / std
    eigenvalues, vectors = np.linalg.eigh(np.cov(z, rowvar=False))
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, vectors = np.clip(eigenvalues[order], 0.0, None), vectors[:, order]
    largest = vectors[np.abs(vectors).argmax(axis=0), np.arange(vectors.shape[1])]
    vectors = vectors * np.where(largest < 0, -1.0, 1.0)
    total = eigenvalues.sum()
    if total <= 0:
        raise ValueError("PCA: the training features do not vary")
    cumulative = np.cumsum(eigenvalues) / total
    k = int(np.searchsorted(cumulative, variance - 1e-12) + 1)
    k = min(k, int((eigenvalues > total * 1e-12).sum()), max(1, x.shape[1] - 1))
    half = threshold.with_false_alarm_rate(threshold.false_alarm_rate / 2.0)
    draft = PcaModel(mean, std, vectors[:, :k], eigenvalues[:k], float(cumulative[k - 1]), 1.0, 1.0)
    t2, q = draft.statistics(x)
    t2_thr, q_thr = fit_threshold(t2, half), fit_threshold(q, half)
    if t2_thr <= 0 or q_thr <= 0:
        raise ValueError(f"PCA: degenerate thresholds T²={t2_thr:g}, Q={q_thr:g}")
    logger.info(
        "PCA: k=%d of %d (%.3f of variance), T2_thr=%.4g, Q_thr=%.4g",
        k,
        x.shape[1],
        cumulative[k - 1],
        t2_thr,
        q_thr,
    )
    return PcaModel(
        mean, std, vectors[:, :k], eigenvalues[:k], float(cumulative[k - 1]), t2_thr, q_thr
    )
