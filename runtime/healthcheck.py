"""Is the device doing its job? One verdict from the status document, for ``/healthz``.

Healthy means every enabled pipeline was built, started, is still running and its watchdog
``health.state`` is "running" (not stuck, restarting or failed; see ``runtime.health``).
The MQTT connection is reported but never makes the device unhealthy on its own: alerts raised
while the broker is unreachable wait in the sink (the outbox) and are delivered after
reconnecting, so restarting a device because its uplink is down would only lose them.
A camera that is reconnecting is likewise reported through its pipeline's source state and the
metrics, not here: the pipeline is running and recovers by itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

HEALTHY_STATES = frozenset({"running"})
"""Values of a pipeline's ``health.state`` (``runtime.health``) that are fine; any other one
("stuck", "restarting", "failed") is a reason."""


@dataclass(frozen=True, slots=True)
class Health:
    healthy: bool
    reasons: tuple[str, ...]
    pipelines: Mapping[str, bool]
    mqtt_connected: bool | None  # None: no MQTT configured

    def as_dict(self) -> dict[str, object]:
        return {
            "status": "ok" if self.healthy else "unhealthy",
            "reasons": list(self.reasons),
            "pipelines": {name: "ok" if ok else "unhealthy" for name, ok in self.pipelines.items()},
            "mqtt": {"connected": self.mqtt_connected},
        }


def assess(status: Mapping[str, object], alive: Callable[[str], bool]) -> Health:
    """The verdict for an ``App.status()`` document; ``alive(name)``: the pipeline's thread runs."""
    reasons: list[str] = []
    pipelines: dict[str, bool] = {}
    entries = status.get("pipelines")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping):
            continue
        name = str(entry.get("name"))
        problems = _pipeline_problems(entry, alive)
        pipelines[name] = not problems
        reasons += [f"pipeline {name}: {p}" for p in problems]
    if not pipelines:
        reasons.append("no pipeline configured")
    mqtt = status.get("mqtt")
    connected = bool(mqtt.get("connected")) if isinstance(mqtt, Mapping) else None
    return Health(not reasons, tuple(reasons), pipelines, connected)


def _pipeline_problems(entry: Mapping[str, Any], alive: Callable[[str], bool]) -> list[str]:
    name = str(entry.get("name"))
    if entry.get("state") == "failed":
        return [f"failed: {entry.get('last_error') or 'unknown error'}"]
    problems: list[str] = []
    if not alive(name):
        source = entry.get("source")
        state = source.get("state") if isinstance(source, Mapping) else None
        problems.append("not running" + (f" (source {state})" if state else ""))
    health = entry.get("health")
    health = health if isinstance(health, Mapping) else {}
    state = health.get("state")
    if isinstance(state, str) and state not in HEALTHY_STATES:
        detail = health.get("last_stuck")
        problems.append(state + (f": {detail}" if detail else ""))
    return problems
