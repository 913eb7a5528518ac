"""``zone``: raise while a watched object stands inside a polygon of the camera image.

A detection matches when its label is watched, its score is at least ``min_score`` and its anchor
point (bottom-centre by default: where a person or vehicle touches the ground) lies inside the
polygon or on its edge.
"""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray
from pydantic import Field, FiniteFloat, ValidationInfo, field_validator

from runtime.config.base import PluginConfig
from runtime.messages import Detection, Inference
from runtime.rules._state import DebouncedRule, DebouncedRuleConfig, FrameMatch, label_matcher
from runtime.rules.base import RULES

Point = tuple[FiniteFloat, FiniteFloat]

MIN_POLYGON_POINTS = 3
_DEGENERATE_AREA = 1e-9
"""A polygon whose area is below this fraction of its extent squared has no inside."""


class ZoneConfig(DebouncedRuleConfig):
    type: Literal["zone"]
    coordinates: Literal["pixels", "normalized"] = Field(
        "normalized", description="normalized: x and y are fractions of frame width and height"
    )
    polygon: list[Point] = Field(
        description="zone corners as [x, y], in order around the zone (>= 3, non-zero area)"
    )
    anchor: Literal["bottom_center", "center"] = Field(
        "bottom_center", description="the point of a detection's box tested against the zone"
    )
    min_score: float = Field(0.5, ge=0.0, le=1.0, allow_inf_nan=False)

    @field_validator("polygon")
    @classmethod
    def _valid_polygon(cls, polygon: list[Point], info: ValidationInfo) -> list[Point]:
        if len(polygon) < MIN_POLYGON_POINTS:
            raise ValueError(
                f"polygon needs at least {MIN_POLYGON_POINTS} points [x, y], got {len(polygon)}"
            )
        area = polygon_area(polygon)
        xs = [p[0] for p in polygon]
        ys = [p[1] for p in polygon]
        extent = max(max(xs) - min(xs), max(ys) - min(ys))
        if area <= _DEGENERATE_AREA * extent * extent:
            raise ValueError(
                f"polygon {[list(p) for p in polygon]} has zero area "
                "(repeated or collinear points); it needs an inside"
            )
        if info.data.get("coordinates") == "normalized":
            for i, (x, y) in enumerate(polygon):
                if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                    raise ValueError(
                        f"polygon point {i} [{x}, {y}] is outside 0..1 but coordinates is "
                        "'normalized' (fractions of frame width/height); "
                        "set coordinates: pixels for pixel values"
                    )
        return polygon


def polygon_area(polygon: list[Point]) -> float:
    """Absolute shoelace area."""
    total = 0.0
    for (x1, y1), (x2, y2) in zip(polygon, polygon[1:] + polygon[:1], strict=True):
        total += x1 * y2 - x2 * y1
    return abs(total) / 2.0


@RULES.register("zone")
class ZoneRule(DebouncedRule):
    config_type = ZoneConfig

    def __init__(self, name: str, config: ZoneConfig) -> None:
        super().__init__(name, config)
        self.config = config
        self._matches_label = label_matcher(config.labels)
        self._min_score = config.min_score
        self._polygon = np.asarray(config.polygon, dtype=np.float32).reshape(-1, 1, 2)
        self._contour_size: tuple[int, int] | None = None
        self._contour = self._polygon

    @classmethod
    def from_config(cls, config: PluginConfig, name: str) -> ZoneRule:
        if not isinstance(config, ZoneConfig):
            raise TypeError(f"zone rule {name!r}: expected ZoneConfig, got {type(config).__name__}")
        return cls(name, config)

    def match(self, inference: Inference) -> FrameMatch:
        """The best-scoring watched detection inside the zone, if any."""
        contour = self.contour(inference.frame.width, inference.frame.height)
        best: Detection | None = None
        for d in inference.detections:
            if not (d.score >= self._min_score and self._matches_label(d.label)):
                continue  # also drops NaN scores
            if best is not None and d.score <= best.score:
                continue
            if self.contains(contour, self.anchor_of(d)):
                best = d
        if best is None:
            return FrameMatch(hit=False, miss=True, label=None, score=0.0)
        return FrameMatch(
            hit=True, miss=False, label=best.label, score=float(best.score), bbox=best.bbox
        )

    def contour(self, frame_width: int, frame_height: int) -> NDArray[np.float32]:
        """The polygon in frame pixels, as an OpenCV contour (N x 1 x 2 float32)."""
        if self.config.coordinates == "pixels":
            return self._polygon
        if self._contour_size != (frame_width, frame_height):
            scale = np.array([frame_width, frame_height], dtype=np.float32)
            self._contour = (self._polygon * scale).astype(np.float32)
            self._contour_size = (frame_width, frame_height)
        return self._contour

    def anchor_of(self, detection: Detection) -> tuple[float, float]:
        x1, y1, x2, y2 = detection.bbox
        y = y2 if self.config.anchor == "bottom_center" else (y1 + y2) / 2.0
        return (float(x1 + x2) / 2.0, float(y))

    @staticmethod
    def contains(contour: NDArray[np.float32], point: tuple[float, float]) -> bool:
        """Inside or on the edge (pointPolygonTest returns +1 inside, 0 on the edge, -1 out)."""
        if not (math.isfinite(point[0]) and math.isfinite(point[1])):
            return False
        return cv2.pointPolygonTest(contour, point, measureDist=False) >= 0
