"""What the sensor sources share: the decoder config union and the per-reason drop counter."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from runtime.processing.decoders.base import (
    DECODERS,
    DROP_REASONS,
    DecodeError,
    Decoder,
    DecoderConfig,
    excerpt,
)
from runtime.ratelimit import RateLimitedLog
from runtime.registry import import_submodules

if TYPE_CHECKING:
    AnyDecoderConfig = DecoderConfig
else:
    from runtime.config.base import config_union

    import_submodules("runtime.processing.decoders")
    AnyDecoderConfig = config_union(DECODERS.items())
    """The discriminated union (on ``type``) of every registered decoder's config."""

WARN_INTERVAL_S = 30.0


def build_decoder(config: DecoderConfig) -> Decoder:
    return DECODERS.get(config.type).from_config(config)


class DropCounter:
    """Counts dropped messages by reason and logs each reason at most once per interval.

    Written by one thread (the one decoding); ``counts()`` may be read from any thread.
    """

    def __init__(
        self,
        logger: logging.Logger,
        where: str,
        reasons: tuple[str, ...] = DROP_REASONS,
        interval_s: float = WARN_INTERVAL_S,
    ) -> None:
        self._logger = logger
        self._where = where
        self._dropped: dict[str, int] = dict.fromkeys(reasons, 0)
        self._log = RateLimitedLog(logger, interval_s)
        self.last_error: str | None = None

    def drop(self, reason: str, origin: str, detail: str) -> None:
        """Count one drop; ``origin`` says where (a topic, ``file:line``)."""
        self._dropped[reason] = self._dropped.get(reason, 0) + 1
        self.last_error = f"{reason} at {origin}: {detail}"
        self._log.log(
            logging.WARNING,
            reason,
            "%s: dropped a message (%s) at %s: %s",
            self._where,
            reason,
            origin,
            detail,
        )

    def decode_error(self, error: DecodeError, topic: str, payload: bytes) -> None:
        self.drop(error.reason, f"topic {topic}", f"{error.detail}; payload {excerpt(payload)}")

    def counts(self) -> dict[str, int]:
        return dict(self._dropped)
