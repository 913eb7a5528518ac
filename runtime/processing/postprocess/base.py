from __future__ import annotations

import abc
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from runtime.config.base import PluginConfig
from runtime.messages import Classification, Detection
from runtime.processing.preprocess import Geometry
from runtime.registry import Registry


class Postprocessor(abc.ABC):
    """Turns raw model outputs into classifications or detections in frame coordinates."""

    config_type: ClassVar[type[PluginConfig]]

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: PluginConfig, labels: list[str]) -> Postprocessor: ...

    @abc.abstractmethod
    def decode(
        self, outputs: list[NDArray[np.generic]], geometry: Geometry
    ) -> tuple[tuple[Classification, ...], tuple[Detection, ...]]: ...


POSTPROCESSORS: Registry[type[Postprocessor]] = Registry("postprocess")


def label_for(labels: list[str], class_id: int) -> str:
    return labels[class_id] if 0 <= class_id < len(labels) else f"class_{class_id}"
