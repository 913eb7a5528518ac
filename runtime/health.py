"""Stage heartbeats, pipeline health, the supervisor that restarts a pipeline, and the watchdog
that finds stuck stages.

Heartbeats: each stage that can hang owns a :class:`StageClock`; ``begin()`` before the call that
may block and ``end(token)`` after it are a few attribute writes, no lock. The stages:

* ``capture``: a camera read or open, on the source's capture thread;
* ``prepare``: preprocessing one frame, on the pipeline's prepare thread;
* ``inference``: model, decoder, rules and delivery of one frame (sensor pipelines: windows,
  features, model calls and rules of one batch of readings, and the silence check), on the
  supervisor thread.

The watchdog looks at every clock each ``check_interval_s``. A stage busy for longer than its
timeout is *stuck*: one ERROR line names the pipeline, the stage, for how long and what is done,
the stage's ``stuck`` count goes up, and the stage is recovered:

* capture: the source leaves the blocked capture thread (a daemon; it exits once the backend call
  returns) and reconnects on a new one, with its own backoff. The pipeline itself is not stuck;
* prepare: the pipeline restarts (the supervisor leaves ``run``, waits out its backoff and runs it
  again, with a new prepare thread);
* inference: the run is cancelled where the backend can do that (onnxruntime's
  ``RunOptions.terminate``) and the pipeline restarts. Where it can't (LiteRT), or when the call
  has not returned ``cancel_grace_s`` after the cancel, the thread is abandoned: the pipeline goes
  on, after the backoff, on a new supervisor thread with a fresh session of its model; the old
  thread leaves (:class:`PipelineAbandoned`) once its call returns, if it ever does.

Each pipeline has its own supervisor thread and is checked on its own, so a stuck or crashing
pipeline never stops another.

``health`` in each pipeline's status (stable keys; the Prometheus exporter reads them):

``state``                "running" | "stuck" (a stage is past its timeout and being recovered) |
                         "restarting" (waiting out the restart backoff) | "failed" (the watchdog
                         could not recover it; ``last_stuck`` says why)
``stuck``                {stage: times the stage was found stuck}, since start
``restarts``             times the pipeline restarted: after a crash, a stuck stage or an
                         abandoned thread
``last_progress_age_s``  seconds since the inference stage last finished a frame or a batch of
                         readings (None before the first). It grows while a camera is down or the
                         sensors are silent; that is no fault of the pipeline, and ``state``
                         stays "running"
``busy_s``               {stage: seconds} for each stage busy right now
``last_stuck``           the last stuck report, e.g. "inference stuck for 31.2 s (timeout 30 s):
                         run cancelled, restarting the pipeline"; None if never stuck
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from pydantic import Field, model_validator

from runtime.config.base import StrictModel
from runtime.errors import EdgewatchError
from runtime.ratelimit import RateLimitedLog
from runtime.sources._backoff import Backoff

logger = logging.getLogger(__name__)

HealthState = Literal["running", "stuck", "restarting", "failed"]
SUPERVISOR_STAGE = "inference"
"""The stage that runs on the supervisor thread (in both pipeline kinds)."""
PREPARE_STAGE = "prepare"


class StageTimeouts(StrictModel):
    """Per-pipeline overrides of the device's ``watchdog`` timeouts; unset ones are the
    device's."""

    capture_timeout_s: float | None = Field(None, gt=0)
    prepare_timeout_s: float | None = Field(None, gt=0)
    inference_timeout_s: float | None = Field(None, gt=0)


class WatchdogConfig(StrictModel):
    enabled: bool = Field(True, description="watch every pipeline for stuck stages")
    check_interval_s: float = Field(0.5, gt=0, description="how often every stage is looked at")
    capture_timeout_s: float = Field(
        15.0,
        gt=0,
        description="a camera read or open that takes longer is stuck; above the camera's own "
        "default open/read timeouts (10/5 s), so the watchdog steps in only when the backend "
        "ignores them",
    )
    prepare_timeout_s: float = Field(10.0, gt=0, description="preprocessing one frame")
    inference_timeout_s: float = Field(
        30.0, gt=0, description="one frame or one batch of readings through model and rules"
    )
    cancel_grace_s: float = Field(
        2.0,
        gt=0,
        description="after cancelling a stuck inference, how long its thread gets to return "
        "before it is abandoned",
    )
    restart_initial_s: float = Field(1.0, gt=0, description="first restart delay")
    restart_max_s: float = Field(60.0, gt=0, description="restart delays grow up to this")

    @model_validator(mode="after")
    def _check_backoff(self) -> WatchdogConfig:
        if self.restart_max_s < self.restart_initial_s:
            raise ValueError(
                f"restart_max_s ({self.restart_max_s}) must be >= restart_initial_s "
                f"({self.restart_initial_s})"
            )
        return self

    def timeout_s(self, stage: str, override: StageTimeouts | None = None) -> float:
        """The timeout of ``stage`` (capture, prepare or inference), overridden if set."""
        key = f"{stage}_timeout_s"
        value = None if override is None else getattr(override, key)
        return float(getattr(self, key) if value is None else value)

    def backoff(self) -> Backoff:
        return Backoff(self.restart_initial_s, self.restart_max_s)


