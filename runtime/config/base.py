"""Base pydantic models shared by the device config, plugin configs and manifests."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Protocol

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo


class StrictModel(BaseModel):
    """Unknown keys are errors; parsed configs are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PluginConfig(StrictModel):
    """Every plugin's config has a ``type`` key naming the plugin (a ``Literal`` in subclasses)."""

    type: str


class HasConfigType(Protocol):
    config_type: type[PluginConfig]


def config_union(plugins: Sequence[tuple[str, HasConfigType]]) -> Any:
    """A discriminated union (on ``type``) of the config classes of a plugin family."""
    types = tuple(plugin.config_type for _, plugin in plugins)
    if not types:
        raise RuntimeError("plugin family has no registered plugins")
    if len(types) == 1:
        return types[0]
    return Annotated[tuple_union(types), Field(discriminator="type")]


def tuple_union(types: tuple[type[Any], ...]) -> Any:
    union: Any = types[0]
    for t in types[1:]:
        union = union | t
    return union


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Device ids, pipeline and rule names: safe as one MQTT topic level (no /, +, #, spaces)."""


def resolve_config_path(value: str, info: ValidationInfo) -> str:
    """Relative paths in a config file are relative to that file, not to the working directory."""
    base = (info.context or {}).get("base_dir")
    if base is None or "://" in value or Path(value).is_absolute():
        return value
    return os.path.normpath(Path(base) / value)


ConfigPath = Annotated[str, AfterValidator(resolve_config_path)]
"""A file or directory path named in a config: resolved relative to the config file."""
