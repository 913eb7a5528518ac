"""Ultralytics YOLOv8/11 detection output → NMS'ed detections in frame pixels.

The export has one output ``[1, 4 + nc, N]``: per anchor ``cx, cy, w, h`` in model-input pixels,
then ``nc`` class scores (already sigmoid'ed, no objectness). The transposed ``[1, N, 4 + nc]``
(and either layout without the batch axis) is accepted too.
"""

from __future__ import annotations

import logging
from typing import ClassVar, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from runtime.config.base import PluginConfig
from runtime.errors import ModelError
from runtime.messages import Classification, Detection
from runtime.processing.nms import batched_nms, nms
from runtime.processing.postprocess.base import POSTPROCESSORS, Postprocessor, label_for
from runtime.processing.preprocess import Geometry

logger = logging.getLogger(__name__)

BOX_VALUES = 4


class YoloConfig(PluginConfig):
    type: Literal["yolo"]
    conf_threshold: float = Field(
        0.25, ge=0.0, le=1.0, description="keep anchors whose best class score is >= this"
    )
    iou_threshold: float = Field(
        0.45, ge=0.0, le=1.0, description="NMS drops a box overlapping a better one by more"
    )
    max_detections: int = Field(100, ge=1)
    class_agnostic_nms: bool = Field(
        False, description="let boxes of different classes suppress each other"
    )
    output: int = Field(0, ge=0, description="index of the model output to decode")


@POSTPROCESSORS.register("yolo")
class YoloPostprocessor(Postprocessor):
    """Best class per anchor, score threshold, NMS in model-input pixels, then map to the frame.

    Boxes with a non-finite value or no width/height are dropped, and so are boxes that lie
    entirely outside the frame (e.g. in the letterbox padding) and clip to nothing.
    Detections are ordered by score, highest first.
    """

    config_type: ClassVar[type[PluginConfig]] = YoloConfig

    def __init__(
        self,
        labels: list[str],
        *,
        conf_threshold: float = 0.25,
        iou_threshold: float = 0.45,
        max_detections: int = 100,
        class_agnostic_nms: bool = False,
        output: int = 0,
    ) -> None:
        if max_detections < 1:
            raise ValueError(f"yolo: max_detections must be >= 1, got {max_detections}")
        if output < 0:
            raise ValueError(f"yolo: output must be >= 0, got {output}")
        self.labels = list(labels)
        self.conf_threshold = conf_threshold
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections
        self.class_agnostic_nms = class_agnostic_nms
        self.output = output

    @classmethod
    def from_config(cls, config: PluginConfig, labels: list[str]) -> YoloPostprocessor:
        if not isinstance(config, YoloConfig):
            raise TypeError(f"yolo: expected a YoloConfig, got {type(config).__name__}")
        return cls(
            labels,
            conf_threshold=config.conf_threshold,
            iou_threshold=config.iou_threshold,
            max_detections=config.max_detections,
            class_agnostic_nms=config.class_agnostic_nms,
            output=config.output,
        )

    def decode(
        self, outputs: list[NDArray[np.generic]], geometry: Geometry
    ) -> tuple[tuple[Classification, ...], tuple[Detection, ...]]:
        preds = self._predictions(outputs)  # (4 + nc, N)
        class_scores = preds[BOX_VALUES:]
        # float64: NumPy 2 would compare float32 scores with the threshold rounded to float32
        conf = class_scores.max(axis=0).astype(np.float64)  # NaN if any score is: dropped
        candidates = np.flatnonzero(np.isfinite(conf) & (conf >= self.conf_threshold))
        if candidates.size == 0:
            return (), ()
        conf = conf[candidates]
        class_ids = class_scores[:, candidates].argmax(axis=0)
        cx, cy, w, h = preds[:BOX_VALUES, candidates].astype(np.float64)
        with np.errstate(invalid="ignore"):  # inf - inf from a broken model is dropped next
            boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
            sane = np.isfinite(boxes).all(axis=1) & (w > 0) & (h > 0)
        boxes, conf, class_ids = boxes[sane], conf[sane], class_ids[sane]
        with np.errstate(over="ignore"):  # absurd sizes overflow float32 to inf, then clip
            in_frame = geometry.to_frame(boxes.astype(np.float32))
        inside = (in_frame[:, 2] > in_frame[:, 0]) & (in_frame[:, 3] > in_frame[:, 1])
        boxes, in_frame = boxes[inside], in_frame[inside]
        conf, class_ids = conf[inside], class_ids[inside]
        if self.class_agnostic_nms:
            keep = nms(boxes, conf, self.iou_threshold, self.max_detections)
        else:
            keep = batched_nms(boxes, conf, class_ids, self.iou_threshold, self.max_detections)
        return (), tuple(
            Detection(
                class_id=c,
                label=label_for(self.labels, c),
                score=s,
                bbox=(b[0], b[1], b[2], b[3]),
            )
            for c, s, b in zip(
                class_ids[keep].tolist(),
                conf[keep].tolist(),
                in_frame[keep].tolist(),
                strict=True,
            )
        )

    def _predictions(self, outputs: list[NDArray[np.generic]]) -> NDArray[np.float32]:
        """The output as a (4 + nc, N) float32 array (a view when no cast is needed)."""
        if not 0 <= self.output < len(outputs):
            raise ModelError(
                f"yolo: config output={self.output} but the model has {len(outputs)} output(s)"
            )
        arr = np.asarray(outputs[self.output])
        if not np.issubdtype(arr.dtype, np.floating):
            raise ModelError(
                f"yolo: output {self.output}: expected a float (dequantized) array, "
                f"got dtype {arr.dtype}"
            )
        shape = list(arr.shape)
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        elif arr.ndim != 2:
            raise ModelError(
                f"yolo: output {self.output}: expected shape [1, 4+nc, N] or [1, N, 4+nc], "
                f"got {shape}"
            )
        rows, cols = arr.shape
        if self.labels:
            channels = BOX_VALUES + len(self.labels)
            if rows == channels:
                return arr.astype(np.float32, copy=False)
            if cols == channels:
                return arr.T.astype(np.float32, copy=False)
            raise ModelError(
                f"yolo: output {self.output}: expected shape [1, {channels}, N] or "
                f"[1, N, {channels}] (4 box values + {len(self.labels)} labels), got {shape}"
            )
        if min(rows, cols) <= BOX_VALUES:
            raise ModelError(
                f"yolo: output {self.output}: expected shape [1, 4+nc, N] or [1, N, 4+nc] with "
                f"nc >= 1, got {shape}"
            )
        return (arr if rows <= cols else arr.T).astype(np.float32, copy=False)