class PipelineStuck(EdgewatchError):
    """Raised by a pipeline's ``run`` when the watchdog asked for a restart."""


class PipelineAbandoned(BaseException):
    """Raised on a thread the watchdog abandoned, once its stuck call returns. A BaseException so
    the stages' ``except Exception`` handlers let it through: the thread must leave at once, as
    another one runs the pipeline now."""


class StageClock:
    """When the stage's current call began (None: idle) and on which thread. Written by the stage
    thread without a lock, read by the watchdog: a stale read delays a detection by one check."""

    __slots__ = ("busy_since_ns", "thread_ident")

    def __init__(self) -> None:
        self.busy_since_ns: int | None = None
        self.thread_ident: int | None = None

    def begin(self) -> int:
        """The stage starts a call; returns the token for ``end``."""
        now = time.monotonic_ns()
        self.thread_ident = threading.get_ident()
        self.busy_since_ns = now
        return now

    def end(self, token: int) -> int:
        """The call ``begin`` gave ``token`` for is over; returns the time. If another call began
        since (the watchdog gave this one up), the clock is left to that one."""
        if self.busy_since_ns == token:
            self.busy_since_ns = None
        return time.monotonic_ns()


class PipelineHealth:
    """One pipeline's stage clocks, what the watchdog found, and restart requests. The pipeline
    checks ``check_restart`` and ``check_abandoned`` in its loops (cheap attribute reads)."""

    def __init__(
        self, clocks: Mapping[str, StageClock], timeouts: StageTimeouts | None = None
    ) -> None:
        self.clocks = dict(clocks)
        self.timeouts = timeouts
        self.last_progress_ns: int | None = None
        self.restart_requested: str | None = None  # the stuck stage
        self._lock = threading.Lock()
        self._restarting = False
        self._restarts = 0
        self._stuck: dict[str, int] = {}
        self._stuck_now: set[str] = set()
        self._last_stuck: str | None = None
        self._failed = False
        self._abandoned: set[int] = set()

    # -- the pipeline's side

    def begin_run(self) -> None:
        """``run`` (re)starts: no restart pending, not waiting any more."""
        self.restart_requested = None
        self._restarting = False

    def check_restart(self) -> None:
        """Raise ``PipelineStuck`` if the watchdog asked for a restart."""
        stage = self.restart_requested
        if stage is not None:
            raise PipelineStuck(f"{stage} stage stuck; the watchdog asked for a restart")

    def check_abandoned(self) -> None:
        """Raise ``PipelineAbandoned`` on a thread the watchdog abandoned."""
        if self._abandoned:
            ident = threading.get_ident()
            with self._lock:
                if ident not in self._abandoned:
                    return
                self._abandoned.discard(ident)
            raise PipelineAbandoned(f"thread {ident} was abandoned by the watchdog")

    # -- the supervisor's and watchdog's side

    def restarting(self) -> None:
        with self._lock:
            self._restarts += 1
            self._restarting = True

    def request_restart(self, stage: str) -> None:
        self.restart_requested = stage

    def abandon(self, thread_ident: int) -> None:
        with self._lock:
            self._abandoned.add(thread_ident)

    def note_stuck(self, stage: str, report: str) -> None:
        with self._lock:
            self._stuck[stage] = self._stuck.get(stage, 0) + 1
            self._stuck_now.add(stage)
            self._last_stuck = report

    def recovered(self, stage: str) -> None:
        """The stuck call of ``stage`` ended (or another began)."""
        with self._lock:
            self._stuck_now.discard(stage)

    def fail(self, report: str) -> None:
        with self._lock:
            self._failed = True
            self._last_stuck = report

    @property
    def state(self) -> HealthState:
        with self._lock:
            if self._failed:
                return "failed"
            if self._restarting:
                return "restarting"
            return "stuck" if self._stuck_now else "running"

    @property
    def restarts(self) -> int:
        with self._lock:
            return self._restarts

    def status(self) -> dict[str, object]:
        now = time.monotonic_ns()
        busy = {}
        for stage, clock in self.clocks.items():
            since = clock.busy_since_ns
            if since is not None:
                busy[stage] = round((now - since) / 1e9, 3)
        progress = self.last_progress_ns
        age_s = None if progress is None else round((now - progress) / 1e9, 3)
        state = self.state
        with self._lock:
            return {
                "state": state,
                "stuck": dict(self._stuck),
                "restarts": self._restarts,
                "last_progress_age_s": age_s,
                "busy_s": busy,
                "last_stuck": self._last_stuck,
            }


