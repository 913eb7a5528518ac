"""OpenCV camera source: a device index, an RTSP/HTTP stream, a video file or a folder of images.

Frames are captured on a daemon thread into a single slot (latest-frame semantics, see
``FrameSource``). Live sources (devices, URLs, or files with ``live: true``) never end: when opening
or reading fails, or the capture fails unexpectedly, they go to state "reconnecting", warn once per
outage and retry with jittered exponential backoff. An outage ends with the first frame read after
reopening, not when the open succeeds: a camera that opens but delivers nothing is still down.
Files and folders are played at their own rate (``pace: native``) or as fast as the reader takes
frames (``pace: max``), then end or loop.

Every backend open and read ticks ``capture_clock``, the watchdog's ``capture`` stage. A call that
hangs past the watchdog's timeout (a backend ignoring its own timeouts) is an outage too: the
blocked thread is left (a daemon; it leaves as soon as the call returns, releasing its capture)
and a new capture thread reconnects after a backoff delay (``abandon_capture``).

Opening is in ``_capture`` (``Capture``, ``open_capture``), uri helpers in ``_uri`` and frame
timing in ``_pacing``; the public names are re-exported here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, ValidationInfo, field_validator, model_validator

from runtime.config.base import PluginConfig, resolve_config_path
from runtime.errors import SourceError
from runtime.health import StageClock
from runtime.messages import Frame
from runtime.ratelimit import RateLimitedLog
from runtime.sources._backoff import Backoff
from runtime.sources._capture import (
    FOLDER_DEFAULT_FPS,
    IMAGE_SUFFIXES,
    Capture,
    CvCapture,
    FolderCapture,
    FrameDecodeError,
    open_capture,
    to_bgr,
)
from runtime.sources._pacing import Pacer, Throttle
from runtime.sources._uri import UriKind, default_name, redact_uri, uri_kind
from runtime.sources.base import SOURCES, FrameSource, SourceState, SourceStatus

__all__ = [
    "FOLDER_DEFAULT_FPS",
    "IMAGE_SUFFIXES",
    "CameraConfig",
    "CameraSource",
    "Capture",
    "CvCapture",
    "FolderCapture",
    "FrameDecodeError",
    "Opener",
    "UriKind",
    "default_name",
    "open_capture",
    "redact_uri",
    "to_bgr",
    "uri_kind",
]

logger = logging.getLogger(__name__)

FILE_FALLBACK_FPS = 30.0
"""Used for ``pace: native`` when a file doesn't say its frame rate."""
JOIN_TIMEOUT_S = 2.0
WARN_INTERVAL_S = 10.0


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


