"""Opening camera sources with OpenCV: devices, streams, video files and image folders.

``open_capture`` is the camera source's default opener; ``CameraSource`` takes another one for
tests or special hardware, as long as it returns a ``Capture``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from runtime.errors import SourceError
from runtime.sources._uri import redact_uri, uri_kind

if TYPE_CHECKING:
    from runtime.sources.camera import CameraConfig

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
FOLDER_DEFAULT_FPS = 10.0
"""The rate of an image folder under ``pace: native`` when ``fps`` isn't set."""


class Capture(Protocol):
    """An open video source. Implementations raise ``SourceError`` for failures with a reason."""

    @property
    def fps(self) -> float | None:
        """The source's own frame rate, if it says one."""

    def read(self) -> NDArray[np.uint8] | None:
        """The next frame as HxWx3 BGR uint8, or None at the end / on a failed read.

        Raises ``FrameDecodeError`` for a single undecodable frame that can be skipped.
        """

    def rewind(self) -> bool:
        """Go back to the first frame; False if that isn't possible."""

    def release(self) -> None: ...


class FrameDecodeError(SourceError):
    """One frame (an image of a folder) could not be decoded; the source skips it."""


def to_bgr(image: NDArray[Any]) -> NDArray[np.uint8]:
    """Gray, BGRA and 16-bit images as HxWx3 uint8 BGR."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise SourceError(f"unsupported pixel type {image.dtype}; expected uint8 or uint16")
    channels = 1 if image.ndim == 2 else image.shape[-1]
    if image.ndim not in (2, 3) or channels not in (1, 3, 4):
        raise SourceError(f"unsupported image shape {image.shape}; expected HxW, HxWx1/3/4")
    conversion = {1: cv2.COLOR_GRAY2BGR, 4: cv2.COLOR_BGRA2BGR}.get(channels)
    if conversion is None:
        return image
    return np.asarray(cv2.cvtColor(image, conversion), dtype=np.uint8)


class CvCapture:
    """A ``cv2.VideoCapture`` that is known to be open."""

    def __init__(self, capture: Any, what: str) -> None:
        self._cap = capture
        self._what = what
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        self._fps = fps if 0 < fps <= 1000 else None

    @property
    def fps(self) -> float | None:
        return self._fps

    def read(self) -> NDArray[np.uint8] | None:
        try:
            ok, image = self._cap.read()
        except cv2.error as exc:
            raise SourceError(f"reading {self._what} failed: {exc}") from exc
        if not ok or image is None:
            return None
        return to_bgr(image)

    def rewind(self) -> bool:
        return bool(self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0))

    def release(self) -> None:
        self._cap.release()


class FolderCapture:
    """The images of a folder, in name order, as frames."""

    def __init__(self, folder: Path) -> None:
        self._files = sorted(
            p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not self._files:
            raise SourceError(
                f"image folder {folder} has no images; expected files ending in "
                f"{', '.join(IMAGE_SUFFIXES)}"
            )
        self._next = 0

    @property
    def fps(self) -> float | None:
        return FOLDER_DEFAULT_FPS

    def read(self) -> NDArray[np.uint8] | None:
        if self._next >= len(self._files):
            return None
        path = self._files[self._next]
        self._next += 1
        try:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        except cv2.error as exc:
            raise FrameDecodeError(f"cannot decode image {path}: {exc}") from exc
        if image is None:
            raise FrameDecodeError(f"cannot decode image {path}")
        return to_bgr(image)

    def rewind(self) -> bool:
        self._next = 0
        return True

    def release(self) -> None:
        self._files = []


def open_capture(config: CameraConfig) -> Capture:
    """The default opener: OpenCV for devices, streams and files; ``FolderCapture`` for folders."""
    kind = uri_kind(config.uri)
    try:
        if kind == "device":
            return _open_device(config)
        if kind == "url":
            return _open_stream(config)
        path = Path(str(config.uri))
        if path.is_dir():
            return FolderCapture(path)
        if not path.exists():
            raise SourceError(f"video file not found: {path}")
        cap = cv2.VideoCapture(str(path), cv2.CAP_ANY)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open video file {path}: not a readable video")
        return CvCapture(cap, f"video file {path}")
    except (cv2.error, OSError) as exc:
        raise SourceError(f"cannot open {redact_uri(config.uri)}: {exc}") from exc


def _open_device(config: CameraConfig) -> Capture:
    index = int(config.uri)
    cap = cv2.VideoCapture(index, cv2.CAP_ANY)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"cannot open camera device {index}")
    cap.set(cv2.CAP_PROP_BUFFERSIZE, config.buffer_size)
    if config.width is not None:
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, config.width)
    if config.height is not None:
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, config.height)
    if config.width is not None or config.height is not None:
        got = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        want = (config.width or got[0], config.height or got[1])
        if got != want:
            logger.warning("camera device %d: requested %dx%d, capturing %dx%d", index, *want, *got)
    return CvCapture(cap, f"camera device {index}")


def _open_stream(config: CameraConfig) -> Capture:
    url, safe = str(config.uri), redact_uri(config.uri)
    if cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG):
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            round(config.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            round(config.read_timeout_s * 1000),
        ]
        cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    else:
        cap = cv2.VideoCapture(url, cv2.CAP_ANY)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"cannot open stream {safe}")
    cap.set(cv2.CAP_PROP_BUFFERSIZE, config.buffer_size)
    return CvCapture(cap, f"stream {safe}")
