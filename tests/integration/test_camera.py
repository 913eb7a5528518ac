"""The OpenCV camera source against real video files, image folders, an HTTP stream and V4L2."""

from __future__ import annotations

import functools
import itertools
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from pydantic import ValidationError

from runtime.config.base import PluginConfig
from runtime.errors import SourceError
from runtime.messages import Frame
from runtime.sources._backoff import Backoff
from runtime.sources.base import SOURCES
from runtime.sources.camera import (
    CameraConfig,
    CameraSource,
    Capture,
    CvCapture,
    to_bgr,
)
from tests.integration.video_helpers import (
    HEIGHT,
    MAX_INDEX,
    WIDTH,
    frame_image,
    frame_index,
    write_images,
    write_video,
)

pytestmark = pytest.mark.integration

LOGGER = "runtime.sources.camera"
MakeSource = Callable[..., CameraSource]


@pytest.fixture
def make_source() -> Iterator[MakeSource]:
    """Builds camera sources from config keywords; every one is stopped after the test."""
    made: list[CameraSource] = []

    def make(
        uri: int | str | Path, opener: Any = None, backoff: Backoff | None = None, **fields: Any
    ) -> CameraSource:
        config = CameraConfig(
            type="camera", uri=str(uri) if isinstance(uri, Path) else uri, **fields
        )
        injected: dict[str, Any] = {"opener": opener} if opener is not None else {}
        source = CameraSource(config, backoff=backoff, **injected)
        made.append(source)
        return source

    yield make
    for source in made:
        source.stop()


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A real HTTP server on a free loopback port serving a directory: (directory, port)."""
    root = tmp_path / "www"
    root.mkdir()

    class QuietHandler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root))
    )
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="test-http", daemon=True
    )
    thread.start()
    try:
        yield root, int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(2)


def read_until_ended(source: CameraSource, deadline_s: float = 5.0) -> list[Frame]:
    frames: list[Frame] = []
    deadline = time.monotonic() + deadline_s
    while not source.ended:
        assert time.monotonic() < deadline, f"source did not end; status {source.status()}"
        frame = source.read(1.0)
        if frame is not None:
            frames.append(frame)
    return frames


def read_n(source: CameraSource, n: int, deadline_s: float = 5.0) -> list[Frame]:
    frames: list[Frame] = []
    deadline = time.monotonic() + deadline_s
    while len(frames) < n:
        assert time.monotonic() < deadline, f"got {len(frames)} of {n} frames; {source.status()}"
        frame = source.read(0.5)
        if frame is not None:
            frames.append(frame)
    return frames


def wait_until(predicate: Callable[[], bool], timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def indices(frames: list[Frame]) -> list[int]:
    return [frame_index(f.image) for f in frames]


def capture_threads(source: CameraSource) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"camera-{source.name}"]


# -- files ---------------------------------------------------------------------------------------


def test_file_frames_arrive_in_order_at_the_files_rate(
    tmp_path: Path, make_source: MakeSource
) -> None:
    path = write_video(tmp_path / "clip.mp4", 20, fps=30)
    source = make_source(path)
    source.start()
    frames = read_until_ended(source)

    seqs = [f.seq for f in frames]
    assert seqs == sorted(set(seqs)) and seqs[-1] == 19
    assert indices(frames) == seqs  # each frame is the file frame its seq says, in file order
    assert len(frames) >= 16  # a reader keeping up at 30 fps gets them all (some slack for CI)
    assert all(f.image.shape == (HEIGHT, WIDTH, 3) and f.image.dtype == np.uint8 for f in frames)
    assert {f.source for f in frames} == {str(path)}
    monos = [f.captured_mono_ns for f in frames]
    assert monos == sorted(monos)
    played_s = (monos[-1] - monos[0]) / 1e9
    nominal_s = (seqs[-1] - seqs[0]) / 30
    assert 0.8 * nominal_s < played_s < 2.0 * nominal_s  # played at the file's 30 fps
    status = source.status()
    assert (status.state, status.frames_captured) == ("ended", 20)
    assert status.frames_dropped == 20 - len(frames)
    assert status.last_error is None


def test_pace_max_delivers_every_frame_as_fast_as_the_reader_takes_them(
    tmp_path: Path, make_source: MakeSource
) -> None:
    path = write_video(tmp_path / "clip.mp4", 60, fps=30)  # 2 s at its own rate
    source = make_source(path, pace="max")
    started = time.monotonic()
    source.start()
    frames: list[Frame] = []
    while not source.ended:
        frame = source.read(1.0)
        if frame is not None:
            frames.append(frame)
            if frame.seq % 10 == 0:
                time.sleep(0.01)  # a reader that is sometimes slower than the decoder
    elapsed = time.monotonic() - started

    assert indices(frames) == list(range(60))
    assert [f.seq for f in frames] == list(range(60))
    assert source.status().frames_dropped == 0
    assert elapsed < 1.0


def test_slow_reader_always_gets_the_newest_frame_and_drops_are_counted(
    tmp_path: Path, make_source: MakeSource
) -> None:
    path = write_video(tmp_path / "clip.mp4", 40, fps=60)
    source = make_source(path)
    source.start()
    frames: list[Frame] = []
    while not source.ended:
        newest_before = source.status().frames_captured - 1
        frame = source.read(1.0)
        if frame is None:
            continue
        assert frame.seq >= newest_before, "a stale frame was returned while a newer one existed"
        frames.append(frame)
        time.sleep(0.08)  # ~5 frame periods

    seqs = [f.seq for f in frames]
    assert seqs == sorted(set(seqs))
    assert indices(frames) == seqs  # the image is the frame its seq says, not an older one
    assert max(b - a for a, b in itertools.pairwise(seqs)) >= 3
    status = source.status()
    assert status.frames_captured == 40
    assert status.frames_dropped == 40 - len(frames) > 0


def test_loop_restarts_from_the_first_frame(tmp_path: Path, make_source: MakeSource) -> None:
    path = write_video(tmp_path / "clip.mp4", 10)
    source = make_source(path, pace="max", loop=True)
    source.start()
    frames = read_n(source, 25)

    assert indices(frames) == [*range(10), *range(10), *range(5)]
    assert [f.seq for f in frames] == list(range(25))
    assert not source.ended
    assert source.status().state == "running"


def test_after_the_last_frame_read_returns_none_at_once(
    tmp_path: Path, make_source: MakeSource
) -> None:
    path = write_video(tmp_path / "clip.mp4", 5)
    source = make_source(path, pace="max")
    source.start()
    assert indices(read_n(source, 5)) == [0, 1, 2, 3, 4]

    started = time.monotonic()
    assert source.read(5.0) is None
    assert time.monotonic() - started < 0.5
    assert source.ended
    assert source.status().state == "ended"
    assert source.read(5.0) is None
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize(
    ("filename", "content", "message"),
    [
        ("missing.mp4", None, "video file not found: {path}"),
        (
            "garbage.mp4",
            b"this is not a video",
            "cannot open video file {path}: not a readable video",
        ),
    ],
)
def test_a_file_that_cannot_be_opened_fails_start_naming_the_path(
    tmp_path: Path, make_source: MakeSource, filename: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / filename
    if content is not None:
        path.write_bytes(content)
    source = make_source(path)
    with pytest.raises(SourceError) as excinfo:
        source.start()
    assert message.format(path=path) in str(excinfo.value)
    assert source.status().state == "stopped"
    assert capture_threads(source) == []
    assert source.read(0.2) is None

    write_video(path, 3)  # once the mistake is fixed, start() can be tried again
    source.start()
    frame = source.read(2.0)
    assert frame is not None and frame_index(frame.image) == 0


# -- image folders -------------------------------------------------------------------------------


def test_image_folder_plays_in_name_order_and_skips_undecodable_images(
    tmp_path: Path, make_source: MakeSource, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    folder = tmp_path / "frames"
    write_images(folder, [0, 1, 3, 5], suffix=".png")
    cv2.imwrite(str(folder / "frame_002.png"), frame_image(2)[:, :, 0])  # grayscale
    cv2.imwrite(str(folder / "frame_004.png"), cv2.cvtColor(frame_image(4), cv2.COLOR_BGR2BGRA))
    (folder / "frame_002_corrupt.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    (folder / "notes.txt").write_text("not an image")
    source = make_source(folder)  # no fps: folders play at 10 fps
    started = time.monotonic()
    source.start()
    frames = read_until_ended(source)
    elapsed = time.monotonic() - started

    assert indices(frames) == [0, 1, 2, 3, 4, 5]
    assert all(f.image.shape == (HEIGHT, WIDTH, 3) and f.image.dtype == np.uint8 for f in frames)
    assert elapsed >= 0.45  # 5 periods at 10 fps
    assert source.decode_errors == 1
    status = source.status()
    assert status.state == "ended"
    assert status.last_error is not None and "frame_002_corrupt.jpg" in status.last_error
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "frame_002_corrupt.jpg" in warnings[0]


def test_image_folder_without_images_fails_start(tmp_path: Path, make_source: MakeSource) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "readme.txt").write_text("no images here")
    source = make_source(folder)
    with pytest.raises(SourceError, match=rf"image folder {folder} has no images.*\.jpg"):
        source.start()


# -- live sources --------------------------------------------------------------------------------


def test_live_file_reconnects_when_the_file_appears(
    tmp_path: Path, make_source: MakeSource, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    path = tmp_path / "later.mp4"
    source = make_source(path, live=True, reconnect_initial_s=0.02, reconnect_max_s=0.05)
    source.start()  # a live source doesn't fail start: the camera may come up later

    wait_until(lambda: source.status().state == "reconnecting")
    assert source.read(0.2) is None
    status = source.status()
    assert status.state == "reconnecting"
    assert status.last_error == f"video file not found: {path}"
    assert not source.ended

    write_video(tmp_path / "partial.mp4", 60, fps=30)
    os.replace(tmp_path / "partial.mp4", path)  # appears at once, never half-written
    frames = read_n(source, 3)

    assert indices(frames) == [0, 1, 2]
    status = source.status()
    assert status.state == "running"
    assert status.reconnects == 1
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    attempts = [m for lvl, m in messages if lvl == logging.DEBUG and "still unavailable" in m]
    warnings = [m for lvl, m in messages if lvl == logging.WARNING]
    assert len(attempts) >= 2  # it kept retrying ...
    assert len(warnings) == 1  # ... but warned once for the outage
    assert "unavailable" in warnings[0] and str(path) in warnings[0]
    assert any(lvl == logging.INFO and "back after" in m for lvl, m in messages)


def test_live_file_reopens_after_consecutive_read_failures(
    tmp_path: Path, make_source: MakeSource
) -> None:
    path = write_video(tmp_path / "clip.mp4", 8, fps=30)
    # native pace: a live source drops frames its reader misses, and at 30 fps the second pass
    # still has ~200 ms to go (no second reopen) when the reader is done
    source = make_source(path, live=True, reconnect_initial_s=0.02, reconnect_max_s=0.05)
    source.start()
    frames: list[Frame] = []
    deadline = time.monotonic() + 5.0
    while not frames or frames[-1].seq < 9:
        assert time.monotonic() < deadline, f"no frame of the second pass; {source.status()}"
        frame = source.read(0.5)
        if frame is not None:
            frames.append(frame)

    # every frame of both passes was captured in order (the reader may miss some under load)
    assert indices(frames) == [f.seq % 8 for f in frames]
    status = source.status()
    assert status.reconnects == 1
    assert status.last_error == "end of stream (3 times in a row)"
    assert not source.ended


def test_http_stream_reconnects_and_never_shows_credentials(
    http_root: tuple[Path, int], make_source: MakeSource, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    root, port = http_root
    uri = f"http://viewer:s3cret-pw@127.0.0.1:{port}/clip.mp4?token=tok-123&res=low"
    safe = f"http://***@127.0.0.1:{port}/clip.mp4?token=***&res=low"
    source = make_source(
        uri, open_timeout_s=2, read_timeout_s=2, reconnect_initial_s=0.02, reconnect_max_s=0.05
    )
    assert source.name == safe
    source.start()
    wait_until(lambda: source.status().last_error is not None)
    assert source.status().state == "reconnecting"
    assert source.status().last_error == f"cannot open stream {safe}"

    write_video(root / "clip.mp4", 30)
    frames = read_n(source, 2)
    seqs = [f.seq for f in frames]
    assert seqs == sorted(set(seqs))
    assert all(frame_index(f.image) < 30 for f in frames)
    assert source.status().reconnects >= 1

    shown = [source.name, str(source.status().as_dict())] + [r.getMessage() for r in caplog.records]
    for text in shown:
        assert "s3cret" not in text and "tok-123" not in text and "viewer" not in text


def test_missing_camera_device_is_reconnecting_with_the_reason(make_source: MakeSource) -> None:
    source = make_source(99, reconnect_initial_s=0.05, reconnect_max_s=0.1)
    assert source.name == "camera99"
    source.start()
    wait_until(lambda: source.status().state == "reconnecting")
    assert source.status().last_error == "cannot open camera device 99"
    assert source.read(0.1) is None
    assert not source.ended


class SimulatedCamera:
    """A 60 fps 'device' replaying a real video file in a loop, at the rate a camera delivers."""

    def __init__(self, path: Path) -> None:
        self._cap = CvCapture(cv2.VideoCapture(str(path)), str(path))
        self._next_due = time.monotonic()

    @property
    def fps(self) -> float | None:
        return 60.0

    def read(self) -> NDArray[np.uint8] | None:
        self._next_due += 1 / 60
        time.sleep(max(0.0, self._next_due - time.monotonic()))
        image = self._cap.read()
        if image is None and self._cap.rewind():
            image = self._cap.read()
        return image

    def rewind(self) -> bool:
        return self._cap.rewind()

    def release(self) -> None:
        self._cap.release()


def test_fps_decimates_a_live_camera(tmp_path: Path, make_source: MakeSource) -> None:
    path = write_video(tmp_path / "clip.mp4", 60, fps=60)

    def opener(config: CameraConfig) -> Capture:
        return SimulatedCamera(path)

    source = make_source(0, opener=opener, fps=20)
    source.start()
    frames = read_n(source, 10)

    monos = [f.captured_mono_ns for f in frames]
    rate = (len(frames) - 1) / ((monos[-1] - monos[0]) / 1e9)
    assert 15 < rate < 25
    assert [f.seq for f in frames] == list(range(10))  # skipped frames take no seq
    steps = np.diff(indices(frames))
    assert 2.5 <= float(steps.mean()) <= 3.5  # every third frame of the 60 fps camera
    assert source.status().frames_dropped == 0


def test_fps_sets_the_playback_rate_of_a_file(tmp_path: Path, make_source: MakeSource) -> None:
    path = write_video(tmp_path / "clip.mp4", 30, fps=60)
    source = make_source(path, fps=20)
    source.start()
    frames = read_n(source, 12)

    seqs = [f.seq for f in frames]
    assert indices(frames) == seqs  # a file is slowed down, every frame in turn, not decimated
    monos = [f.captured_mono_ns for f in frames]
    rate = (seqs[-1] - seqs[0]) / ((monos[-1] - monos[0]) / 1e9)
    assert 16 < rate < 24


# -- faults of live cameras (injected captures) --------------------------------------------------


class ScriptedCamera:
    """An injected live 'device' for faults real hardware won't show on demand: numbered frames at
    ~200 fps while ``delivering`` is set, failed reads (None) otherwise, and ``fault`` raised by
    read number ``fault_at`` (from 1)."""

    def __init__(
        self, delivering: threading.Event, fault: Exception | None = None, fault_at: int = 0
    ) -> None:
        self.delivering = delivering
        self.fault = fault
        self.fault_at = fault_at
        self.reads = 0
        self.released = False

    @property
    def fps(self) -> float | None:
        return None

    def read(self) -> NDArray[np.uint8] | None:
        time.sleep(0.005)
        self.reads += 1
        if self.fault is not None and self.reads == self.fault_at:
            raise self.fault
        if not self.delivering.is_set():
            return None
        return frame_image(self.reads % (MAX_INDEX + 1))

    def rewind(self) -> bool:
        return False

    def release(self) -> None:
        self.released = True


def camera_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == level]


def test_a_camera_that_opens_but_delivers_no_frames_keeps_backing_off(
    make_source: MakeSource, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    delivering = threading.Event()
    opened: list[float] = []
    captures: list[ScriptedCamera] = []

    def opener(config: CameraConfig) -> Capture:
        opened.append(time.monotonic())
        captures.append(ScriptedCamera(delivering))
        return captures[-1]

    backoff = Backoff(0.02, 1.0, rng=random.Random(5))
    twin = Backoff(0.02, 1.0, rng=random.Random(5))
    expected = [twin.next_delay() for _ in range(4)]
    source = make_source(0, opener=opener, backoff=backoff)
    source.start()
    wait_until(lambda: len(opened) >= 5)

    gaps = np.diff(opened[:5])
    # each reopen waited the next, longer delay: a successful open doesn't reset the backoff
    assert all(gap >= delay - 0.002 for gap, delay in zip(gaps, expected, strict=True)), gaps
    assert backoff.attempts >= 4
    status = source.status()
    assert (status.state, status.reconnects) == ("reconnecting", 0)
    assert status.last_error == "read returned no frame (3 times in a row)"
    assert all(c.released for c in captures[:4])
    assert source.read(0.0) is None
    warnings = camera_records(caplog, logging.WARNING)
    assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()
    assert not [r for r in camera_records(caplog, logging.INFO) if "back after" in r.getMessage()]

    delivering.set()  # the outage ends with the first frame, not with an open
    read_n(source, 3)
    status = source.status()
    assert (status.state, status.reconnects) == ("running", 1)
    assert backoff.attempts == 0
    back = [r for r in camera_records(caplog, logging.INFO) if "back after" in r.getMessage()]
    assert len(back) == 1
    assert len(camera_records(caplog, logging.WARNING)) == 1


@pytest.mark.parametrize("error", [RuntimeError, cv2.error], ids=["RuntimeError", "cv2.error"])
@pytest.mark.parametrize("where", ["read", "open"])
def test_an_unexpected_error_is_an_outage_of_a_live_camera(
    make_source: MakeSource,
    caplog: pytest.LogCaptureFixture,
    error: type[Exception],
    where: str,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    fault = error("driver hiccup")
    delivering = threading.Event()
    delivering.set()
    calls = itertools.count()
    captures: list[ScriptedCamera] = []

    def opener(config: CameraConfig) -> Capture:
        first = next(calls) == 0
        if first and where == "open":
            raise fault
        captures.append(ScriptedCamera(delivering, fault if first else None, fault_at=3))
        return captures[-1]

    source = make_source(0, opener=opener, reconnect_initial_s=0.01, reconnect_max_s=0.05)
    source.start()
    wait_until(lambda: source.status().reconnects == 1)
    read_n(source, 3)

    status = source.status()
    assert (status.state, status.reconnects) == ("running", 1)
    assert status.last_error == f"capture failed: {fault!r}"
    assert not source.ended
    if where == "read":
        assert len(captures) == 2 and captures[0].released
    warnings = camera_records(caplog, logging.WARNING)
    assert len(warnings) == 1
    assert warnings[0].exc_info is not None and warnings[0].exc_info[1] is fault
    assert "unavailable: capture failed" in warnings[0].getMessage()


def test_an_unexpected_error_ends_a_file_with_the_reason(
    tmp_path: Path, make_source: MakeSource, caplog: pytest.LogCaptureFixture
) -> None:
    delivering = threading.Event()
    delivering.set()
    captures: list[ScriptedCamera] = []

    def opener(config: CameraConfig) -> Capture:
        captures.append(ScriptedCamera(delivering, RuntimeError("bad codec"), fault_at=3))
        return captures[-1]

    source = make_source(tmp_path / "clip.mp4", opener=opener, pace="max")
    source.start()
    frames = read_until_ended(source)

    assert indices(frames) == [1, 2]
    status = source.status()
    assert status.state == "ended"
    assert status.last_error == "capture thread failed: RuntimeError('bad codec')"
    assert len(captures) == 1 and captures[0].released
    errors = camera_records(caplog, logging.ERROR)
    assert len(errors) == 1 and errors[0].exc_info is not None


# -- stop ----------------------------------------------------------------------------------------


def _playing(tmp_path: Path, make_source: MakeSource) -> CameraSource:
    source = make_source(write_video(tmp_path / "clip.mp4", 60, fps=30))
    source.start()
    read_n(source, 2)
    return source


def _in_backoff(tmp_path: Path, make_source: MakeSource) -> CameraSource:
    source = make_source(
        tmp_path / "missing.mp4", live=True, reconnect_initial_s=20, reconnect_max_s=30
    )
    source.start()
    wait_until(lambda: source.status().state == "reconnecting")
    return source


def _waiting_for_reader(tmp_path: Path, make_source: MakeSource) -> CameraSource:
    source = make_source(write_video(tmp_path / "clip.mp4", 10), pace="max")
    source.start()
    wait_until(lambda: source.status().frames_captured == 1)
    return source


@pytest.mark.parametrize("setup", [_playing, _in_backoff, _waiting_for_reader])
def test_stop_joins_the_capture_thread_promptly(
    tmp_path: Path,
    make_source: MakeSource,
    setup: Callable[[Path, MakeSource], CameraSource],
) -> None:
    source = setup(tmp_path, make_source)
    assert len(capture_threads(source)) == 1
    started = time.monotonic()
    source.stop()
    assert time.monotonic() - started < 1.0
    assert capture_threads(source) == []
    assert source.status().state == "stopped"
    assert not source.ended
    source.read(0.0)  # a frame captured before stop may still be handed out once
    started = time.monotonic()
    assert source.read(2.0) is None
    assert time.monotonic() - started < 0.1
    source.stop()  # idempotent


def test_a_capture_thread_stuck_in_open_cannot_undo_stop(
    make_source: MakeSource, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("runtime.sources.camera.JOIN_TIMEOUT_S", 0.05)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    in_open, unblock = threading.Event(), threading.Event()
    delivering = threading.Event()
    delivering.set()
    calls = itertools.count()
    captures: list[ScriptedCamera] = []

    def opener(config: CameraConfig) -> Capture:
        if next(calls) == 0:
            raise SourceError("camera not plugged in")  # an outage is under way ...
        in_open.set()
        unblock.wait(5)  # ... and the backend hangs in the next open
        captures.append(ScriptedCamera(delivering))
        return captures[-1]

    source = make_source(0, opener=opener, reconnect_initial_s=0.01, reconnect_max_s=0.05)
    source.start()
    try:
        assert in_open.wait(2)
        [thread] = capture_threads(source)
        source.stop()
        assert thread.is_alive()
        assert any("still blocked" in r.getMessage() for r in caplog.records)
    finally:
        unblock.set()
    thread.join(2)

    assert not thread.is_alive()
    status = source.status()
    assert (status.state, status.reconnects) == ("stopped", 0)
    assert len(captures) == 1 and captures[0].released
    assert source.read(0.0) is None


# -- config, names, conversions ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"uri": -1}, "device index must be >= 0"),
        ({"uri": True}, "got a boolean"),
        ({"uri": "  "}, "got an empty string"),
        ({"uri": "rtsp://cam/1", "loop": True}, "loop applies to files and folders only"),
        ({"uri": 0, "live": True}, "live applies to files and folders only"),
        ({"uri": "rtsp://cam/1", "pace": "max"}, "pace applies to files and folders only"),
        ({"uri": "a.mp4", "loop": True, "live": True}, "loop and live exclude each other"),
        ({"uri": "a.mp4", "width": 640}, "width/height apply to camera devices only"),
        ({"uri": 0, "fps": 0}, "greater than 0"),
        ({"uri": 0, "reconnect_initial_s": 5, "reconnect_max_s": 1}, r"reconnect_max_s \(1.0\)"),
        ({"uri": 0, "max_consecutive_failures": 0}, "greater than or equal to 1"),
        ({"uri": 0, "colour": "bgr"}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_config_is_rejected_with_a_clear_message(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        CameraConfig(type="camera", **fields)


def test_config_errors_and_repr_do_not_show_credentials() -> None:
    with pytest.raises(ValidationError) as excinfo:
        CameraConfig(type="camera", uri="rtsp://admin:hunter2@cam/1", loop=True)
    assert "rtsp://***@cam/1" in str(excinfo.value).split("input_value")[0]
    config = CameraConfig(type="camera", uri="rtsp://admin:hunter2@cam/1")
    assert "hunter2" not in repr(config) and "hunter2" not in str(config)
    assert "rtsp://***@cam/1" in repr(config)
    assert config.uri == "rtsp://admin:hunter2@cam/1"  # the real uri is still there to open


def test_relative_paths_are_resolved_against_the_config_file() -> None:
    def uri(value: int | str) -> int | str:
        data = {"type": "camera", "uri": value}
        return CameraConfig.model_validate(data, context={"base_dir": "/etc/edgewatch"}).uri

    assert uri("clips/yard.mp4") == "/etc/edgewatch/clips/yard.mp4"
    assert uri("/abs/yard.mp4") == "/abs/yard.mp4"
    assert uri("0") == "0"
    assert uri(1) == 1
    assert uri("rtsp://cam/1") == "rtsp://cam/1"


def test_camera_is_registered_and_built_from_config() -> None:
    assert SOURCES.get("camera") is CameraSource
    source = CameraSource.from_config(CameraConfig(type="camera", uri="clip.mp4", fps=5))
    assert isinstance(source, CameraSource)
    assert source.status().state == "stopped"
    with pytest.raises(TypeError, match="expected CameraConfig"):
        CameraSource.from_config(PluginConfig(type="camera"))


@pytest.mark.parametrize(
    "image",
    [
        np.full((4, 6), 200, dtype=np.uint8),
        np.full((4, 6, 1), 200, dtype=np.uint8),
        np.full((4, 6, 4), 200, dtype=np.uint8),
        np.full((4, 6, 3), 200 * 257, dtype=np.uint16),
    ],
    ids=["gray", "gray-1ch", "bgra", "16-bit"],
)
def test_to_bgr_gives_hxwx3_uint8(image: NDArray[Any]) -> None:
    out = to_bgr(image)
    assert out.shape == (4, 6, 3) and out.dtype == np.uint8
    assert np.all(out == 200)


def test_to_bgr_rejects_float_images() -> None:
    with pytest.raises(SourceError, match="unsupported pixel type float32"):
        to_bgr(np.zeros((4, 6, 3), dtype=np.float32))