Opener = Callable[[CameraConfig], Capture]
"""Opens a capture for a config; raises ``SourceError`` when the source isn't available."""


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
        self._thread: threading.Thread | None = None  # the capture thread; assigned under _cond
        self._clock = StageClock()
        self.capture_clock = self._clock
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
        self._thread = self._capture_thread(capture, 0.0)
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
                    "camera %s: capture thread still blocked in the backend after %.1f s; "
                    "leaving it (daemon) to finish on its own",
                    self.name,
                    JOIN_TIMEOUT_S,
                )
        with self._cond:
            if not self._eof:
                self._state = "stopped"
            self._finished = True
            self._cond.notify_all()

    def abandon_capture(self, reason: str) -> bool:
        """Leave the capture thread blocked in a backend call and reconnect on a new one after a
        backoff delay (live sources; a file just waits). False if stopped or finished."""
        if not self.live:
            return False
        with self._cond:
            if self._stop.is_set() or self._finished or self._thread is None:
                return False
            # the old thread is blocked and the new one hasn't started: nobody else touches
            # the capture-thread state here
            self._begin_outage(reason)
            self._thread = self._capture_thread(None, self._backoff.next_delay())
            self._thread.start()  # under the lock: stop() never sees an unstarted thread
        return True

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

    def _capture_thread(self, capture: Capture | None, pause_s: float) -> threading.Thread:
        return threading.Thread(
            target=self._run, args=(capture, pause_s), name=f"camera-{self.name}", daemon=True
        )

    def _leaving(self) -> bool:
        """Stopped, or this capture thread was abandoned (another one captures now)."""
        return self._stop.is_set() or threading.current_thread() is not self._thread

    def _run(self, capture: Capture | None, pause_s: float) -> None:
        """The capture thread. A live source survives any failure: an unexpected exception is an
        outage like the camera going away (released, backed off, reopened). A file ends."""
        try:
            if pause_s > 0 and self._stop.wait(pause_s):
                return
            while True:
                try:
                    self._capture_loop(capture)
                    return
                except Exception as exc:
                    capture = None  # _capture_loop released it
                    if self._leaving():
                        logger.debug("camera %s: failed while leaving", self.name, exc_info=True)
                        return
                    if not self.live:
                        logger.exception("camera %s: capture thread failed", self.name)
                        self._finish("ended", f"capture thread failed: {exc!r}")
                        return
                    self._begin_outage(f"capture failed: {exc!r}", exc_info=True)
                    if self._stop.wait(self._backoff.next_delay()):
                        return
        finally:
            with self._cond:
                if threading.current_thread() is self._thread:
                    self._finished = True
                    self._cond.notify_all()

    def _capture_loop(self, capture: Capture | None) -> None:
        """Capture until stopped or the end of a file; raises what it doesn't expect (``_run``
        decides), releasing the capture on the way out."""
        file_like = self.kind == "path"
        fps = self.config.fps
        throttle = Throttle(None if file_like or fps is None else 1.0 / fps)
        pacer: Pacer | None = None
        failures = frames_this_pass = 0
        delivering = False  # a frame was read since this capture was opened
        try:
            while not self._stop.is_set():
                if capture is None:
                    capture = self._connect()
                    if capture is None:
                        return
                    failures = frames_this_pass = 0
                    pacer, delivering = None, False
                if pacer is None:
                    pacer = Pacer(self._play_period(capture) if file_like else None)
                image, reason = self._read_frame(capture)
                if self._leaving():
                    return
                if image is not None:
                    if not delivering:
                        delivering = True
                        self._back_online()
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

    def _read_frame(self, capture: Capture) -> tuple[NDArray[np.uint8] | None, str]:
        """The next decodable frame, or None and why not."""
        clock = self._clock
        while not self._leaving():
            token = clock.begin()
            try:
                image = capture.read()
            except FrameDecodeError as exc:
                self._skip_frame(str(exc))
                continue
            except SourceError as exc:
                return None, str(exc)
            finally:
                clock.end(token)
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
        """Open a live source, retrying with backoff; None if stopped first.

        A successful open doesn't end an outage (``_back_online`` does, on the first frame), so a
        camera that opens but delivers nothing keeps backing off.
        """
        while not self._stop.is_set():
            token = self._clock.begin()
            try:
                capture = self._opener(self.config)
            except SourceError as exc:
                if self._leaving():
                    return None
                self._begin_outage(str(exc))
                delay = self._backoff.next_delay()
                logger.debug("camera %s: retry in %.2f s", self.name, delay)
                if self._stop.wait(delay):
                    return None
                continue
            finally:
                self._clock.end(token)
            if self._leaving():
                # stop() or the watchdog gave up on this thread while the backend was opening
                capture.release()
                return None
            return capture
        return None

    def _back_online(self) -> None:
        """The first frame since (re)opening: the source runs, and an outage is over."""
        self._backoff.reset()
        since, self._outage_since = self._outage_since, None
        with self._cond:
            if self._stop.is_set():
                return
            self._state = "running"
            if since is not None:
                self._reconnects += 1
        if since is not None:
            logger.info("camera %s back after %.1f s", self.name, time.monotonic() - since)

    def _begin_outage(self, reason: str, *, exc_info: bool = False) -> None:
        """Record a failure of a live source; the first of an outage is a warning."""
        with self._cond:
            if self._stop.is_set():
                return
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
                exc_info=exc_info,
            )
        else:
            logger.debug("camera %s: still unavailable: %s", self.name, reason, exc_info=exc_info)

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
        """The source is done; after ``stop()`` its state stays "stopped"."""
        with self._cond:
            if not self._stop.is_set():
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
