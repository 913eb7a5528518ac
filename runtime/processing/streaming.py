"""Per-stream state for stateful streaming models, one stream per sensor key.

A streaming model (manifest ``streaming``) is run one window at a time per key. Its ``state``
outputs are kept per key and fed back as the ``state`` inputs of that key's next window (zeros
for a new key); with ``per_stream_instances`` every key gets a session of its own instead, for
models that keep their state inside the session (TFLite resource variables). Either way a key's
state starts afresh after a gap: :meth:`StreamingRunner.reset` on a windower ``Gap``, or when a
window starts more than ``reset_after_gap_s`` after the key's previous one ended.

States are bounded: past ``max_streams`` keys the least recently used one is evicted (its session
closed) and starts afresh if it comes back. Not thread-safe: one pipeline thread owns a runner.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from runtime.backends.base import Backend
from runtime.errors import ModelError
from runtime.manifest import StreamingSpec
from runtime.model import LoadedModel

logger = logging.getLogger(__name__)

DEFAULT_MAX_STREAMS = 1024


@dataclass(slots=True)
class StreamState:
    """What one key carries between windows."""

    tensors: dict[str, NDArray[np.generic]] = field(default_factory=dict)
    """State input name → the value the model returned for it last time (empty: zeros)."""
    backend: Backend | None = None
    """The key's own session (``per_stream_instances``), created on its first window."""
    last_end_ns: int | None = None
    windows: int = 0


@dataclass(slots=True)
class StreamStats:
    created: int = 0
    resets: int = 0
    gap_resets: int = 0
    """Resets because a window started more than ``reset_after_gap_s`` after the previous one."""
    evicted: int = 0
    instances_created: int = 0
    instances_closed: int = 0


class StreamingRunner:
    """Runs a streaming model window by window, carrying each key's state."""

    def __init__(
        self,
        model: LoadedModel,
        *,
        max_streams: int = DEFAULT_MAX_STREAMS,
        make_backend: Callable[[], Backend] | None = None,
    ) -> None:
        spec = model.manifest.streaming
        if spec is None:
            raise ModelError(f"{model.path}: the manifest has no `streaming` section")
        if max_streams < 1:
            raise ValueError(f"max_streams must be >= 1, got {max_streams}")
        self.model = model
        self.spec: StreamingSpec = spec
        self.max_streams = max_streams
        self.stats = StreamStats()
        self._make_backend = make_backend or model.new_backend
        self._gap_ns = (
            None if spec.reset_after_gap_s is None else round(spec.reset_after_gap_s * 1e9)
        )
        outputs = [o.name for o in model.manifest.outputs]
        missing = [s.output for s in spec.state if s.output not in outputs]
        if missing:
            raise ModelError(
                f"{model.path}: streaming state output(s) {missing} are not outputs of the model "
                f"(outputs: {', '.join(outputs)})"
            )
        self._state_index = {s.input: outputs.index(s.output) for s in spec.state}
        self._streams: OrderedDict[str, StreamState] = OrderedDict()

    @classmethod
    def for_model(
        cls, model: LoadedModel, max_streams: int = DEFAULT_MAX_STREAMS
    ) -> StreamingRunner | None:
        """A runner if the model is a streaming one, else None."""
        if model.manifest.streaming is None:
            return None
        return cls(model, max_streams=max_streams)

    @property
    def keys(self) -> list[str]:
        """Keys holding state, least recently used first."""
        return list(self._streams)

    def run(
        self,
        key: str,
        tensor: NDArray[np.generic],
        *,
        start_ns: int | None = None,
        end_ns: int | None = None,
    ) -> list[NDArray[np.float32]]:
        """One call of the model for one window of ``key``, with the key's state; returns every
        output (state outputs included) and keeps the state outputs for the key's next call.

        ``start_ns``/``end_ns`` (the window's span) let the runner reset the key's state after
        a silence longer than ``reset_after_gap_s``. If the call fails the key starts afresh."""
        stream = self._stream(key, start_ns)
        backend = self._backend_for(stream)
        try:
            outputs = self.model.infer(tensor, state=stream.tensors, backend=backend)
        except BaseException:
            self.reset(key)
            raise
        for name, index in self._state_index.items():
            stream.tensors[name] = outputs[index]
        stream.windows += 1
        if end_ns is not None:
            stream.last_end_ns = end_ns
        return outputs

    def reset(self, key: str) -> bool:
        """Forget ``key``'s state (and close its session); True if it had any."""
        stream = self._streams.pop(key, None)
        if stream is None:
            return False
        self.stats.resets += 1
        self._close(stream)
        return True

    def close(self) -> None:
        """Drop every key's state and close every per-stream session (the runner stays usable)."""
        while self._streams:
            _, stream = self._streams.popitem(last=False)
            self._close(stream)

    def status(self) -> dict[str, object]:
        s = self.stats
        return {
            "streams": len(self._streams),
            "max_streams": self.max_streams,
            "per_stream_instances": self.spec.per_stream_instances,
            "created": s.created,
            "resets": s.resets,
            "gap_resets": s.gap_resets,
            "evicted": s.evicted,
            "instances_created": s.instances_created,
            "instances_closed": s.instances_closed,
        }

    def _stream(self, key: str, start_ns: int | None) -> StreamState:
        stream = self._streams.get(key)
        if (
            stream is not None
            and self._gap_ns is not None
            and start_ns is not None
            and stream.last_end_ns is not None
            and start_ns - stream.last_end_ns > self._gap_ns
        ):
            self.stats.gap_resets += 1
            self.reset(key)
            stream = None
        if stream is not None:
            self._streams.move_to_end(key)
            return stream
        while len(self._streams) >= self.max_streams:
            old_key, old = self._streams.popitem(last=False)
            self.stats.evicted += 1
            self._close(old)
            logger.debug("stream %r evicted (more than %d keys)", old_key, self.max_streams)
        stream = StreamState()
        self._streams[key] = stream
        self.stats.created += 1
        return stream

    def _backend_for(self, stream: StreamState) -> Backend | None:
        if not self.spec.per_stream_instances:
            return None
        if stream.backend is None:
            stream.backend = self._make_backend()
            self.stats.instances_created += 1
        return stream.backend

    def _close(self, stream: StreamState) -> None:
        if stream.backend is not None:
            stream.backend.close()
            stream.backend = None
            self.stats.instances_closed += 1
