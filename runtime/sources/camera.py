"""OpenCV camera source: a device index, an RTSP/HTTP stream, a video file or a folder of images.

Frames are captured on a daemon thread into a single slot (latest-frame semantics, see
``FrameSource``). Live sources (devices, URLs, or files with ``live: true``) never end: when opening
or reading fails they go to state "reconnecting", warn once per outage and retry with jittered
exponential backoff. Files and folders are played at their own rate (``pace: native``) or as fast
as the reader takes frames (``pace: max``), then end or loop.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray
from pydantic import Field, ValidationInfo, field_validator, model_validator

from runtime.config.base import PluginConfig, resolve_config_path
from runtime.errors import SourceError
from runtime.messages import Frame
from runtime.ratelimit import RateLimitedLog
from runtime.sources._backoff import Backoff
from runtime.sources.base import SOURCES, FrameSource, SourceState, SourceStatus

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
FOLDER_DEFAULT_FPS = 10.0
"""The rate of an image folder under ``pace: native`` when ``fps`` isn't set."""
FILE_FALLBACK_FPS = 30.0
"""Used for ``pace: native`` when a file doesn't say its frame rate."""
JOIN_TIMEOUT_S = 2.0
WARN_INTERVAL_S = 10.0

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_SECRET_QUERY_RE = re.compile(
    r"([?&;][^=&#;]*(?:pass|pwd|token|secret|key|auth|sig|cred)[^=&#;]*=)[^&#;]*", re.IGNORECASE
)

UriKind = Literal["device", "url", "path"]


def uri_kind(uri: int | str) -> UriKind:
    """What a ``uri`` names, from its text alone: a device index, a stream URL, or a path."""
    if isinstance(uri, int) or uri.strip().isdigit():
        return "device"
    if _URL_RE.match(uri):
        return "url"
    return "path"


def redact_uri(uri: int | str) -> str:
    """The uri with URL credentials (``user:pass@``) and secret-looking query values replaced.

    Everything before the last ``@`` of the authority-and-path part is treated as credentials, so
    a password containing ``/`` or ``@`` is redacted too (at worst a host is hidden as well).
    """
    text = str(uri)
    scheme = _URL_RE.match(text)
    if scheme is None:
        return text
    head, rest = scheme.group(0), text[scheme.end() :]
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    location, tail = rest[:cut], rest[cut:]
    if "@" in location:
        location = "***@" + location.rpartition("@")[2]
    return head + location + _SECRET_QUERY_RE.sub(r"\1***", tail)


def default_name(uri: int | str) -> str:
    """``camera<N>`` for a device index, otherwise the redacted uri."""
    if uri_kind(uri) == "device":
        return f"camera{int(uri)}"
    return redact_uri(uri)


