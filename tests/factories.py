"""Builders for the messages tests need; every field has a fixed, schema-valid default."""

from __future__ import annotations

from typing import Any

from runtime.messages import Alert, FeatureContribution, ModelInfo, SensorDetail

BOOT_ID = "b00t"
DEVICE_ID = "gw01"
TS_NS = 1_767_225_600_123_456_789  # 2026-01-01T00:00:00.123Z


def make_alert(**overrides: Any) -> Alert:
    """An ``Alert`` with deterministic defaults; keyword arguments replace any field.

    ``alert_id`` defaults to ``<boot_id>-<seq>`` and ``frame_seq`` to ``100 + seq``, following the
    ``seq``/``boot_id`` given. Unknown field names raise ``TypeError``.
    """
    seq = overrides.get("seq", 0)
    boot_id = overrides.get("boot_id", BOOT_ID)
    fields: dict[str, Any] = {
        "alert_id": f"{boot_id}-{seq}",
        "seq": seq,
        "boot_id": boot_id,
        "device_id": DEVICE_ID,
        "pipeline": "door",
        "rule": "person-at-door",
        "state": "raised",
        "severity": "warning",
        "ts_ns": TS_NS,
        "model": ModelInfo(name="detector", version="1.2.0", sha256="ab" * 32),
        "label": "person",
        "score": 0.876543219,
        "bbox": (10.0, 20.5, 110.25, 220.0),
        "source": "cam0",
        "frame_seq": 100 + seq,
        "captured_at_ns": TS_NS - 4_000_000,
        "captured_mono_ns": 0,
        "latency_ms": {"infer": 3.25, "total": 4.0},
    }
    return Alert(**(fields | overrides))


def make_sensor_detail(**overrides: Any) -> SensorDetail:
    """A ``SensorDetail`` of a scored window of pump-3, with two contributing features."""
    fields: dict[str, Any] = {
        "key": "pump-3",
        "window_start_ns": TS_NS - 1_280_000_000,
        "window_end_ns": TS_NS,
        "value_name": "score",
        "value": 41.5,
        "threshold": 12.25,
        "top_features": (
            FeatureContribution("vibration.kurtosis", 7.5, 18.25),
            FeatureContribution("vibration.rms", 0.9, -4.5),
        ),
    }
    return SensorDetail(**(fields | overrides))
