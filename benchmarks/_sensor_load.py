"""The sensor benchmark's load generator: a pump fleet published to Mosquitto at a paced rate.

Runs in its own process (``publisher_main``) so its CPU time is not the consumer's. It speaks
MQTT 3.1.1 over a plain socket instead of going through paho: a paced publisher has to outrun
every consumer it measures while sharing their cores, and pre-encoded PUBLISH packets written in
one ``sendall`` per pacing slice cost a few microseconds per message where paho's ``publish``
(locks, message objects, a callback per PUBACK) costs several times that. Messages are QoS 1 by
default: the broker acknowledges every one (the run waits for all PUBACKs), so "sent" means "the
broker has it" and nothing can vanish between the publisher and the broker.

Each message is one reading ``{"ts": <epoch s>, "<field>": <value>, ...}`` on
``<topic_root>/<key>/data``, the keys taking turns. ``ts`` is the wall clock when the packet was
built, just before it was written (at most one pacing slice earlier). Values come from
:class:`tools.sensor_data.PumpSimulator` (the demo pump model's training distribution), so normal
keys never alert; on the ``anomaly_keys`` every ``cycle`` readings start with ``burst`` readings of
a loud fault, so a threshold rule raises and then clears on each cycle.
"""

from __future__ import annotations

import math
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import numpy as np

from tools.sensor_data import DEFAULT_RATE_HZ, PumpSimulator

SLICE_S = 0.001
"""Pacing slice: every slice, the messages due by now are built and written in one go."""
MAX_BATCH = 2000
"""At most this many messages per write, so a publisher that fell behind catches up gradually."""
ACK_TIMEOUT_S = 10.0
BURST_VIBRATION_GAIN = 8.0
BURST_CURRENT_RISE_A = 5.0


class LoadError(RuntimeError):
    """The broker refused the publisher or the connection broke."""


@dataclass(frozen=True, slots=True)
class Fleet:
    """Who publishes what: ``keys`` take turns; ``anomaly_keys`` (a subset) cycle through faults."""

    keys: tuple[str, ...]
    fields: tuple[str, ...]
    anomaly_keys: tuple[str, ...] = ()
    cycle: int = 200
    burst: int = 20
    topic_root: str = "bench"
    seed: int = 7

    def topic(self, key: str) -> str:
        return f"{self.topic_root}/{key}/data"

    @property
    def subscription(self) -> str:
        return f"{self.topic_root}/+/data"


