"""Frame → input tensor exactly as the manifest says: colour, resize, scale/mean/std, layout, dtype."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from runtime.errors import ModelError
from runtime.manifest import InputSpec


@dataclass(frozen=True, slots=True)
class Geometry:
    """How a frame was mapped into the model input, so boxes can be mapped back."""

    frame_width: int
    frame_height: int
    scale_x: float  # input pixels per frame pixel
    scale_y: float
    pad_x: float  # input pixels of padding on the left / top (letterbox)
    pad_y: float
    input_width: int = 0  # the model input's size; 0 when unknown (derive from the rest)
    input_height: int = 0

    def to_frame(self, boxes: NDArray[np.float32]) -> NDArray[np.float32]:
        """Map Nx4 x1,y1,x2,y2 boxes from model-input pixels to frame pixels, clipped."""
        out = np.empty_like(boxes, dtype=np.float32)
        out[:, [0, 2]] = (boxes[:, [0, 2]] - self.pad_x) / self.scale_x
        out[:, [1, 3]] = (boxes[:, [1, 3]] - self.pad_y) / self.scale_y
        # basic slices are views, so the clip lands in ``out`` (``out[:, [0, 2]]`` would be a copy)
        np.clip(out[:, 0::2], 0, self.frame_width, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, self.frame_height, out=out[:, 1::2])
        return out


class Preprocessor:
    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        self.height, self.width = spec.spatial_size()
        # pixel * scale - mean) / std folded into one multiply-add per channel
        std = np.asarray(spec.std, dtype=np.float32)
        self._mul = (np.float32(spec.scale) / std).astype(np.float32)
        self._add = (-np.asarray(spec.mean, dtype=np.float32) / std).astype(np.float32)
        q = spec.quantization
        if spec.dtype == "int8" and q is None:
            raise ModelError(
                f"input {spec.name!r}: dtype int8 needs quantization (scale, zero_point), got none"
            )
        if q is not None and spec.dtype not in ("int8", "uint8"):
            raise ModelError(
                f"input {spec.name!r}: quantization applies to int8/uint8 inputs, not {spec.dtype}"
            )
        self._quant = None if q is None else (np.float32(q.scale), np.float32(q.zero_point))
        self._identity = bool(np.allclose(self._mul, 1.0) and np.allclose(self._add, 0.0))

    def identity_geometry(self) -> Geometry:
        """The geometry of a frame that already has the model's input size."""
        return Geometry(self.width, self.height, 1.0, 1.0, 0.0, 0.0, self.width, self.height)

    def __call__(self, image: NDArray[np.uint8]) -> tuple[NDArray[np.generic], Geometry]:
        resized, geometry = self._resize(image)
        if self.spec.color == "RGB":
            resized = np.asarray(cv2.cvtColor(resized, cv2.COLOR_BGR2RGB), dtype=np.uint8)
        if self.spec.layout == "NCHW":
            # planar uint8 first (cheap), so the float maths runs on contiguous channel planes
            planar = np.ascontiguousarray(resized.transpose(2, 0, 1))
            tensor = self._normalise(planar, self._mul[:, None, None], self._add[:, None, None])
        else:
            tensor = self._normalise(resized, self._mul, self._add)
        return tensor[np.newaxis], geometry

    def _resize(self, image: NDArray[np.uint8]) -> tuple[NDArray[np.uint8], Geometry]:
        h, w = image.shape[:2]
        if self.spec.resize == "stretch":
            sx, sy = self.width / w, self.height / h
            out = image if (w, h) == (self.width, self.height) else self._cv_resize(image, sx, sy)
            return out, Geometry(w, h, sx, sy, 0.0, 0.0, self.width, self.height)
        s = min(self.width / w, self.height / h)
        # at least one pixel: a very thin frame would otherwise round to 0 and crash cv2.resize
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        px, py = (self.width - nw) // 2, (self.height - nh) // 2
        canvas = np.full((self.height, self.width, 3), self.spec.letterbox_fill, dtype=np.uint8)
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        canvas[py : py + nh, px : px + nw] = cv2.resize(image, (nw, nh), interpolation=interp)
        return canvas, Geometry(w, h, nw / w, nh / h, float(px), float(py), self.width, self.height)

    def _cv_resize(self, image: NDArray[np.uint8], sx: float, sy: float) -> NDArray[np.uint8]:
        interp = cv2.INTER_AREA if sx < 1 and sy < 1 else cv2.INTER_LINEAR
        out = cv2.resize(image, (self.width, self.height), interpolation=interp)
        return np.asarray(out, dtype=np.uint8)

    def _normalise(
        self, image: NDArray[np.uint8], mul: NDArray[np.float32], add: NDArray[np.float32]
    ) -> NDArray[np.generic]:
        dtype = self.spec.dtype
        if dtype == "uint8" and self._quant is None:
            return image
        x = image.astype(np.float32)
        if not self._identity:
            x *= mul
            x += add
        if self._quant is not None:
            scale, zp = self._quant
            return quantize(x, float(scale), int(zp), dtype)
        return x.astype(dtype, copy=False)


def quantize(
    x: NDArray[np.floating], scale: float, zero_point: int, dtype: str
) -> NDArray[np.generic]:
    """Real values → int8/uint8: ``clip(round(x / scale) + zero_point)``, halves to even."""
    info = np.iinfo(np.dtype(dtype))
    q = np.rint(np.asarray(x, dtype=np.float32) / np.float32(scale)) + np.float32(zero_point)
    out: NDArray[np.generic] = np.clip(q, info.min, info.max).astype(dtype)
    return out
