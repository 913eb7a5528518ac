"""TFLite ``TFLite_Detection_PostProcess`` outputs (SSD-style) → detections in frame pixels.

Four outputs: boxes ``[1, N, 4]`` as ``ymin, xmin, ymax, xmax`` (normalised 0..1 of the model
input unless ``normalized: false``), classes ``[1, N]`` (class ids as floats), scores ``[1, N]``
and count ``[1]`` (how many of the N rows are valid). The model has already run NMS.
"""

from __future__ import annotations

import logging
from typing import ClassVar, Literal, Self

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, model_validator

from runtime.config.base import PluginConfig
from runtime.errors import ModelError
from runtime.messages import Classification, Detection
from runtime.processing.postprocess.base import POSTPROCESSORS, Postprocessor, label_for
from runtime.processing.preprocess import Geometry

logger = logging.getLogger(__name__)

_CLASS_ID_LIMIT = 2**31 - 1


class SsdConfig(PluginConfig):
    type: Literal["ssd"]
    conf_threshold: float = Field(0.5, ge=0.0, le=1.0, description="keep boxes scoring >= this")
    boxes_output: int = Field(0, ge=0)
    classes_output: int = Field(1, ge=0)
    scores_output: int = Field(2, ge=0)
    count_output: int = Field(3, ge=0)
    label_offset: int = Field(
        0, description="added to the class id before the label lookup (e.g. 1 to skip background)"
    )
    normalized: bool = Field(True, description="boxes are 0..1 of the model input, not pixels")

    @model_validator(mode="after")
    def _distinct_outputs(self) -> Self:
        indices = [self.boxes_output, self.classes_output, self.scores_output, self.count_output]
        if len(set(indices)) != len(indices):
            raise ValueError(
                "boxes_output, classes_output, scores_output and count_output must be distinct, "
                f"got {indices}"
            )
        return self