def fleet(n_keys: int, fields: Sequence[str], n_anomalous: int, topic_root: str = "bench") -> Fleet:
    """``n_keys`` pumps ``pump-001``...; every ``n_keys // n_anomalous``-th one is anomalous."""
    keys = tuple(f"pump-{i:03d}" for i in range(1, n_keys + 1))
    step = max(1, n_keys // max(1, n_anomalous))
    anomalous = keys[::step][:n_anomalous] if n_anomalous > 0 else ()
    return Fleet(keys, tuple(fields), anomalous, topic_root=topic_root)


@dataclass(frozen=True, slots=True)
class RunRequest:
    rate: float  # messages per second, all keys together
    seconds: float
    record_keys: tuple[str, ...] = ()  # remember the ts of every reading of these keys


@dataclass(slots=True)
class RunReport:
    requested_rate: float
    sent: int
    acked: int
    first_send_s: float  # wall clock (time.time) of the first and last message
    last_send_s: float
    acked_by_s: float  # wall clock when the last PUBACK arrived (nan if some never did)
    behind_max_s: float  # how far the publisher fell behind its schedule at worst
    recorded: dict[str, list[float]] = field(default_factory=dict)  # key -> ts sent

    @property
    def achieved_rate(self) -> float:
        span = self.last_send_s - self.first_send_s
        return (self.sent - 1) / span if span > 0 and self.sent > 1 else math.nan


# --------------------------------------------------------------------------- MQTT 3.1.1 wire


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


class RawPublisher:
    """An MQTT 3.1.1 publisher on one socket; a reader thread counts PUBACKs."""

    def __init__(self, host: str, port: int, client_id: str, qos: int = 1) -> None:
        if qos not in (0, 1):
            raise ValueError(f"qos must be 0 or 1, got {qos}")
        self.qos = qos
        self.acked = 0
        self.last_ack_s = math.nan
        self._pid = 0
        self._error: str | None = None
        self._sock = socket.create_connection((host, port), timeout=5.0)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = _utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 0) + _utf8(client_id)
        self._sock.sendall(b"\x10" + _varint(len(body)) + body)
        connack = self._recv_exact(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise LoadError(f"broker refused the publisher: CONNACK {connack.hex()}")
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read_acks, name="bench-puback", daemon=True)
        self._reader.start()

    def _recv_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self._sock.recv(n - len(data))
            if not chunk:
                raise LoadError("broker closed the connection during CONNECT")
            data += chunk
        return data

    def _read_acks(self) -> None:
        buf = b""
        try:
            while True:
                chunk = self._sock.recv(65536)
                if not chunk:
                    return
                buf += chunk
                pos, acks = 0, 0
                while len(buf) - pos >= 2:
                    kind, length, header = buf[pos], 0, 1
                    shift = 0
                    while True:  # remaining length (varint)
                        if pos + header >= len(buf):
                            length = -1
                            break
                        byte = buf[pos + header]
                        length |= (byte & 0x7F) << shift
                        shift += 7
                        header += 1
                        if not byte & 0x80:
                            break
                    if length < 0 or len(buf) - pos < header + length:
                        break
                    acks += (kind & 0xF0) == 0x40
                    pos += header + length
                buf = buf[pos:]
                if acks:
                    self.acked += acks
                    self.last_ack_s = time.time()
        except OSError as exc:
            self._error = f"{type(exc).__name__}: {exc}"

    def packet(self, topic_header: bytes, payload: bytes) -> bytes:
        if self.qos == 0:
            return b"\x30" + _varint(len(topic_header) + len(payload)) + topic_header + payload
        self._pid = self._pid % 0xFFFF + 1
        body_len = len(topic_header) + 2 + len(payload)
        return b"\x32" + _varint(body_len) + topic_header + self._pid.to_bytes(2, "big") + payload

    def send(self, data: bytes) -> None:
        if self._error is not None:
            raise LoadError(f"publisher connection failed: {self._error}")
        self._sock.sendall(data)

    def close(self) -> None:
        try:
            self._sock.sendall(b"\xe0\x00")  # DISCONNECT
        except OSError:
            pass  # the broker may be gone already; closing is all that is left
        finally:
            self._sock.close()
        self._reader.join(2.0)


# --------------------------------------------------------------------------- readings


class Readings:
    """Per key, the JSON tail (``,"field":value,...}``) of the next readings, generated ahead."""

    def __init__(self, fleet: Fleet, rate_hz: float = DEFAULT_RATE_HZ) -> None:
        self.fleet = fleet
        self.rate_hz = rate_hz
        self.sim = PumpSimulator(fleet.keys, rate_hz=rate_hz, seed=fleet.seed)
        self.next_index = dict.fromkeys(fleet.keys, 0)
        anomalous = set(fleet.anomaly_keys)
        self.phase = {
            key: (i * 37) % fleet.cycle if key in anomalous else -1
            for i, key in enumerate(fleet.keys)
        }
        template = ",".join(f'"{f}":%.6f' for f in fleet.fields)
        self._template = ("," + template + "}").encode()

    def generate(self, per_key: int) -> dict[str, list[bytes]]:
        """The next ``per_key`` tails of every key (continuing where the last call stopped)."""
        out: dict[str, list[bytes]] = {}
        for key in self.fleet.keys:
            first = self.next_index[key]
            _ts, values = self.sim.arrays(key, first / self.rate_hz, per_key / self.rate_hz)
            values = values[:per_key]
            if values.shape[0] < per_key:  # float rounding at the edge: pad with the last row
                pad = np.repeat(values[-1:], per_key - values.shape[0], axis=0)
                values = np.concatenate([values, pad])
            phase = self.phase[key]
            if phase >= 0:
                pos = (np.arange(first, first + per_key) + phase) % self.fleet.cycle
                burst = pos < self.fleet.burst
                values = values.copy()
                values[burst, 0] *= BURST_VIBRATION_GAIN
                if values.shape[1] > 1:
                    values[burst, 1] += BURST_CURRENT_RISE_A
            self.next_index[key] = first + per_key
            template = self._template
            out[key] = [template % tuple(row) for row in values.tolist()]
        return out


