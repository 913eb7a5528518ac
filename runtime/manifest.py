"""Model bundle manifest: what the model file is, what it expects, how to decode its outputs.

A bundle is a directory ``models/<name>/<version>/`` holding ``manifest.json`` and the model file.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

from pydantic import Field, create_model, model_validator

from runtime.config.base import StrictModel, config_union
from runtime.processing.features import FeatureSpec
from runtime.registry import import_submodules

MANIFEST_FILE = "manifest.json"


class Quantization(StrictModel):
    scale: float = Field(gt=0)
    zero_point: int


class InputSpec(StrictModel):
    name: str
    shape: list[int | str | None]
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    dtype: Literal["float32", "float16", "uint8", "int8", "int64", "int32"] = "float32"
    color: Literal["RGB", "BGR"] = "RGB"
    resize: Literal["stretch", "letterbox"] = "stretch"
    letterbox_fill: int = Field(114, ge=0, le=255)
    scale: float = Field(1.0 / 255.0, description="pixel values are multiplied by this first")
    mean: list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0], min_length=3, max_length=3)
    std: list[float] = Field(default_factory=lambda: [1.0, 1.0, 1.0], min_length=3, max_length=3)
    quantization: Quantization | None = None

    def spatial_size(self) -> tuple[int, int]:
        """(height, width) the image is resized to; both must be fixed numbers."""
        h, w = (self.shape[2], self.shape[3]) if self.layout == "NCHW" else self.shape[1:3]
        if not isinstance(h, int) or not isinstance(w, int):
            raise ValueError(
                f"input {self.name!r}: height and width must be fixed, got {self.shape}"
            )
        return h, w


class OutputSpec(StrictModel):
    name: str
    shape: list[int | str | None]
    dtype: Literal["float32", "float16", "uint8", "int8", "int64", "int32"] = "float32"
    quantization: Quantization | None = None


class SensorWindowSpec(StrictModel):
    """The windows a sensor model was trained on (sensor pipelines cut the same ones)."""

    kind: Literal["count", "time"] = "count"
    size: int | float = Field(gt=0, description="samples (count) or seconds (time)")
    hop: int | float = Field(gt=0, description="same unit as size")


class SensorModelSpec(StrictModel):
    """How a sensor (anomaly) model is fed and read: ``features`` of ``window``s over ``fields``
    make its one input [N, len(feature_names)]; ``score_output`` holds one score per window, and
    a score above ``threshold`` is anomalous. ``feature_mean``/``feature_std`` describe the
    training features; alerts name the features furthest from them."""

    fields: list[str] = Field(min_length=1)
    window: SensorWindowSpec
    features: FeatureSpec
    feature_names: list[str] = Field(min_length=1)
    score_output: str
    threshold: float = Field(allow_inf_nan=False)
    feature_mean: list[float] | None = None
    feature_std: list[float] | None = None

    @model_validator(mode="after")
    def _check(self) -> SensorModelSpec:
        n = len(self.feature_names)
        for name in ("feature_mean", "feature_std"):
            stats = getattr(self, name)
            if stats is not None and len(stats) != n:
                raise ValueError(f"{name} has {len(stats)} values for {n} features")
        return self


class StateSpec(StrictModel):
    """A recurrent state tensor: fed as ``input``, read back from ``output`` after each call."""

    input: str
    output: str


class StreamingSpec(StrictModel):
    """How a stateful streaming model is run, one stream (sensor key) at a time.

    ``state`` tensors are carried from call to call per stream (zeros at the start and after a
    gap); ``constants`` are extra inputs fed the same value on every call (e.g. a sample rate);
    ``per_stream_instances`` gives every stream its own interpreter, for models that keep their
    state inside (TFLite resource variables)."""

    state: list[StateSpec] = Field(default_factory=list)
    constants: dict[str, float | int | list[float] | list[int]] = Field(default_factory=dict)
    per_stream_instances: bool = False
    reset_after_gap_s: float | None = Field(None, gt=0)


class ManifestBase(StrictModel):
    schema_version: Literal[1] = 1
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    backend: str = "onnxruntime"
    inputs: list[InputSpec] = Field(min_length=1)
    outputs: list[OutputSpec] = Field(min_length=1)
    labels: list[str] = Field(default_factory=list)
    postprocess: Any = Field(None, description="how camera pipelines decode the outputs")
    sensor: SensorModelSpec | None = Field(None, description="how sensor pipelines use the model")
    streaming: StreamingSpec | None = Field(None, description="state carried between calls")
    description: str = ""
    provenance: dict[str, Any] = Field(
        default_factory=dict, description="how the model was made (tools record it here)"
    )


@cache
def manifest_model() -> type[ManifestBase]:
    """The Manifest model, with ``postprocess`` a union over every registered postprocessor."""
    from runtime.processing.postprocess.base import POSTPROCESSORS

    import_submodules("runtime.processing.postprocess")
    model: type[ManifestBase] = create_model(
        "Manifest",
        __base__=ManifestBase,
        postprocess=(config_union(POSTPROCESSORS.items()) | None, None),
    )
    return model
