"""A real network camera for fault injection: an MJPEG-over-HTTP stream (multipart/x-mixed-replace,
what most IP cameras serve), read by OpenCV's FFmpeg backend like any camera URL.

The test can take it off the network (``stop``: the listening socket closes and every stream
ends), bring it back on the same port (``start``), change what it films (``colour``), or make
the streams already open hang without closing (``stall_open_streams``: a camera whose TCP
connection stays up but sends nothing, which only a reconnect cures).
"""

from __future__ import annotations

import itertools
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cv2
import numpy as np

BGR = {"red": (0, 0, 255), "green": (0, 255, 0), "blue": (255, 0, 0)}


class MjpegCamera:
    def __init__(self, colour: str = "blue", fps: float = 15.0) -> None:
        self.colour = colour
        self.period_s = 1.0 / fps
        self.port = 0
        self.streams_served = 0
        self._ids = itertools.count()
        self._stall_below = 0  # streams with a smaller id send nothing more
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cam.mjpg"

    def start(self) -> MjpegCamera:
        """Serve on the port of the previous start (a free one the first time)."""
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                del format, args

            def do_GET(self) -> None:
                camera.stream(self)

        self._closing = threading.Event()
        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="mjpeg-camera", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Off the network: no new connections, and every open stream ends."""
        self._closing.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(2)

    def stall_open_streams(self) -> None:
        self._stall_below = next(self._ids)

    def stream(self, handler: BaseHTTPRequestHandler) -> None:
        stream_id = next(self._ids)
        closing = self._closing
        self.streams_served += 1
        handler.send_response(200)
        handler.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        handler.end_headers()
        next_due = time.monotonic()
        while not closing.is_set():
            if stream_id < self._stall_below:
                closing.wait(0.05)
                continue
            image = np.zeros((120, 160, 3), np.uint8)
            image[:] = BGR[self.colour]
            ok, jpeg = cv2.imencode(".jpg", image)
            assert ok
            data = jpeg.tobytes()
            head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
            try:
                handler.wfile.write(head.encode() + data + b"\r\n")
                handler.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return  # the client hung up
            next_due += self.period_s
            closing.wait(max(0.0, next_due - time.monotonic()))
