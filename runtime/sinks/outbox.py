"""Durable alert outbox: an alert is in SQLite before it goes to the broker and leaves on PUBACK.

``Outbox.put`` (pipeline threads) only queues the encoded alert in memory and wakes the
dispatcher thread, which owns the ``OutboxStore``. Each dispatcher round:

1. writes the queued alerts and deletes the acknowledged ones in **one transaction** (one fsync
   with ``fsync: full``: group commit, so the cost per alert falls as the rate rises);
2. enforces the bounds: at most ``max_bytes`` (the lowest-priority, oldest alerts go first,
   ``dropped.full``) and ``max_age_s`` (``dropped.expired``);
3. while the link is connected, hands the next alerts in seq order to the link (QoS 1), at most
   ``max_inflight`` unacknowledged at a time.

Nothing is handed to paho while disconnected. After a reconnect the alerts still in flight are
re-sent by paho (DUP) and acknowledged first; only then does the backlog go out, so alerts stay
in order per pipeline. Alerts that waited for a connection (written while the link was down, or
left by an earlier run) go out with ``"replayed": true``; those paho re-sends itself after a
reconnect (with DUP) keep the ``"replayed": false`` they were first sent with. Subscribers
deduplicate by ``alert_id`` (an alert whose PUBACK was lost is sent again after a restart).
A row larger than the broker's MQTT 5 Maximum Packet Size is dropped (``too_large``), not sent:
the broker would drop the connection, and paho would send it again first on every reconnect.

What can be lost: alerts queued in memory and not yet written when the process dies (one
dispatcher round, typically well under 10 ms), and those dropped by the bounds, counted by reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pydantic import Field

from runtime.config.base import ConfigPath, StrictModel
from runtime.errors import ConfigError, SinkError
from runtime.messages import Alert
from runtime.mqtt_link import MqttLink
from runtime.ratelimit import RateLimitedLog
from runtime.sinks._outbox_store import PRIORITY, DroppedAlert, FsyncPolicy, NewAlert, OutboxStore

logger = logging.getLogger(__name__)

_SWEEP_INTERVAL_S = 1.0
_IDLE_WAIT_S = 1.0
_POLL_WAIT_S = 0.05  # while alerts wait for a connection
_STOP_POLL_S = 0.02
_RETRY_S = 0.5
_ACK_BATCH = 512  # acknowledged alerts that wake the dispatcher on their own
_MAX_META = 100_000
_MAX_FRESH = 10_000
_CLOCK_STEP_NS = 5_000_000_000
_PUBLISH_OVERHEAD = 16  # fixed header, topic length, packet id, property length  # about max_pending: rows that were in memory anyway


class OutboxConfig(StrictModel):
    """The ``outbox:`` of an mqtt sink. Relative paths resolve against the config file."""

    enabled: bool = True
    path: ConfigPath = Field(
        "edgewatch-outbox-{device_id}.sqlite",
        validate_default=True,
        description="SQLite file (WAL), one per device process; {device_id} is replaced by the "
        "device id. E.g. ${STATE_DIRECTORY:-/var/lib/edgewatch}/outbox.sqlite",
    )
    fsync: FsyncPolicy = Field("full", description="full | normal | off (see docs)")
    max_bytes: int = Field(64 * 2**20, ge=2**16, description="payload bytes kept at most")
    max_age_s: float = Field(7 * 86400.0, gt=0, description="alerts older than this expire")
    max_alert_bytes: int = Field(
        128 * 2**10, ge=1024, description="larger alerts are dropped (AWS IoT's limit: 128 KiB)"
    )
    max_inflight: int = Field(100, ge=1, le=10_000, description="unacknowledged at a time")
    max_pending: int = Field(10_000, ge=1, description="queued in memory, not yet written")


@dataclass(frozen=True, slots=True)
class AckedAlert:
    """An alert the broker acknowledged; ``alert`` is None for an earlier run's."""

    seq: int
    alert: Alert | None
    replayed: bool


AckObserver = Callable[[AckedAlert], None]


@dataclass(frozen=True, slots=True)
class _Queued:
    new: NewAlert
    alert: Alert


