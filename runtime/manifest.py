"""Model bundle manifest: what the model file is, what it expects, how to decode its outputs.

A bundle is a directory ``models/<name>/<version>/`` holding ``manifest.json`` and the model file.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

from pydantic import Field, create_model

from runtime.config.base import StrictModel, config_union
from runtime.registry import import_submodules

MANIFEST_FILE = "manifest.json"


class Quantization(StrictModel):
    scale: float = Field(gt=0)
    zero_point: int


class InputSpec(StrictModel):
    name: str
    shape: list[int | str | None]
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    dtype: Literal["float32", "float16", "uint8", "int8"] = "float32"
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
    postprocess: Any
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
        postprocess=(config_union(POSTPROCESSORS.items()), ...),
    )
    return model
