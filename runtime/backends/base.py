from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from runtime.config.base import PluginConfig
from runtime.registry import Registry

Dim = int | str | None
"""A tensor dimension: a number, or a symbolic/unknown one."""


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    shape: tuple[Dim, ...]
    dtype: str  # numpy dtype name: float32, uint8, int8, float16 ...
    quantization: tuple[float, int] | None = None
    """(scale, zero_point) when the model itself says how the integer tensor maps to reals."""


class Backend(abc.ABC):
    """A loaded model session. ``run`` maps input names to arrays and returns outputs in order."""

    config_type: ClassVar[type[PluginConfig]]

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: PluginConfig, model_path: Path) -> Backend: ...

    @property
    @abc.abstractmethod
    def inputs(self) -> list[TensorInfo]: ...

    @property
    @abc.abstractmethod
    def outputs(self) -> list[TensorInfo]: ...

    @abc.abstractmethod
    def run(self, feeds: dict[str, NDArray[np.generic]]) -> list[NDArray[np.generic]]: ...

    @property
    @abc.abstractmethod
    def requested_providers(self) -> list[str]: ...

    @property
    @abc.abstractmethod
    def active_providers(self) -> list[str]: ...

    def close(self) -> None:  # noqa: B027 - most sessions need no explicit close
        """Release the session."""

    def cancel(self, thread_ident: int | None = None) -> bool:
        """Make the run in progress on ``thread_ident`` (every run, when None) fail soon; True if
        a run was told to. Backends that can't interrupt a run (LiteRT) return False."""
        del thread_ident
        return False

    def details(self) -> dict[str, object]:
        """What the backend actually runs with, for the status and ``models inspect``: e.g.
        threads, active delegate or providers, graph partitions, fallbacks and why."""
        return {}


BACKENDS: Registry[type[Backend]] = Registry("backend")
