"""Shared by the alert rules: the debounce / hysteresis / cooldown state machine and its config.

A rule reduces each inference to a :class:`FrameMatch` (does this frame count towards raising,
towards clearing, or neither, and which item matched best); :class:`AlertStateMachine` turns the
sequence of matches into ``raised`` / ``cleared`` events. Keeping "counts towards raising" and
"counts towards clearing" separate is what gives hysteresis: a frame between the two levels
breaks both streaks and changes nothing.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field

from runtime.config.base import PluginConfig
from runtime.messages import AlertState, BBox, Inference, RuleEvent
from runtime.rules.base import Rule

logger = logging.getLogger(__name__)

Severity = Literal["info", "warning", "critical"]
WILDCARD = "*"


class DebouncedRuleConfig(PluginConfig):
    """Fields every raise/clear rule shares. Subclasses add ``type: Literal[...]`` and matching."""

    labels: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1, description=f"labels that match; {WILDCARD!r} matches any label"
    )
    raise_frames: int = Field(
        1, ge=1, description="consecutive matching frames needed before raising (debounce)"
    )
    clear_frames: int = Field(
        1, ge=1, description="consecutive non-matching frames needed before clearing"
    )
    cooldown_s: float = Field(
        0.0,
        ge=0.0,
        allow_inf_nan=False,
        description="after a clear, no new raise for this many seconds (monotonic clock)",
    )
    severity: Severity = "warning"
    emit_clear: bool = Field(
        True, description="emit a 'cleared' event; when false the rule still resets silently"
    )


def label_matcher(labels: list[str]) -> Callable[[str], bool]:
    """A predicate for "this label is one the rule watches", honouring the ``*`` wildcard."""
    if WILDCARD in labels:
        return lambda _label: True
    wanted = frozenset(labels)
    return wanted.__contains__


@dataclass(frozen=True, slots=True)
class FrameMatch:
    """One frame as a rule sees it.

    ``hit``: the frame counts towards raising. ``miss``: it counts towards clearing. Both false
    means the frame sits inside the hysteresis band. ``label``/``score``/``bbox`` describe the
    best-matching item (``label`` None and ``score`` 0 when nothing matched).
    """

    hit: bool
    miss: bool
    label: str | None
    score: float
    bbox: BBox | None = None

    def __post_init__(self) -> None:
        if self.hit and self.miss:
            raise ValueError("a frame can't count towards both raising and clearing")
        if self.hit and self.label is None:
            raise ValueError("a frame that counts towards raising needs the matching label")


class AlertStateMachine:
    """idle → raised → idle, with debounce on both edges and a cooldown after each clear.

    * Raise when ``raise_frames`` consecutive frames hit and no cooldown is running. The streak
      keeps counting during a cooldown, so a condition that persists raises on the first frame
      after the cooldown ends.
    * Clear when ``clear_frames`` consecutive frames miss. The cooldown starts at the clearing
      frame's ``now_mono_ns``, whether or not the clear is emitted.
    * While raised, further hits emit nothing.
    """

    __slots__ = (
        "_clear_frames",
        "_clear_streak",
        "_cleared_at_ns",
        "_cooldown_ns",
        "_emit_clear",
        "_raise_frames",
        "_raise_streak",
        "_raised_label",
        "_suppression_logged",
        "name",
        "severity",
    )

    def __init__(
        self,
        name: str,
        *,
        raise_frames: int = 1,
        clear_frames: int = 1,
        cooldown_ns: int = 0,
        severity: Severity = "warning",
        emit_clear: bool = True,
    ) -> None:
        if raise_frames < 1 or clear_frames < 1:
            raise ValueError(
                f"rule {name!r}: raise_frames and clear_frames must be >= 1, "
                f"got {raise_frames} and {clear_frames}"
            )
        if cooldown_ns < 0:
            raise ValueError(f"rule {name!r}: cooldown must be >= 0 ns, got {cooldown_ns}")
        self.name = name
        self.severity: Severity = severity
        self._raise_frames = raise_frames
        self._clear_frames = clear_frames
        self._cooldown_ns = cooldown_ns
        self._emit_clear = emit_clear
        self._raise_streak = 0
        self._clear_streak = 0
        self._raised_label: str | None = None
        self._cleared_at_ns: int | None = None
        self._suppression_logged = False

    @classmethod
    def from_config(cls, name: str, config: DebouncedRuleConfig) -> AlertStateMachine:
        return cls(
            name,
            raise_frames=config.raise_frames,
            clear_frames=config.clear_frames,
            cooldown_ns=round(config.cooldown_s * 1e9),
            severity=config.severity,
            emit_clear=config.emit_clear,
        )

    @property
    def raised(self) -> bool:
        return self._raised_label is not None

    def step(self, match: FrameMatch, now_mono_ns: int) -> list[RuleEvent]:
        """Feed one frame; returns the events it caused (at most one)."""
        if self._raised_label is None:
            return self._step_idle(match, now_mono_ns)
        return self._step_raised(self._raised_label, match, now_mono_ns)

    def _step_idle(self, match: FrameMatch, now_mono_ns: int) -> list[RuleEvent]:
        self._raise_streak = self._raise_streak + 1 if match.hit else 0
        if self._raise_streak < self._raise_frames:
            return []
        if self._cooling_down(now_mono_ns):
            if not self._suppression_logged:
                logger.debug("rule %s: raise suppressed by cooldown", self.name)
                self._suppression_logged = True
            return []
        assert match.label is not None  # FrameMatch guarantees a label on a hit
        self._raised_label = match.label
        self._raise_streak = 0
        self._clear_streak = 0
        self._suppression_logged = False
        return [self._event("raised", match.label, match)]

    def _step_raised(self, label: str, match: FrameMatch, now_mono_ns: int) -> list[RuleEvent]:
        self._clear_streak = self._clear_streak + 1 if match.miss else 0
        if self._clear_streak < self._clear_frames:
            return []
        self._raised_label = None
        self._clear_streak = 0
        self._raise_streak = 0
        self._cleared_at_ns = now_mono_ns
        if not self._emit_clear:
            return []
        return [self._event("cleared", label, match)]

    def _cooling_down(self, now_mono_ns: int) -> bool:
        if self._cleared_at_ns is None:
            return False
        return now_mono_ns - self._cleared_at_ns < self._cooldown_ns

    def _event(self, state: AlertState, label: str, match: FrameMatch) -> RuleEvent:
        bbox = match.bbox if state == "raised" else None
        return RuleEvent(
            rule=self.name,
            state=state,
            severity=self.severity,
            label=label,
            score=match.score,
            bbox=bbox,
        )


class DebouncedRule(Rule):
    """A rule that classifies each frame (``match``) and lets the shared state machine decide
    when to raise and clear."""

    def __init__(self, name: str, config: DebouncedRuleConfig) -> None:
        self.name = name
        self._state = AlertStateMachine.from_config(name, config)

    @property
    def raised(self) -> bool:
        return self._state.raised

    def evaluate(self, inference: Inference, now_mono_ns: int) -> list[RuleEvent]:
        return self._state.step(self.match(inference), now_mono_ns)

    @abc.abstractmethod
    def match(self, inference: Inference) -> FrameMatch: ...
