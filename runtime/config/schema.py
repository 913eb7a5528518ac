"""The device config: pydantic models. Plugin sections are unions over the plugin registries."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, create_model

from runtime.config.base import NAME_PATTERN, ConfigPath, StrictModel, config_union
from runtime.health import StageTimeouts, WatchdogConfig
from runtime.metrics_http import MetricsConfig
from runtime.mqtt_link import MqttSettings
from runtime.processing.windows import WindowConfig
from runtime.registry import import_submodules

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]


class DeviceSection(StrictModel):
    id: Name = Field(description="unique device id; one MQTT topic level")
    description: str = ""


class ModelRefBase(StrictModel):
    bundle: ConfigPath = Field(description="bundle directory holding manifest.json and the model")
    backend: Any = None


class PipelineConfigBase(StrictModel):
    name: Name
    enabled: bool = True
    source: Any
    model: str = Field(description="a key of the top-level `models` mapping")
    postprocess: Any = Field(None, description="overrides the manifest's postprocess section")
    rules: dict[Name, Any] = Field(min_length=1, description="rule name → rule")
    watchdog: StageTimeouts | None = Field(
        None, description="this pipeline's stage timeouts, overriding the device's `watchdog`"
    )


class SensorPipelineConfigBase(StrictModel):
    """Sensor readings → per-key windows → features → batched model call → sensor rules."""

    name: Name
    enabled: bool = True
    source: Any
    model: str = Field(description="a key of the top-level `models` mapping (a sensor model)")
    window: WindowConfig | None = Field(
        None, description="overrides the windows the model was trained on (manifest `sensor`)"
    )
    max_lateness_s: float = Field(
        0.5, ge=0, description="readings may arrive this much out of order (manifest windows)"
    )
    silence_after_s: float | None = Field(
        None,
        gt=0,
        description="a key with no reading for this long is silent (a gap); off when unset",
    )
    max_batch: int = Field(256, ge=1, description="windows per model call at most")
    top_features: int = Field(3, ge=0, le=32, description="features named in each alert")
    rules: dict[Name, Any] = Field(min_length=1, description="rule name → sensor rule")
    watchdog: StageTimeouts | None = Field(
        None, description="this pipeline's inference timeout, overriding the device's `watchdog`"
    )


class SecuritySection(StrictModel):
    model_public_key: ConfigPath | None = Field(
        None,
        description="Ed25519 public key (PEM); when set, only bundles whose manifest.sig "
        "verifies with it are loaded (needs the `signing` extra)",
    )


class LoggingSection(StrictModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class DeviceConfigBase(StrictModel):
    schema_version: Literal[1] = 1
    device: DeviceSection
    mqtt: MqttSettings | None = None
    models: dict[Name, ModelRefBase] = Field(min_length=1)
    pipelines: list[PipelineConfigBase] = Field(default_factory=list)
    sensor_pipelines: list[SensorPipelineConfigBase] = Field(default_factory=list)
    sinks: list[Any] = Field(default_factory=lambda: [{"type": "console"}], validate_default=True)
    status_interval_s: float = Field(30.0, gt=0, description="period of the retained status")
    logging: LoggingSection = Field(default_factory=LoggingSection)
    security: SecuritySection = Field(default_factory=SecuritySection)
    watchdog: WatchdogConfig = Field(
        default_factory=WatchdogConfig,
        description="stuck capture/preprocessing/inference detection and pipeline restarts",
    )
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)


def cross_reference_problems(config: DeviceConfigBase) -> list[tuple[tuple[str | int, ...], str]]:
    """Problems between sections (a pipeline naming an undefined model...), each with its path."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    if not config.pipelines and not config.sensor_pipelines:
        problems.append((("pipelines",), "no pipelines: give `pipelines` or `sensor_pipelines`"))
    seen: set[str] = set()
    sections: list[tuple[str, list[PipelineConfigBase | SensorPipelineConfigBase]]] = [
        ("pipelines", list(config.pipelines)),
        ("sensor_pipelines", list(config.sensor_pipelines)),
    ]
    for section, pipelines in sections:
        for i, p in enumerate(pipelines):
            if p.name in seen:
                problems.append(((section, i, "name"), f"pipeline name {p.name!r} is used twice"))
            seen.add(p.name)
            if p.model not in config.models:
                defined = ", ".join(sorted(config.models)) or "none"
                problems.append(
                    (
                        (section, i, "model"),
                        f"pipeline {p.name!r} uses model {p.model!r}, which is not under "
                        f"`models` (defined: {defined})",
                    )
                )
    for i, sp in enumerate(config.sensor_pipelines):
        if getattr(sp.source, "type", None) == "mqtt" and config.mqtt is None:
            problems.append(
                (
                    ("sensor_pipelines", i, "source", "type"),
                    "an `mqtt` sensor source needs a top-level `mqtt` section",
                )
            )
    for i, sink in enumerate(config.sinks):
        if getattr(sink, "type", None) == "mqtt" and config.mqtt is None:
            problems.append(
                (("sinks", i, "type"), "an `mqtt` sink needs a top-level `mqtt` section")
            )
    return problems


@cache
def device_config_model() -> type[DeviceConfigBase]:
    """DeviceConfig with every plugin section a discriminated union of the registered plugins."""
    from runtime.backends.base import BACKENDS
    from runtime.processing.postprocess.base import POSTPROCESSORS
    from runtime.rules.base import RULES
    from runtime.rules.sensor_base import SENSOR_RULES
    from runtime.sinks.base import SINKS
    from runtime.sources.base import SOURCES
    from runtime.sources.sensor_base import SENSOR_SOURCES

    for package in ("sources", "backends", "processing.postprocess", "rules", "sinks"):
        import_submodules(f"runtime.{package}")

    backend = config_union(BACKENDS.items())
    model_ref = create_model(
        "ModelRef",
        __base__=ModelRefBase,
        backend=(backend, Field(default={"type": "onnxruntime"}, validate_default=True)),
    )
    pipeline = create_model(
        "PipelineConfig",
        __base__=PipelineConfigBase,
        source=(config_union(SOURCES.items()), ...),
        postprocess=(config_union(POSTPROCESSORS.items()) | None, None),
        rules=(_dict_of(config_union(RULES.items())), Field(min_length=1)),
    )
    sensor_pipeline = create_model(
        "SensorPipelineConfig",
        __base__=SensorPipelineConfigBase,
        source=(config_union(SENSOR_SOURCES.items()), ...),
        rules=(_dict_of(config_union(SENSOR_RULES.items())), Field(min_length=1)),
    )
    model: type[DeviceConfigBase] = create_model(
        "DeviceConfig",
        __base__=DeviceConfigBase,
        models=(_dict_of(model_ref), Field(min_length=1)),
        pipelines=(_list_of(pipeline), Field(default_factory=list)),
        sensor_pipelines=(_list_of(sensor_pipeline), Field(default_factory=list)),
        sinks=(
            _list_of(config_union(SINKS.items())),
            Field(default_factory=lambda: [{"type": "console"}], validate_default=True),
        ),
    )
    return model


def _dict_of(value: Any) -> Any:
    return dict.__class_getitem__((Name, value))


def _list_of(item: Any) -> Any:
    return list.__class_getitem__(item)


def json_schema() -> dict[str, Any]:
    schema = device_config_model().model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "edgewatch device config"
    return schema
