"""Classifier output ([1, C] or [C] probabilities or logits) → the top-k classifications."""

from __future__ import annotations

import logging
from typing import ClassVar, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from runtime.config.base import PluginConfig
from runtime.errors import ModelError
from runtime.messages import Classification, Detection
from runtime.processing.postprocess.base import POSTPROCESSORS, Postprocessor, label_for
from runtime.processing.preprocess import Geometry

logger = logging.getLogger(__name__)


class ClassifyConfig(PluginConfig):
    type: Literal["classify"]
    softmax: bool = Field(
        False, description="apply softmax (the output is logits); else it already is probabilities"
    )
    top_k: int = Field(5, ge=1, description="report at most this many classes")
    min_score: float = Field(0.0, description="drop classes scoring below this")
    output: int = Field(0, ge=0, description="index of the model output holding the scores")


@POSTPROCESSORS.register("classify")
class ClassifyPostprocessor(Postprocessor):
    """Top-k classes by score, highest first; ties keep the lower class id first.

    Non-finite scores (NaN/inf from a broken model) are never reported.
    """

    config_type: ClassVar[type[PluginConfig]] = ClassifyConfig

    def __init__(
        self,
        labels: list[str],
        *,
        softmax: bool = False,
        top_k: int = 5,
        min_score: float = 0.0,
        output: int = 0,
    ) -> None:
        if top_k < 1:
            raise ValueError(f"classify: top_k must be >= 1, got {top_k}")
        if output < 0:
            raise ValueError(f"classify: output must be >= 0, got {output}")
        self.labels = list(labels)
        self.softmax = softmax
        self.top_k = top_k
        self.min_score = min_score
        self.output = output

    @classmethod
    def from_config(cls, config: PluginConfig, labels: list[str]) -> ClassifyPostprocessor:
        if not isinstance(config, ClassifyConfig):
            raise TypeError(f"classify: expected a ClassifyConfig, got {type(config).__name__}")
        return cls(
            labels,
            softmax=config.softmax,
            top_k=config.top_k,
            min_score=config.min_score,
            output=config.output,
        )

    def decode(
        self, outputs: list[NDArray[np.generic]], geometry: Geometry
    ) -> tuple[tuple[Classification, ...], tuple[Detection, ...]]:
        scores = self._scores(outputs)
        if self.softmax:
            scores = softmax(scores)
        candidates = np.flatnonzero(np.isfinite(scores) & (scores >= self.min_score))
        order = candidates[np.argsort(-scores[candidates], kind="stable")][: self.top_k]
        return (
            tuple(
                Classification(class_id=i, label=label_for(self.labels, i), score=s)
                for i, s in zip(order.tolist(), scores[order].tolist(), strict=True)
            ),
            (),
        )

    def _scores(self, outputs: list[NDArray[np.generic]]) -> NDArray[np.float64]:
        if not 0 <= self.output < len(outputs):
            raise ModelError(
                f"classify: config output={self.output} but the model has {len(outputs)} output(s)"
            )
        arr = np.asarray(outputs[self.output])
        if not np.issubdtype(arr.dtype, np.floating):
            raise ModelError(
                f"classify: output {self.output}: expected a float (dequantized) array, "
                f"got dtype {arr.dtype}"
            )
        if not (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[0] == 1)) or arr.size == 0:
            raise ModelError(
                f"classify: output {self.output}: expected shape [1, C] or [C] with C >= 1, "
                f"got {list(arr.shape)}"
            )
        if self.labels and arr.size != len(self.labels):
            raise ModelError(
                f"classify: output {self.output}: expected {len(self.labels)} scores "
                f"(one per label), got shape {list(arr.shape)}"
            )
        return arr.reshape(-1).astype(np.float64)


def softmax(logits: NDArray[np.floating]) -> NDArray[np.float64]:
    """Numerically stable softmax of a 1-D array (computed in float64)."""
    x = np.asarray(logits, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(x - x.max())
        out: NDArray[np.float64] = e / e.sum()
    return out