class CameraConfig(PluginConfig):
    type: Literal["camera"]
    uri: int | str = Field(
        description=(
            "a device index (0, or '0'), a video file path, an rtsp:// or http(s):// stream URL, "
            "or a folder of images (.jpg/.jpeg/.png/.bmp, played in name order)"
        )
    )
    name: str | None = Field(
        None,
        min_length=1,
        description="source name in frames, logs and status; defaults to camera<N> for a device "
        "or the uri with credentials redacted",
    )
    fps: float | None = Field(
        None,
        gt=0,
        description="frames are delivered at most this often; for files and folders it is also "
        "the playback rate (instead of the file's own)",
    )
    pace: Literal["native", "max"] = Field(
        "native",
        description="files/folders only: 'native' plays at the file's frame rate (or fps; "
        "folders default to 10 fps) like a live camera; 'max' decodes as fast as the reader takes "
        "frames, so none are dropped",
    )
    loop: bool = Field(False, description="files/folders only: start again after the last frame")
    live: bool = Field(
        False,
        description="treat this file or folder as a live camera: reconnect (reopen, with backoff) "
        "on failure or at its end instead of ending; useful to replay recordings as if live. "
        "Devices and URLs are always live.",
    )
    width: int | None = Field(None, gt=0, description="requested capture width (devices only)")
    height: int | None = Field(None, gt=0, description="requested capture height (devices only)")
    open_timeout_s: float = Field(10.0, gt=0, description="stream open timeout (URLs)")
    read_timeout_s: float = Field(5.0, gt=0, description="stream read timeout (URLs)")
    reconnect_initial_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    buffer_size: int = Field(
        1, ge=1, description="capture buffer of live sources; 1 avoids stale buffered frames"
    )
    max_consecutive_failures: int = Field(
        3, ge=1, description="read failures in a row before a live source reconnects"
    )

    @field_validator("uri", mode="before")
    @classmethod
    def _check_uri(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("expected a device index, path or URL, got a boolean")
        if isinstance(value, int) and value < 0:
            raise ValueError(f"device index must be >= 0, got {value}")
        if isinstance(value, str) and not value.strip():
            raise ValueError("expected a device index, path or URL, got an empty string")
        return value

    @field_validator("uri")
    @classmethod
    def _resolve_relative_path(cls, value: int | str, info: ValidationInfo) -> int | str:
        """A relative file or folder path is relative to the config file (as ``ConfigPath``)."""
        if isinstance(value, str) and uri_kind(value) == "path":
            return resolve_config_path(value, info)
        return value

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """Logging a config never shows stream credentials."""
        for key, value in super().__repr_args__():
            yield key, redact_uri(value) if key == "uri" and isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_combination(self) -> CameraConfig:
        kind = uri_kind(self.uri)
        where = f"camera {redact_uri(self.uri)!r}"
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError(
                f"{where}: reconnect_max_s ({self.reconnect_max_s}) must be >= "
                f"reconnect_initial_s ({self.reconnect_initial_s})"
            )
        if kind != "path":
            for field in ("loop", "live"):
                if getattr(self, field):
                    raise ValueError(f"{where}: {field} applies to files and folders only")
            if self.pace != "native":
                raise ValueError(f"{where}: pace applies to files and folders only")
        if self.loop and self.live:
            raise ValueError(f"{where}: loop and live exclude each other (a live file reopens)")
        if kind != "device" and (self.width is not None or self.height is not None):
            raise ValueError(f"{where}: width/height apply to camera devices only")
        return self


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


Opener = Callable[[CameraConfig], Capture]


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


class _Pacer:
    """Spaces frames ``period_s`` apart on a fixed schedule (no drift, no burst after a stall)."""

    def __init__(self, period_s: float | None) -> None:
        self.period_s = period_s
        self._due: float | None = None

    def wait(self, stop: threading.Event) -> bool:
        """Sleep until the next frame is due; False if ``stop`` was set meanwhile."""
        if self.period_s is None:
            return not stop.is_set()
        now = time.monotonic()
        if self._due is None or now - self._due > self.period_s:
            self._due = now
        delay = self._due - now
        if delay > 0 and stop.wait(delay):
            return False
        self._due += self.period_s
        return not stop.is_set()


class _Throttle:
    """Lets through at most one frame per ``period_s`` of a live source (decimation)."""

    def __init__(self, period_s: float | None) -> None:
        self.period_s = period_s
        self._due: float | None = None

    def admit(self, now: float) -> bool:
        if self.period_s is None:
            return True
        # a frame a little early (camera timing jitter) still counts for this slot
        if self._due is not None and now < self._due - 0.1 * self.period_s:
            return False
        on_schedule = self._due is not None and now - self._due <= self.period_s
        self._due = (self._due if on_schedule and self._due is not None else now) + self.period_s
        return True


@SOURCES.register("camera")
class CameraSource(FrameSource):
    """Frames from OpenCV on a capture thread; see the module docstring for the behaviour."""

    config_type: ClassVar[type[PluginConfig]] = CameraConfig

    def __init__(
        self,
        config: CameraConfig,
        *,
        opener: Opener = open_capture,
        backoff: Backoff | None = None,
    ) -> None:
        self.config = config
        self.name = config.name or default_name(config.uri)
        self.kind: UriKind = uri_kind(config.uri)
        self.live = self.kind != "path" or config.live
        self._safe_uri = redact_uri(config.uri)
        self._opener = opener
        self._backoff = backoff or Backoff(config.reconnect_initial_s, config.reconnect_max_s)
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        # guarded by _cond
        self._slot: Frame | None = None
        self._state: SourceState = "stopped"
        self._finished = False  # the capture thread is done (end of file, error or stop)
        self._eof = False
        self._seq = -1
        self._captured = 0
        self._dropped = 0
        self._reconnects = 0
        self._decode_errors = 0
        self._last_error: str | None = None
        # capture thread only
        self._outage_since: float | None = None
        self._log = RateLimitedLog(logger, interval_s=WARN_INTERVAL_S)

    @classmethod
    def from_config(cls, config: PluginConfig) -> CameraSource:
        if not isinstance(config, CameraConfig):
            raise TypeError(f"expected CameraConfig, got {type(config).__name__}")
        return cls(config)

    # -- FrameSource -------------------------------------------------------------------------

    def start(self) -> None:
        """Open a file or folder now (``SourceError`` if that fails); live sources open on the
        capture thread, so a camera that is down doesn't block startup."""
        if self._thread is not None:
            raise RuntimeError(f"camera {self.name} already started (a source is not restartable)")
        with self._cond:
            self._state, self._finished = "starting", False
        capture: Capture | None = None
        if not self.live:
            try:
                capture = self._opener(self.config)
            except SourceError as exc:
                self._finish("stopped", str(exc))
                raise SourceError(f"camera {self.name}: {exc}") from exc
            self._set_state("running")
        self._thread = threading.Thread(
            target=self._run, args=(capture,), name=f"camera-{self.name}", daemon=True
        )
        self._thread.start()

    def read(self, timeout_s: float) -> Frame | None:
        with self._cond:
            self._cond.wait_for(lambda: self._slot is not None or self._finished, timeout_s)
            frame, self._slot = self._slot, None
            if frame is not None:
                self._cond.notify_all()
            return frame

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(JOIN_TIMEOUT_S)
            if thread.is_alive():
                logger.warning(
                    "camera %s: capture thread still blocked in the backend after %.0f s; "
                    "leaving it (daemon) to finish on its own",
                    self.name,
                    JOIN_TIMEOUT_S,
                )
        with self._cond:
            if not self._eof:
                self._state = "stopped"
            self._finished = True
            self._cond.notify_all()

    @property
    def ended(self) -> bool:
        with self._cond:
            return self._eof and self._slot is None

    def status(self) -> SourceStatus:
        with self._cond:
            return SourceStatus(
                name=self.name,
                kind="camera",
                state=self._state,
                frames_captured=self._captured,
                frames_dropped=self._dropped,
                reconnects=self._reconnects,
                last_error=self._last_error,
            )

    @property
    def lossless(self) -> bool:
        return self.kind == "path" and self.config.pace == "max" and not self.config.live

    @property
    def decode_errors(self) -> int:
        """Frames (folder images) skipped because they could not be decoded."""
        with self._cond:
            return self._decode_errors

    # -- capture thread ----------------------------------------------------------------------

    def _run(self, capture: Capture | None) -> None:
        try:
            self._capture_loop(capture)
        except Exception as exc:
            logger.exception("camera %s: capture thread failed", self.name)
            self._finish("ended", f"capture thread failed: {exc!r}")

    def _capture_loop(self, capture: Capture | None) -> None:
        file_like = self.kind == "path"
        fps = self.config.fps
        throttle = _Throttle(None if file_like or fps is None else 1.0 / fps)
        pacer: _Pacer | None = None
        failures = frames_this_pass = 0
        try:
            while not self._stop.is_set():
                if capture is None:
                    capture = self._connect()
                    if capture is None:
                        return
                    failures = frames_this_pass = 0
                    pacer = None
                if pacer is None:
                    pacer = _Pacer(self._play_period(capture) if file_like else None)
                image, reason = self._read_frame(capture)
                if self._stop.is_set():
                    return
                if image is not None:
                    failures, frames_this_pass = 0, frames_this_pass + 1
                    if file_like and not pacer.wait(self._stop):
                        return
                    if throttle.admit(time.monotonic()) and self._slot_free():
                        self._publish(image)
                elif self.live:
                    failures += 1
                    if failures >= self.config.max_consecutive_failures:
                        capture.release()
                        capture = None
                        self._begin_outage(f"{reason} ({failures} times in a row)")
                        self._stop.wait(self._backoff.next_delay())
                elif self.config.loop and frames_this_pass > 0:
                    capture, frames_this_pass = self._restart(capture), 0
                    if capture is None:
                        return
                else:
                    self._end_of_file(frames_this_pass, reason)
                    return
        finally:
            if capture is not None:
                capture.release()
            with self._cond:
                self._finished = True
                self._cond.notify_all()

    def _read_frame(self, capture: Capture) -> tuple[NDArray[np.uint8] | None, str]:
        """The next decodable frame, or None and why not."""
        while not self._stop.is_set():
            try:
                image = capture.read()
            except FrameDecodeError as exc:
                self._skip_frame(str(exc))
                continue
            except SourceError as exc:
                return None, str(exc)
            if image is None:
                return None, "end of stream" if self.kind == "path" else "read returned no frame"
            return image, ""
        return None, "stopped"

    def _play_period(self, capture: Capture) -> float | None:
        cfg = self.config
        if cfg.fps is not None:
            return 1.0 / cfg.fps
        if cfg.pace == "max":
            return None
        return 1.0 / (capture.fps or FILE_FALLBACK_FPS)

    def _connect(self) -> Capture | None:
        """Open a live source, retrying with backoff; None if stopped first."""
        while not self._stop.is_set():
            try:
                capture = self._opener(self.config)
            except SourceError as exc:
                self._begin_outage(str(exc))
                delay = self._backoff.next_delay()
                logger.debug("camera %s: retry in %.2f s", self.name, delay)
                if self._stop.wait(delay):
                    return None
                continue
            self._backoff.reset()
            with self._cond:
                if self._outage_since is not None:
                    self._reconnects += 1
                self._state = "running"
            if self._outage_since is not None:
                logger.info(
                    "camera %s back after %.1f s",
                    self.name,
                    time.monotonic() - self._outage_since,
                )
                self._outage_since = None
            return capture
        return None

    def _begin_outage(self, reason: str) -> None:
        with self._cond:
            self._state = "reconnecting"
            self._last_error = reason
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            logger.warning(
                "camera %s (%s) unavailable: %s; reconnecting (backoff %.1f-%.0f s)",
                self.name,
                self._safe_uri,
                reason,
                self.config.reconnect_initial_s,
                self.config.reconnect_max_s,
            )
        else:
            logger.debug("camera %s: still unavailable: %s", self.name, reason)

    def _restart(self, capture: Capture) -> Capture | None:
        """Back to the first frame of a looping file: seek, or reopen if the file can't seek."""
        if capture.rewind():
            return capture
        capture.release()
        try:
            return self._opener(self.config)
        except SourceError as exc:
            logger.error("camera %s: cannot reopen to loop: %s", self.name, exc)
            self._finish("ended", str(exc))
            return None

    def _end_of_file(self, frames_this_pass: int, reason: str) -> None:
        if frames_this_pass == 0 and self.config.loop:
            error: str | None = f"{self._safe_uri}: no decodable frames to loop over"
            logger.error("camera %s: %s", self.name, error)
        else:
            error = None
            logger.info("camera %s: %s after %d frames", self.name, reason, self._captured)
        self._finish("ended", error)

    def _finish(self, state: SourceState, error: str | None) -> None:
        with self._cond:
            self._state = state
            if state == "ended":
                self._eof = True
            if error is not None:
                self._last_error = error
            self._finished = True
            self._cond.notify_all()

    def _skip_frame(self, reason: str) -> None:
        with self._cond:
            self._decode_errors += 1
            self._last_error = reason
        self._log.log(logging.WARNING, "decode", "camera %s: skipping frame: %s", self.name, reason)

    def _slot_free(self) -> bool:
        """Under ``pace: max`` a file is decoded only as fast as the reader takes frames, so none
        are dropped (decoding ahead just to drop would waste the CPU the model needs); every other
        source goes on capturing. False if stopped meanwhile."""
        if not self.lossless:
            return True
        with self._cond:
            while self._slot is not None:
                if self._stop.is_set():
                    return False
                self._cond.wait(0.1)
            return not self._stop.is_set()

    def _publish(self, image: NDArray[np.uint8]) -> None:
        frame_at_ns, frame_mono_ns = time.time_ns(), time.monotonic_ns()
        with self._cond:
            if self._slot is not None:
                self._dropped += 1
            self._seq += 1
            self._captured += 1
            self._slot = Frame(
                source=self.name,
                seq=self._seq,
                captured_at_ns=frame_at_ns,
                captured_mono_ns=frame_mono_ns,
                image=image,
            )
            self._cond.notify_all()

    def _set_state(self, state: SourceState) -> None:
        with self._cond:
            self._state = state
