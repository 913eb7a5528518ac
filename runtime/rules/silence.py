"""``silence``: raise when a sensor key goes quiet or its readings have a hole, per key.

The pipeline reports gaps (see ``Windower.check_silence`` and holes between readings): an
``ongoing`` gap while the key is still silent raises, and the key's next window with a reading
after the silence began clears. A hole only noticed when the next reading arrived (not ongoing)
is over already: it raises and clears in the same call, or just clears what an ongoing gap of the
same silence raised. Silence is reported once per quiet spell, so a ``min_silence_s`` above the
pipeline's silence delay only catches holes, after the fact.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from runtime.config.base import PluginConfig
from runtime.messages import AlertState, RuleEvent, SensorDetail, WindowScore
from runtime.processing.windows import Gap
from runtime.rules._sensor_state import KeyFilter, KeyTable, SensorRuleConfig, expect_config
from runtime.rules.sensor_base import SENSOR_RULES, SensorRule


class SilenceConfig(SensorRuleConfig):
    type: Literal["silence"]
    min_silence_s: float = Field(
        0.0,
        ge=0.0,
        allow_inf_nan=False,
        description="raise for gaps at least this long (0: every gap the pipeline reports)",
    )
    label: str = Field("silence", min_length=1)


@SENSOR_RULES.register("silence")
class SilenceRule(SensorRule):
    """Tracks only raised keys: the gap that raised each one."""

    config_type = SilenceConfig

    def __init__(self, name: str, config: SilenceConfig) -> None:
        self.name = name
        self.config = config
        self._watches = KeyFilter(config.keys)
        self.tracked: KeyTable[Gap] = KeyTable(
            name, config.max_keys, lambda _gap: False
        )  # every tracked key is raised: never evicted

    @classmethod
    def from_config(cls, config: PluginConfig, name: str, model_threshold: float) -> SilenceRule:
        del model_threshold
        return cls(name, expect_config(config, SilenceConfig, name))

    def on_gap(self, gap: Gap, now_mono_ns: int) -> list[RuleEvent]:
        del now_mono_ns
        if not self._watches(gap.key):
            return []
        if gap.key in self.tracked:
            if gap.ongoing:
                return []  # still the same silence
            self.tracked.pop(gap.key)
            return self._clear(gap.key, gap.last_ts_ns, gap.next_ts_ns, gap.duration_s)
        if gap.duration_s < self.config.min_silence_s:
            return []
        raised = [self._event("raised", gap.key, gap.last_ts_ns, gap.next_ts_ns, gap.duration_s)]
        if not gap.ongoing:
            return raised + self._clear(gap.key, gap.last_ts_ns, gap.next_ts_ns, gap.duration_s)
        if not self.tracked.put(gap.key, gap):
            return []  # too many silent keys: this one goes unreported (counted, logged)
        return raised

    def on_window(self, window: WindowScore, now_mono_ns: int) -> list[RuleEvent]:
        del now_mono_ns
        raising = self.tracked.peek(window.key)
        if raising is None or window.end_ns <= raising.last_ts_ns + 1:
            return []  # not silent, or a window from before the silence scored late
        self.tracked.pop(window.key)
        return self._clear(window.key, window.start_ns, window.end_ns, raising.duration_s)

    def _clear(self, key: str, start_ns: int, end_ns: int, silence_s: float) -> list[RuleEvent]:
        if not self.config.emit_clear:
            return []
        return [self._event("cleared", key, start_ns, end_ns, silence_s)]

    def _event(
        self, state: AlertState, key: str, start_ns: int, end_ns: int, silence_s: float
    ) -> RuleEvent:
        return RuleEvent(
            rule=self.name,
            state=state,
            severity=self.config.severity,
            label=self.config.label,
            score=silence_s,
            sensor=SensorDetail(
                key=key,
                window_start_ns=start_ns,
                window_end_ns=end_ns,
                value_name="silence_s",
                value=silence_s,
                threshold=self.config.min_silence_s,
            ),
        )
