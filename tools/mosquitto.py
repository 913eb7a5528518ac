"""A throwaway Mosquitto on a free loopback port, as a child process (demo, tests, benchmarks)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

HOST = "127.0.0.1"
_FALLBACK_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


class BrokerError(RuntimeError):
    """The broker binary is missing, or the broker didn't start / stop."""


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def find_tool(name: str) -> str:
    """Path of a mosquitto tool (mosquitto, mosquitto_sub, mosquitto_passwd...), or BrokerError."""
    found = shutil.which(name)
    if found is None:
        for base in (os.path.dirname(p) for p in _FALLBACK_PATHS):
            candidate = os.path.join(base, name)
            if os.access(candidate, os.X_OK):
                return candidate
        raise BrokerError(
            f"{name!r} not found on PATH or in /usr/sbin: the integration tests need a real "
            "Mosquitto broker and its clients (Debian/Ubuntu: apt-get install mosquitto "
            "mosquitto-clients)"
        )
    return found


def write_password_file(path: Path, users: dict[str, str]) -> Path:
    """A Mosquitto password file with hashed passwords (made by ``mosquitto_passwd -b``)."""
    tool = find_tool("mosquitto_passwd")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    for user, password in users.items():
        subprocess.run([tool, "-b", str(path), user, password], check=True, capture_output=True)
    return path


@dataclass(frozen=True, slots=True)
class BrokerOptions:
    """How a ``MosquittoBroker`` is configured beyond its port (defaults: anonymous, no TLS).

    ``password_file`` turns off anonymous access; ``certfile``/``keyfile`` make the listener TLS
    (``cafile`` plus ``require_certificate`` for client certificates); ``persistence`` saves the
    database after every change so sessions and queued messages survive ``kill()``.
    """

    password_file: Path | None = None
    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    require_certificate: bool = False
    persistence: bool = False
    extra_config: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("TLS needs both certfile and keyfile")
        if self.require_certificate and self.cafile is None:
            raise ValueError("require_certificate needs a cafile to check client certificates")

    @property
    def tls(self) -> bool:
        return self.certfile is not None


class MosquittoBroker:
    """Writes a minimal config into ``workdir`` and runs ``mosquitto -c`` on one fixed port.

    ``restart()`` reuses the same port, so clients can reconnect to the same address.
    """

    def __init__(
        self, workdir: Path, options: BrokerOptions | None = None, *, port: int | None = None
    ) -> None:
        self.workdir = workdir
        self.options = options or BrokerOptions()
        self.host = HOST
        self.port = port if port is not None else free_port()
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def config_text(self) -> str:
        opts = self.options
        lines = [f"listener {self.port} {self.host}"]
        anonymous = opts.password_file is None and not opts.tls
        lines.append(f"allow_anonymous {'true' if anonymous else 'false'}")
        if opts.password_file is not None:
            lines.append(f"password_file {opts.password_file}")
        if opts.tls:
            lines += [f"certfile {opts.certfile}", f"keyfile {opts.keyfile}"]
            if opts.cafile is not None:
                lines.append(f"cafile {opts.cafile}")
            lines.append("tls_version tlsv1.2")
            if opts.require_certificate:
                lines += ["require_certificate true", "use_identity_as_username true"]
        if opts.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.workdir}/",
                "autosave_interval 1",
                "autosave_on_changes true",
            ]
        else:
            lines.append("persistence false")
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise mosquitto drops to a user that can't write here
        lines += ["log_dest stderr", "log_type all", "connection_messages true"]
        lines += list(opts.extra_config)
        return "\n".join(lines) + "\n"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, timeout_s: float = 5.0) -> None:
        """Start the broker and return once its port accepts TCP connections."""
        if self.running:
            raise BrokerError(f"mosquitto on port {self.port} is already running")
        binary = find_tool("mosquitto")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            code = self._proc.poll()
            if code is not None:
                raise BrokerError(
                    f"mosquitto exited with code {code} during start on port {self.port}; "
                    f"log:\n{self._log_tail()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise BrokerError(
                        f"mosquitto didn't accept connections on {self.host}:{self.port} within "
                        f"{timeout_s} s; log:\n{self._log_tail()}"
                    ) from None
                time.sleep(0.02)

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM and wait (a clean shutdown; the broker saves its database). Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL: the broker dies without closing connections cleanly or saving anything."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        self._proc = None

    def freeze(self) -> None:
        """SIGSTOP: the broker stays connected but answers nothing (acks stay pending)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after ``freeze``."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)

    def restart(self, timeout_s: float = 5.0) -> None:
        """Stop (if running) and start again on the same port."""
        self.stop()
        self.start(timeout_s)

    def _log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