def failed_health(reason: str) -> dict[str, object]:
    """The ``health`` of a pipeline that could not be built or started."""
    health = PipelineHealth({})
    health.fail(reason)
    return health.status()


class Watched(Protocol):
    """What the watchdog needs of a pipeline."""

    @property
    def name(self) -> str: ...

    @property
    def health(self) -> PipelineHealth: ...

    def interrupt(self, stage: str, thread_ident: int, reason: str) -> bool:
        """Stop the stuck call of ``stage`` on ``thread_ident`` if possible: a camera reconnects
        on a new capture thread, a backend cancels the run. True if something was done."""

    def abandon(self, thread_ident: int) -> None:
        """Give up the supervisor thread stuck in inference: mark it (``check_abandoned``), stop
        its helpers, and make the next run start on a fresh session of the model."""


class _Errors(Protocol):
    def count_error(self, stage: str, exc: BaseException) -> None: ...


class Supervised(Watched, Protocol):
    @property
    def stats(self) -> _Errors: ...

    def run(self, stop: threading.Event) -> None: ...


class Supervisor:
    """Runs one pipeline on a thread of its own and restarts it with backoff when ``run`` raises
    (a crash, or the watchdog asking for a restart). ``respawn`` goes on on a new thread when the
    watchdog abandoned the old one. ``is_alive`` and ``join`` are the current thread's."""

    def __init__(
        self,
        pipeline: Supervised,
        stop: threading.Event,
        backoff: Backoff,
        on_restart: Callable[[], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self._stop = stop
        self._backoff = backoff
        self._on_restart = on_restart
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._spawn(pause_first=False)

    def respawn(self) -> None:
        """Continue the pipeline on a new thread, after the backoff."""
        self._spawn(pause_first=True)

    def is_alive(self) -> bool:
        with self._lock:
            thread = self._thread
        return thread is not None and thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _spawn(self, pause_first: bool) -> None:
        thread = threading.Thread(
            target=self._main,
            args=(pause_first,),
            name=f"pipeline-{self.pipeline.name}",
            daemon=True,
        )
        with self._lock:
            self._thread = thread
        thread.start()

    def _main(self, pause_first: bool) -> None:
        pipeline = self.pipeline
        if pause_first and not self._pause():
            return
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                pipeline.run(self._stop)
                return
            except PipelineAbandoned:
                logger.info(
                    "pipeline %s: an abandoned thread's call returned; it leaves", pipeline.name
                )
                return
            except PipelineStuck as exc:
                logger.warning("pipeline %s: %s", pipeline.name, exc)
            except Exception as exc:
                logger.exception("pipeline %s stopped on an unexpected error", pipeline.name)
                pipeline.stats.count_error("crash", exc)
            if time.monotonic() - started > self._backoff.max_s:
                self._backoff.reset()  # it ran well for a while: this is a new incident
            if not self._pause():
                return

    def _pause(self) -> bool:
        """Count a restart and wait out the backoff; False if stopped meanwhile."""
        self.pipeline.health.restarting()
        if self._on_restart is not None:
            self._on_restart()
        delay = self._backoff.next_delay()
        logger.warning("pipeline %s restarts in %.1f s", self.pipeline.name, delay)
        return not self._stop.wait(delay)


@dataclass(slots=True)
class _Handled:
    """A stuck call the watchdog has dealt with (identified by its clock token)."""

    token: int
    thread_ident: int | None
    abandon_at_ns: int | None = None  # still busy then: abandon the thread


@dataclass(slots=True)
class _Watch:
    pipeline: Watched
    respawn: Callable[[], None] | None
    timeouts_ns: dict[str, int]
    handled: dict[str, _Handled] = field(default_factory=dict)


class Watchdog:
    """Checks every watched pipeline's stage clocks on a thread of its own (see the module
    docstring); ``check`` is one pass, for tests."""

    def __init__(
        self, config: WatchdogConfig, clock: Callable[[], int] = time.monotonic_ns
    ) -> None:
        self.config = config
        self._clock = clock
        self._grace_ns = round(config.cancel_grace_s * 1e9)
        self._watches: list[_Watch] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = RateLimitedLog(logger)

    def watch(self, pipeline: Watched, respawn: Callable[[], None] | None = None) -> None:
        """Watch ``pipeline``; ``respawn`` continues it on a new thread after an abandonment
        (without one, an inference that can't be interrupted fails the pipeline)."""
        timeouts = {
            stage: round(self.config.timeout_s(stage, pipeline.health.timeouts) * 1e9)
            for stage in pipeline.health.clocks
        }
        with self._lock:
            self._watches.append(_Watch(pipeline, respawn, timeouts))

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("watchdog already started")
        self._thread = threading.Thread(target=self._loop, name="watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(5.0)

    def _loop(self) -> None:
        while not self._stop.wait(self.config.check_interval_s):
            self.check()

    def check(self) -> None:
        """Look at every stage of every pipeline once; a failure with one pipeline is logged
        and never keeps the others from being checked."""
        with self._lock:
            watches = list(self._watches)
        for watch in watches:
            try:
                self._check(watch, self._clock())
            except Exception:  # noqa: BLE001 - one pipeline's trouble never stops the others
                self._log.log(
                    logging.ERROR,
                    watch.pipeline.name,
                    "watchdog: checking pipeline %s failed",
                    watch.pipeline.name,
                    exc_info=True,
                )

    def _check(self, watch: _Watch, now_ns: int) -> None:
        health = watch.pipeline.health
        for stage, clock in health.clocks.items():
            since = clock.busy_since_ns
            handled = watch.handled.get(stage)
            if handled is not None and since != handled.token:
                del watch.handled[stage]
                health.recovered(stage)
                handled = None
            if since is None:
                continue
            if handled is None:
                if now_ns - since >= watch.timeouts_ns[stage]:
                    self._stuck(watch, stage, clock, since, now_ns)
            elif handled.abandon_at_ns is not None and now_ns >= handled.abandon_at_ns:
                handled.abandon_at_ns = None
                logger.error(
                    "pipeline %s: the cancelled %s did not return within %.1f s",
                    watch.pipeline.name,
                    stage,
                    self.config.cancel_grace_s,
                )
                self._abandon(watch, stage, handled)

    def _stuck(self, watch: _Watch, stage: str, clock: StageClock, since: int, now_ns: int) -> None:
        pipeline = watch.pipeline
        ident = clock.thread_ident
        handled = _Handled(since, ident)
        watch.handled[stage] = handled
        busy_s = (now_ns - since) / 1e9
        head = f"{stage} stuck for {busy_s:.1f} s (timeout {watch.timeouts_ns[stage] / 1e9:g} s)"
        abandon = False
        if stage not in (PREPARE_STAGE, SUPERVISOR_STAGE):
            done = ident is not None and pipeline.interrupt(stage, ident, head)
            action = "reconnecting on a new thread" if done else "it cannot be interrupted"
        else:
            pipeline.health.request_restart(stage)
            if stage == PREPARE_STAGE:
                action = "restarting the pipeline"
            elif ident is not None and pipeline.interrupt(stage, ident, head):
                action = "run cancelled, restarting the pipeline"
                handled.abandon_at_ns = now_ns + self._grace_ns
            else:
                action = "the backend cannot be interrupted, abandoning its thread"
                abandon = True
        report = f"{head}: {action}"
        pipeline.health.note_stuck(stage, report)
        logger.error("pipeline %s: %s", pipeline.name, report)
        if abandon:
            self._abandon(watch, stage, handled)

    def _abandon(self, watch: _Watch, stage: str, handled: _Handled) -> None:
        pipeline = watch.pipeline
        if handled.thread_ident is None or watch.respawn is None:
            report = f"{stage} stuck and no supervisor to continue the pipeline on a new thread"
            pipeline.health.fail(report)
            logger.error("pipeline %s: %s; it stays stuck", pipeline.name, report)
            return
        try:
            pipeline.abandon(handled.thread_ident)
        except EdgewatchError as exc:
            report = f"{stage} stuck and no fresh model session: {exc}"
            pipeline.health.fail(report)
            logger.error("pipeline %s: %s; it stays stuck", pipeline.name, report)
            return
        logger.error(
            "pipeline %s: thread %d abandoned in %s (a daemon, it leaves when the call returns); "
            "continuing on a new thread with a fresh model session",
            pipeline.name,
            handled.thread_ident,
            stage,
        )
        watch.respawn()