# --------------------------------------------------------------------------- the process


def run_paced(
    publisher: RawPublisher, fleet: Fleet, readings: Readings, request: RunRequest
) -> RunReport:
    keys = fleet.keys
    n_keys = len(keys)
    total = max(1, round(request.rate * request.seconds))
    per_key = -(-total // n_keys)
    tails = readings.generate(per_key)
    headers = [_utf8(fleet.topic(k)) for k in keys]
    key_tails = [tails[k] for k in keys]
    recorded: dict[str, list[float]] = {k: [] for k in request.record_keys}
    record_slots = {i: recorded[k] for i, k in enumerate(keys) if k in recorded}
    packet = publisher.packet
    clock = time.time
    acked_before = publisher.acked
    sent = 0
    behind_max = 0.0
    first_send = math.nan
    t0 = time.perf_counter()
    rate = request.rate
    while sent < total:
        elapsed = time.perf_counter() - t0
        due = min(total, int(elapsed * rate) + 1, sent + MAX_BATCH)
        if due <= sent:
            time.sleep(min(SLICE_S, (sent + 1) / rate - elapsed))
            continue
        behind_max = max(behind_max, elapsed - sent / rate)
        parts = []
        for i in range(sent, due):
            slot = i % n_keys
            ts = clock()
            parts.append(packet(headers[slot], b'{"ts":%.6f' % ts + key_tails[slot][i // n_keys]))
            if slot in record_slots:
                record_slots[slot].append(ts)
            if i == 0:
                first_send = ts
        publisher.send(b"".join(parts))
        sent = due
    last_send = clock()
    target = acked_before + (total if publisher.qos == 1 else 0)
    deadline = time.monotonic() + ACK_TIMEOUT_S
    while publisher.acked < target and time.monotonic() < deadline:
        time.sleep(0.002)
    acked = publisher.acked - acked_before if publisher.qos == 1 else total
    acked_by = publisher.last_ack_s if publisher.qos == 1 else last_send
    return RunReport(
        requested_rate=rate,
        sent=total,
        acked=acked,
        first_send_s=first_send,
        last_send_s=last_send,
        acked_by_s=acked_by if acked >= total else math.nan,
        behind_max_s=behind_max,
        recorded=recorded,
    )


def publisher_main(conn: Connection, host: str, port: int, fleet: Fleet, qos: int) -> None:
    """Process entry: connect, then serve ``RunRequest``s from ``conn`` until ``None`` arrives.

    Replies ``("ready", None)`` once connected, then ``("report", RunReport)`` per request, or
    ``("error", message)`` and exits.
    """
    try:
        publisher = RawPublisher(host, port, f"bench-fleet-{time.monotonic_ns() % 10**6}", qos)
    except (OSError, LoadError) as exc:
        conn.send(("error", f"publisher: {exc}"))
        return
    readings = Readings(fleet)
    conn.send(("ready", None))
    try:
        while True:
            request = conn.recv()
            if request is None:
                return
            try:
                conn.send(("report", run_paced(publisher, fleet, readings, request)))
            except (OSError, LoadError) as exc:
                conn.send(("error", f"publisher: {exc}"))
                return
    finally:
        publisher.close()