class Outbox:
    """Bridges alerts -> ``OutboxStore`` -> ``MqttLink``; see the module docstring."""

    def __init__(
        self,
        store: OutboxStore,
        link: MqttLink,
        *,
        qos: int = 1,
        retain: bool = False,
        max_bytes: int = 64 * 2**20,
        max_age_s: float = 7 * 86400.0,
        max_alert_bytes: int = 128 * 2**10,
        max_inflight: int = 100,
        max_pending: int = 10_000,
        on_ack: AckObserver | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        mono_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._store = store
        self._link = link
        self._qos = qos
        self._retain = retain
        self._max_bytes = max_bytes
        self._max_age_ns = int(max_age_s * 1e9)
        self._max_alert_bytes = max_alert_bytes
        self._max_inflight = max_inflight
        self._max_pending = max_pending
        self._on_ack = on_ack
        self._clock_ns = clock_ns
        self._mono_ns = mono_ns
        self._clock_offset_ns = clock_ns() - mono_ns()
        self._log = RateLimitedLog(logger, interval_s=60.0)

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queued: list[_Queued] = []
        self._acked: list[int] = []
        self._rejected: list[int] = []
        self._inflight: set[int] = set()
        self._meta: dict[int, Alert] = {}  # this run's alerts by seq, for the ack observer
        self._dropped: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._written = 0
        self._acks = 0
        self._replayed = 0
        self._stopping = False
        self._stop_deadline = 0.0
        self._thread: threading.Thread | None = None

        # dispatcher-thread state
        self._cursor = 0  # highest seq handed to the link
        self._fresh: deque[tuple[int, str, bytes]] = deque()  # written this round, not sent
        self._replay_floor = store.reopened_seq  # seqs up to here waited for a connection
        self._seen_connects = -1
        self._draining = False  # after a reconnect: wait for the in-flight alerts' acks
        self._retry_at = 0.0
        self._sweep_at = 0.0
        self._oldest_ns = store.oldest_created_ns()

    @classmethod
    def open(
        cls,
        config: OutboxConfig,
        link: MqttLink,
        *,
        qos: int = 1,
        retain: bool = False,
        on_ack: AckObserver | None = None,
    ) -> Outbox:
        path = Path(config.path)
        if not path.is_absolute():  # a config file resolves it; code must say where
            raise ConfigError(
                f"outbox.path {config.path!r} is relative and not from a config file; give an "
                "absolute path (devices: ${STATE_DIRECTORY:-/var/lib/edgewatch}/outbox.sqlite)"
            )
        store = OutboxStore(path, fsync=config.fsync)
        if store.depth:
            logger.info(
                "alert outbox %s holds %d alert(s) from an earlier run; they will be replayed",
                config.path,
                store.depth,
            )
        return cls(
            store,
            link,
            qos=qos,
            retain=retain,
            max_bytes=config.max_bytes,
            max_age_s=config.max_age_s,
            max_alert_bytes=config.max_alert_bytes,
            max_inflight=config.max_inflight,
            max_pending=config.max_pending,
            on_ack=on_ack,
        )

    # ------------------------------------------------------------ producers

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("an Outbox can be started only once")
            self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)
        self._thread.start()

    def put(self, alert: Alert) -> None:
        """Queue ``alert`` for the outbox (never blocks on disk or network)."""
        payload = alert.to_json()
        if len(payload) > self._max_alert_bytes:
            self._count_drop("too_large", alert.pipeline, alert.alert_id)
            return
        new = NewAlert(
            alert_id=alert.alert_id,
            pipeline=alert.pipeline,
            topic=self._link.alert_topic(alert.pipeline),
            priority=PRIORITY.get(alert.severity, 1),
            created_ns=self._clock_ns(),
            payload=payload,
        )
        with self._wake:
            if self._stopping:
                raise SinkError(f"alert {alert.alert_id} not queued: the outbox is stopped")
            if len(self._queued) < self._max_pending:
                self._queued.append(_Queued(new, alert))
                self._wake.notify()
                return
        self._count_drop("queue_full", alert.pipeline, alert.alert_id)

    def stop(self, timeout_s: float) -> None:
        """Write what is queued, wait up to ``timeout_s`` for the alerts in flight (and the
        backlog, while connected), close the file. What is left stays for the next start."""
        with self._wake:
            if self._stopping:
                return
            self._stopping = True
            self._stop_deadline = time.monotonic() + timeout_s
            self._wake.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s + 10.0)
            if thread.is_alive():
                logger.error("alert outbox %s: dispatcher did not stop", self._store.path)
                return
        else:
            self._write_round(flush=True)
        left = self._store.depth
        self._store.close()
        if left:
            logger.warning(
                "alert outbox %s keeps %d alert(s) not acknowledged yet; they are sent after "
                "the next start",
                self._store.path,
                left,
            )

    # ------------------------------------------------------------- status

    def status(self) -> dict[str, object]:
        with self._lock:
            doc: dict[str, object] = {
                "path": str(self._store.path),
                "depth": self._store.depth,
                "bytes": self._store.bytes,
                "oldest_age_s": None,
                "queued": len(self._queued),
                "inflight": len(self._inflight),
                "written": self._written,
                "acked": self._acks,
                "replayed": self._replayed,
                "dropped": dict(self._dropped),
                "errors": dict(self._errors),
            }
            oldest = self._oldest_ns
        if oldest is not None:
            doc["oldest_age_s"] = round(max(0.0, (self._clock_ns() - oldest) / 1e9), 3)
        return doc

    # ----------------------------------------------------- paho's thread

    def _acknowledged(self, seq: int) -> None:
        with self._wake:
            self._inflight.discard(seq)
            self._acked.append(seq)
            self._acks += 1
            meta = self._meta.pop(seq, None)
            # wake the dispatcher once per half window (it refills it in one round), not per ack
            refill = len(self._inflight) == self._max_inflight // 2
            if refill or not self._inflight or len(self._acked) >= _ACK_BATCH:
                self._wake.notify()
        if self._on_ack is not None:
            self._on_ack(AckedAlert(seq, meta, replayed=seq <= self._replay_floor))

    def _refused(self, seq: int, reason: str) -> None:
        with self._wake:
            self._inflight.discard(seq)
            self._rejected.append(seq)
            meta = self._meta.pop(seq, None)
            self._wake.notify()
        alert_id = f"seq {seq}" if meta is None else meta.alert_id
        pipeline = "?" if meta is None else meta.pipeline
        self._count_drop("rejected", pipeline, f"{alert_id}: the broker refused it: {reason}")

    # --------------------------------------------------------- dispatcher

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(self._has_work, self._wait_s())
                stopping = self._stopping
            # a failing write must not stop the alerts already on disk from going out
            failed = not self._guarded(self._write_round)
            failed = not self._guarded(self._send_round) or failed
            if stopping and self._finished():
                break
            if failed:
                time.sleep(_RETRY_S)
        # the acknowledgements that came in during the last round
        self._guarded(lambda: self._write_round(flush=True))
        with self._lock:
            lost = len(self._queued)
        if lost:
            logger.error(
                "alert outbox %s: %d alert(s) could not be written before the stop and are lost",
                self._store.path,
                lost,
            )
            with self._lock:
                self._dropped["unwritten"] += lost

    def _guarded(self, step: Callable[[], None]) -> bool:
        """Run one step of a round; errors are counted and logged, never fatal."""
        try:
            step()
        except SinkError as e:
            self._log.log(logging.ERROR, "store", "%s; retrying in %.1f s", e, _RETRY_S)
            self._count_error("store")
            return False
        except Exception:  # noqa: BLE001 - the dispatcher must survive; counted and logged
            self._log.log(logging.ERROR, "bug", "alert outbox round failed", exc_info=True)
            self._count_error("internal")
            return False
        return True

    def _has_work(self) -> bool:
        """Caller holds the lock. Acknowledgements alone wake the dispatcher only in batches:
        their deletes ride along with the next write (a delete lost in a crash only means a
        duplicate after the restart)."""
        if self._queued or self._rejected or len(self._acked) >= _ACK_BATCH:
            return True
        return (
            self._cursor < self._store.last_seq
            and self._link.connected
            and not (self._draining and self._inflight)
            and len(self._inflight) < self._max_inflight
            and time.monotonic() >= self._retry_at
        )

    def _wait_s(self) -> float:
        if self._stopping:
            return _STOP_POLL_S
        if self._cursor < self._store.last_seq or self._draining:
            return _POLL_WAIT_S
        return _IDLE_WAIT_S

    def _finished(self) -> bool:
        with self._lock:
            queued = bool(self._queued)
            inflight = bool(self._inflight)
        if time.monotonic() >= self._stop_deadline:
            return True
        if queued:
            return False
        if not self._link.connected:
            return True
        return not inflight and self._cursor >= self._store.last_seq

    def _write_round(self, *, flush: bool = False) -> None:
        """Write the queued alerts; deletes of acknowledged ones ride along, or go on their own
        once ``_ACK_BATCH`` piled up, at the sweep, or when ``flush``ing."""
        sweep = time.monotonic() >= self._sweep_at
        with self._lock:
            queued, self._queued = self._queued, []
            if queued or flush or sweep or self._rejected or len(self._acked) >= _ACK_BATCH:
                done = self._acked + self._rejected
                self._acked, self._rejected = [], []
            else:
                done = []
        if not queued and not done and not sweep:
            return
        try:
            seqs = self._store.write([q.new for q in queued], done)
        except SinkError:
            with self._lock:  # put everything back, in order, for the next round
                self._queued[:0] = queued
                self._acked[:0] = done
            raise
        if len(self._fresh) + len(seqs) <= _MAX_FRESH:
            self._fresh.extend(
                (seq, q.new.topic, q.new.payload) for seq, q in zip(seqs, queued, strict=True)
            )
        else:
            self._fresh.clear()  # a backlog: read it back from the file in order
        with self._lock:
            self._written += len(seqs)
            if len(self._meta) < _MAX_META:
                for seq, q in zip(seqs, queued, strict=True):
                    self._meta[seq] = q.alert
            # in flight, or acknowledged and not deleted yet: never a drop
            keep = self._inflight | set(self._acked)
        dropped = self._store.shrink_to(self._max_bytes, keep)
        expired: list[DroppedAlert] = []
        if sweep:
            self._sweep_at = time.monotonic() + _SWEEP_INTERVAL_S
            self._follow_clock_steps()
            expired = self._store.expire(self._clock_ns() - self._max_age_ns, keep)
        if dropped or expired:
            self._fresh.clear()
            with self._lock:
                for d in dropped + expired:
                    self._meta.pop(d.seq, None)
        for d in dropped:
            self._count_drop("full", d.pipeline, d.alert_id, d)
        for d in expired:
            self._count_drop("expired", d.pipeline, d.alert_id, d)
        if sweep:
            oldest = self._store.oldest_created_ns()
            with self._lock:
                self._oldest_ns = oldest

    def _follow_clock_steps(self) -> None:
        """Ages are wall-clock (they must survive a restart), so when the wall clock steps (NTP
        on a device without a real-time clock, coming online), the stored creation times move
        by the same step: a step must not expire the backlog it came online to deliver."""
        offset = self._clock_ns() - self._mono_ns()
        step = offset - self._clock_offset_ns
        if abs(step) < _CLOCK_STEP_NS:
            return
        self._store.shift_created(step)
        self._clock_offset_ns = offset
        logger.info(
            "alert outbox: the wall clock stepped by %+.1f s; stored alert ages follow it",
            step / 1e9,
        )

    def _send_round(self) -> None:
        if not self._link.connected:
            with self._lock:  # everything written so far waits for a connection: a replay
                self._replay_floor = max(self._replay_floor, self._store.last_seq)
            return
        connects = self._link.connects
        with self._lock:
            if connects != self._seen_connects:
                # (re)connected: paho re-sends the alerts in flight; they go before the backlog
                self._seen_connects = connects
                self._draining = bool(self._inflight)
            if self._draining and not self._inflight:
                self._draining = False
            if self._draining or time.monotonic() < self._retry_at:
                return
            room = self._max_inflight - len(self._inflight)
        if room <= 0 or self._cursor >= self._store.last_seq:
            return
        rows = self._next_rows(room)
        if not rows:  # the rows after the cursor were all dropped (bounds)
            self._cursor = self._store.last_seq
            return
        limit = self._link.broker_max_packet_bytes
        for seq, topic, stored in rows:
            if not self._link.connected or self._link.connects != connects:
                return  # a reconnect: paho's re-sends go first (next round)
            replayed = seq <= self._replay_floor
            payload = stored[:-1] + (b',"replayed":true}' if replayed else b',"replayed":false}')
            if limit is not None and len(payload) + len(topic) + _PUBLISH_OVERHEAD > limit:
                with self._lock:
                    self._rejected.append(seq)
                    alert = self._meta.pop(seq, None)
                self._cursor = seq
                pipeline = "?" if alert is None else alert.pipeline
                self._count_drop("too_large", pipeline, f"larger than the broker's {limit} bytes")
                continue
            with self._lock:
                self._inflight.add(seq)
            try:
                self._link.publish(
                    topic,
                    payload,
                    qos=self._qos,
                    retain=self._retain,
                    on_ack=partial(self._acknowledged, seq),
                    on_reject=partial(self._refused, seq),
                )
            except SinkError as e:
                with self._lock:
                    self._inflight.discard(seq)
                    self._retry_at = time.monotonic() + _RETRY_S
                self._log.log(logging.WARNING, "publish", "outbox send paused: %s", e)
                return
            self._cursor = seq
            if replayed:
                with self._lock:
                    self._replayed += 1

    def _next_rows(self, limit: int) -> list[tuple[int, str, bytes]]:
        """The next rows after the cursor: from ``_fresh`` (just written, no need to read them
        back) when it continues the cursor, else from the file."""
        fresh = self._fresh
        while fresh and fresh[0][0] <= self._cursor:
            fresh.popleft()
        if fresh and fresh[0][0] == self._cursor + 1:
            return [fresh.popleft() for _ in range(min(limit, len(fresh)))]
        fresh.clear()
        return [(r.seq, r.topic, r.payload) for r in self._store.after(self._cursor, limit)]

    # ------------------------------------------------------------ counts

    def _count_error(self, kind: str) -> None:
        with self._lock:
            self._errors[kind] += 1

    def _count_drop(
        self, reason: str, pipeline: str, detail: str, dropped: DroppedAlert | None = None
    ) -> None:
        with self._lock:
            self._dropped[reason] += 1
        priority = "" if dropped is None else f" (priority {dropped.priority})"
        self._log.log(
            logging.WARNING,
            f"drop:{reason}",
            "alert outbox: dropped an alert of pipeline %s (%s): %s%s",
            pipeline,
            reason,
            detail,
            priority,
        )


__all__ = ["AckObserver", "AckedAlert", "Outbox", "OutboxConfig"]
