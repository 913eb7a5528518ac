"""``threshold``: raise when a watched label's score reaches a level, clear when it falls back.

Looks at classifications and detections alike. A frame's score is the best score among items
whose label is watched (0 when there are none).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from runtime.config.base import PluginConfig
from runtime.messages import BBox, Inference
from runtime.rules._state import DebouncedRule, DebouncedRuleConfig, FrameMatch, label_matcher
from runtime.rules.base import RULES


class ThresholdConfig(DebouncedRuleConfig):
    type: Literal["threshold"]
    raise_score: float = Field(
        gt=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="raise when the best matching score is at or above this",
    )
    clear_score: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="clear when the score falls below this (hysteresis); defaults to raise_score",
    )

    @field_validator("clear_score")
    @classmethod
    def _clear_not_above_raise(cls, clear: float | None, info: ValidationInfo) -> float | None:
        raise_score = info.data.get("raise_score")  # absent when raise_score itself was invalid
        if clear is not None and raise_score is not None and clear > raise_score:
            raise ValueError(
                f"clear_score ({clear}) must be <= raise_score ({raise_score}): "
                "the alert raises at raise_score and clears below clear_score"
            )
        return clear

    @property
    def effective_clear_score(self) -> float:
        return self.raise_score if self.clear_score is None else self.clear_score


@RULES.register("threshold")
class ThresholdRule(DebouncedRule):
    config_type = ThresholdConfig

    def __init__(self, name: str, config: ThresholdConfig) -> None:
        super().__init__(name, config)
        self.config = config
        self._matches_label = label_matcher(config.labels)
        self._raise_score = config.raise_score
        self._clear_score = config.effective_clear_score

    @classmethod
    def from_config(cls, config: PluginConfig, name: str) -> ThresholdRule:
        if not isinstance(config, ThresholdConfig):
            raise TypeError(
                f"threshold rule {name!r}: expected ThresholdConfig, got {type(config).__name__}"
            )
        return cls(name, config)

    def match(self, inference: Inference) -> FrameMatch:
        """The best watched item of this frame, classified against the raise/clear levels."""
        label: str | None = None
        score = 0.0
        bbox: BBox | None = None
        # strict ">" from 0: a NaN score never wins, and ties keep the first item
        for c in inference.classifications:
            if c.score > score and self._matches_label(c.label):
                label, score, bbox = c.label, float(c.score), None
        for d in inference.detections:
            if d.score > score and self._matches_label(d.label):
                label, score, bbox = d.label, float(d.score), d.bbox
        return FrameMatch(
            hit=score >= self._raise_score,
            miss=score < self._clear_score,
            label=label,
            score=score,
            bbox=bbox,
        )