@POSTPROCESSORS.register("ssd")
class SsdPostprocessor(Postprocessor):
    """Threshold the first ``count`` rows and map their boxes to the frame; no NMS.

    The model input size used to scale normalised boxes comes from the geometry
    (``frame * scale + 2 * pad``). Rows with a non-finite value, no width/height, or lying
    entirely outside the frame (letterbox padding) are dropped. Ordered by score, highest first.
    """

    config_type: ClassVar[type[PluginConfig]] = SsdConfig

    def __init__(
        self,
        labels: list[str],
        *,
        conf_threshold: float = 0.5,
        boxes_output: int = 0,
        classes_output: int = 1,
        scores_output: int = 2,
        count_output: int = 3,
        label_offset: int = 0,
        normalized: bool = True,
    ) -> None:
        self.labels = list(labels)
        self.conf_threshold = conf_threshold
        self.boxes_output = boxes_output
        self.classes_output = classes_output
        self.scores_output = scores_output
        self.count_output = count_output
        self.label_offset = label_offset
        self.normalized = normalized

    @classmethod
    def from_config(cls, config: PluginConfig, labels: list[str]) -> SsdPostprocessor:
        if not isinstance(config, SsdConfig):
            raise TypeError(f"ssd: expected an SsdConfig, got {type(config).__name__}")
        return cls(
            labels,
            conf_threshold=config.conf_threshold,
            boxes_output=config.boxes_output,
            classes_output=config.classes_output,
            scores_output=config.scores_output,
            count_output=config.count_output,
            label_offset=config.label_offset,
            normalized=config.normalized,
        )

    def decode(
        self, outputs: list[NDArray[np.generic]], geometry: Geometry
    ) -> tuple[tuple[Classification, ...], tuple[Detection, ...]]:
        boxes, classes, scores, count = self._arrays(outputs)
        boxes, classes, scores = boxes[:count], classes[:count], scores[:count]
        keep = (
            np.isfinite(scores)
            & (scores >= self.conf_threshold)
            & np.isfinite(classes)
            & np.isfinite(boxes).all(axis=1)
        )
        boxes, classes, scores = boxes[keep], classes[keep], scores[keep]
        ymin, xmin, ymax, xmax = boxes.T
        with np.errstate(over="ignore"):  # absurd values overflow to inf, then get clipped
            if self.normalized:
                in_width, in_height = input_size(geometry)
                xmin, xmax = xmin * in_width, xmax * in_width
                ymin, ymax = ymin * in_height, ymax * in_height
            xyxy = np.stack([xmin, ymin, xmax, ymax], axis=1)
            in_frame = geometry.to_frame(xyxy.astype(np.float32))
        nonempty = (
            (xmax > xmin)
            & (ymax > ymin)
            & (in_frame[:, 2] > in_frame[:, 0])
            & (in_frame[:, 3] > in_frame[:, 1])
        )
        order = np.flatnonzero(nonempty)
        order = order[np.argsort(-scores[order], kind="stable")]
        raw_ids = np.clip(np.rint(classes[order]), -_CLASS_ID_LIMIT, _CLASS_ID_LIMIT)
        class_ids = raw_ids.astype(np.int64) + self.label_offset
        return (), tuple(
            Detection(
                class_id=c, label=label_for(self.labels, c), score=s, bbox=(b[0], b[1], b[2], b[3])
            )
            for c, s, b in zip(
                class_ids.tolist(), scores[order].tolist(), in_frame[order].tolist(), strict=True
            )
        )

    def _arrays(
        self, outputs: list[NDArray[np.generic]]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], int]:
        """(boxes Nx4, classes N, scores N, valid count) after checking shapes and dtypes."""
        boxes = self._output(outputs, self.boxes_output, "boxes", integers_ok=False)
        classes = self._output(outputs, self.classes_output, "classes", integers_ok=True)
        scores = self._output(outputs, self.scores_output, "scores", integers_ok=False)
        count = self._output(outputs, self.count_output, "count", integers_ok=True)

        if boxes.ndim == 3 and boxes.shape[0] == 1:
            boxes = boxes[0]
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ModelError(
                f"ssd: boxes output {self.boxes_output}: expected shape [1, N, 4], "
                f"got {list(np.shape(outputs[self.boxes_output]))}"
            )
        n = boxes.shape[0]
        per_box = {
            "classes": (self.classes_output, classes),
            "scores": (self.scores_output, scores),
        }
        flat: dict[str, NDArray[np.float64]] = {}
        for role, (index, arr) in per_box.items():
            flat[role] = arr[0] if arr.ndim == 2 and arr.shape[0] == 1 else arr
            if flat[role].shape != (n,):
                raise ModelError(
                    f"ssd: {role} output {index}: expected shape [1, {n}] to match the {n} boxes, "
                    f"got {list(arr.shape)}"
                )
        if count.size != 1:
            raise ModelError(
                f"ssd: count output {self.count_output}: expected shape [1], "
                f"got {list(count.shape)}"
            )
        value = float(count.reshape(-1)[0])
        if not np.isfinite(value):
            raise ModelError(f"ssd: count output {self.count_output} is not finite: {value}")
        valid = min(max(round(value), 0), n)
        return boxes, flat["classes"], flat["scores"], valid

    @staticmethod
    def _output(
        outputs: list[NDArray[np.generic]], index: int, role: str, *, integers_ok: bool
    ) -> NDArray[np.float64]:
        if not 0 <= index < len(outputs):
            raise ModelError(
                f"ssd: config {role}_output={index} but the model has {len(outputs)} output(s)"
            )
        arr = np.asarray(outputs[index])
        numeric = np.issubdtype(arr.dtype, np.floating) or (
            integers_ok and np.issubdtype(arr.dtype, np.integer)
        )
        if not numeric:
            expected = "a float or integer" if integers_ok else "a float (dequantized)"
            raise ModelError(
                f"ssd: {role} output {index}: expected {expected} array, got dtype {arr.dtype}"
            )
        return arr.astype(np.float64)


def input_size(geometry: Geometry) -> tuple[float, float]:
    """(width, height) of the model input: recorded by the preprocessor, else recovered from how
    the frame was mapped into it (one pixel short with an odd letterbox padding)."""
    if geometry.input_width > 0 and geometry.input_height > 0:
        return float(geometry.input_width), float(geometry.input_height)
    width = geometry.frame_width * geometry.scale_x + 2 * geometry.pad_x
    height = geometry.frame_height * geometry.scale_y + 2 * geometry.pad_y
    return width, height
