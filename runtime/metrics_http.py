"""A small threaded HTTP server: ``/metrics`` (Prometheus text) and ``/healthz`` (JSON).

``/healthz`` answers 200 when every enabled pipeline runs and none is stuck, 503 otherwise, with
the reasons (see ``runtime.healthcheck``). Being offline from the MQTT broker is reported but is
not unhealthy: the outbox keeps alerts through an outage.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client.exposition import choose_encoder
from pydantic import Field

from runtime.config.base import StrictModel
from runtime.errors import ConfigError
from runtime.metrics import Metrics

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 10.0
JOIN_TIMEOUT_S = 5.0


class MetricsConfig(StrictModel):
    enabled: bool = Field(False, description="serve /metrics and /healthz over HTTP")
    host: str = Field(
        "127.0.0.1", description="address to listen on; 0.0.0.0 exposes it to the network"
    )
    port: int = Field(9820, ge=0, le=65535, description="TCP port; 0 picks a free one")


class MetricsServer:
    """Serves one App's ``Metrics``; binds in the constructor so ``port`` is known at once."""

    def __init__(self, metrics: Metrics, host: str = "127.0.0.1", port: int = 9820) -> None:
        self.metrics = metrics
        try:
            self._server = ThreadingHTTPServer((host, port), _handler(metrics))
        except OSError as exc:
            raise ConfigError(f"metrics: cannot listen on {host}:{port}: {exc}") from exc
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("a MetricsServer can be started only once")
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"metrics-http-{self.port}",
            daemon=True,
        )
        self._thread.start()
        logger.info("metrics on http://%s:%d/metrics and /healthz", self.host, self.port)

    def stop(self) -> None:
        """Stop serving and close the socket; idempotent, also when never started."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._server.shutdown()
            thread.join(JOIN_TIMEOUT_S)
        self._server.server_close()


def _handler(metrics: Metrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT_S

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            try:
                code, content_type, body = self._respond(path)
            except Exception as exc:  # a failed scrape must not end the server
                logger.exception("metrics: %s failed", path)
                code, content_type = 500, "text/plain"
                body = f"{type(exc).__name__}: {exc}\n".encode()
            try:
                self._reply(code, content_type, body)
            except OSError as exc:
                logger.debug("metrics: %s: client went away: %s", path, exc)

        def _respond(self, path: str) -> tuple[int, str, bytes]:
            if path == "/metrics":
                encode, content_type = choose_encoder(self.headers.get("Accept", ""))
                return 200, content_type, encode(metrics.registry)
            if path == "/healthz":
                health = metrics.health()
                body = json.dumps(health.as_dict()).encode()
                return 200 if health.healthy else 503, "application/json", body
            return 404, "text/plain", b"not found: try /metrics or /healthz\n"

        def _reply(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            logger.debug("metrics: %s " + format, self.client_address[0], *args)

    return Handler
