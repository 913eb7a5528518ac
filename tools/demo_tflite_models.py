"""One network, three encodings: ``demo-hazard-classifier-tflite`` for ONNX ↔ TFLite parity.

* ``1.0.0-onnx``: float32 ONNX (NCHW input), run by onnxruntime;
* ``1.0.0-fp32``: float32 TFLite (NHWC input) with the very same weights, run by LiteRT;
* ``1.0.0-int8``: full-int8 TFLite (int8 input, ops and output), activation ranges calibrated on
  generated scenes; the manifest carries the model's input and output scale and zero point;
* ``1.0.0-onnx-int8``: the ONNX model quantized by onnxruntime (QDQ, int8 weights per channel,
  uint8 activations) on the same calibration scenes; float input and output.

The network is the demo classifier's (:func:`tools.demo_models.build_demo_classifier`): the same
scenes, preprocessing, fixed colour bank and pooled-colour MLP, trained the same way, with one
change so it survives int8: features are standardised with a floor on their spread
(:data:`SD_FLOOR`). The shipped classifier divides by spreads as small as 1e-6 for features
that hardly ever vary, which folds weights up to ~600 into its first Gemm; an int8 model sees
the pooled colour features in steps of 1/255, each step then moves a logit by whole units, and
its top-1 agrees with the float model's on only ~55 % of frames. With the floor the weights
stay below ~5 and int8 agrees on more than 99 %, at the same float accuracy.

The TFLite files are converted from the ONNX graph by :mod:`tools.tflite_export` (TensorFlow's
converter, in the ``tools`` extra). Seeded and deterministic, like every demo model.

    python -m tools.demo_models --only demo-hazard-classifier-tflite [--overwrite]
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.manifest import InputSpec, Quantization
from tools.bundle import sha256_hex, write_bundle

logger = logging.getLogger(__name__)

TFLITE_CLASSIFIER_NAME = "demo-hazard-classifier-tflite"
ONNX_VERSION = "1.0.0-onnx"
FP32_VERSION = "1.0.0-fp32"
INT8_VERSION = "1.0.0-int8"
ONNX_INT8_VERSION = "1.0.0-onnx-int8"
TFLITE_FILE = "model.tflite"
SD_FLOOR = 0.05
"""Floor on a feature's standard deviation when standardising (features are colour responses
of pixels in [0, 1], pooled: 0.05 is ~13 int8 steps of 1/255)."""


def build_demo_tflite_classifier(
    out_root: Path,
    overwrite: bool = False,
    *,
    seed: int = 0,
    n_per_class: int = 600,
    n_heldout_per_class: int = 200,
    n_calibration_per_class: int = 50,
    workers: int | None = None,
) -> Path:
    """Train the network, write the four bundles under ``<out_root>/<name>/`` and return the
    ONNX one's directory (the other three are its siblings)."""
    from tools import demo_models as dm
    from tools.onnx_builders import mlp_classifier_onnx, pooled_features, serialize
    from tools.scenes import SCENE_KINDS
    from tools.tflite_export import onnx_int8_qdq, onnx_to_tflite, run_tflite

    if n_calibration_per_class < 20:
        raise ValueError(f"need n_calibration_per_class >= 20, got {n_calibration_per_class}")
    started = time.perf_counter()
    workers = max(1, min(2, os.cpu_count() or 1)) if workers is None else workers
    # the calibration stream as the demo classifier draws it: its first 20 scenes per class give
    # the same mean/std (so the same preprocessing); all of them are the int8 calibration set
    identity = dm.classifier_input_spec([0.0] * 3, [1.0] * 3)
    calib, _ = dm.render_classifier_set(
        identity, n_calibration_per_class, seed, dm.CALIBRATION_STREAM, workers
    )
    first = calib[: 20 * len(SCENE_KINDS)]
    mean = [round(float(v), 3) for v in first.mean(axis=(0, 2, 3))]
    std = [round(float(v), 3) for v in first.std(axis=(0, 2, 3))]
    spec = dm.classifier_input_spec(mean, std)
    x_train, y_train = dm.render_classifier_set(spec, n_per_class, seed, dm.TRAIN_STREAM, workers)
    x_held, y_held = dm.render_classifier_set(
        spec, n_heldout_per_class, seed, dm.HELDOUT_STREAM, workers
    )
    rendered = time.perf_counter()

    colour_w, colour_b = dm.bank_weights(dm.CLASSIFIER_BANK, mean, std)
    features = np.concatenate(
        [
            pooled_features(x_train, dm.CLASSIFIER_POOL, colour_w, colour_b),
            pooled_features(x_train[..., ::-1], dm.CLASSIFIER_POOL, colour_w, colour_b),
        ]
    )
    mu = features.mean(axis=0)
    sd = np.maximum(features.std(axis=0), SD_FLOOR)
    weights = dm.train_mlp(
        (features - mu) / sd, np.concatenate([y_train, y_train]), len(SCENE_KINDS), seed=seed
    )
    w1 = weights.w1 / sd[:, None]
    b1 = weights.b1 - mu @ w1
    onnx_model = mlp_classifier_onnx(
        w1,
        b1,
        weights.w2,
        weights.b2,
        input_hw=spec.spatial_size(),
        pool=dm.CLASSIFIER_POOL,
        colour_w=colour_w,
        colour_b=colour_b,
    )
    onnx_bytes = serialize(onnx_model)
    representative = (
        (calib - np.asarray(mean)[:, None, None]) / np.asarray(std)[:, None, None]
    ).astype(np.float32)
    fp32_bytes = onnx_to_tflite(onnx_model)
    int8_bytes = onnx_to_tflite(onnx_model, representative)
    onnx_int8_bytes = onnx_int8_qdq(onnx_model, representative)
    accuracy = {
        ONNX_VERSION: dm.classifier_accuracy(onnx_bytes, x_held, y_held),
        ONNX_INT8_VERSION: dm.classifier_accuracy(onnx_int8_bytes, x_held, y_held),
        FP32_VERSION: _accuracy(run_tflite(fp32_bytes, x_held), y_held),
        INT8_VERSION: _accuracy(run_tflite(int8_bytes, x_held), y_held),
    }
    logger.info(
        "%s: rendered %d scenes in %.1f s, trained and converted in %.1f s; heldout accuracy %s",
        TFLITE_CLASSIFIER_NAME,
        len(calib) + len(x_train) + len(x_held),
        rendered - started,
        time.perf_counter() - rendered,
        accuracy,
    )

    hidden = w1.shape[1]
    common: dict[str, Any] = {
        "description": "The demo smoke/fire classifier's network, encoded as ONNX, float32 "
        "TFLite and full-int8 TFLite with the same weights, for parity tests and demos on "
        "LiteRT. Trained on synthetic scenes (tools.scenes); not for real-world safety use.",
        "labels": list(SCENE_KINDS),
        "postprocess": {"type": "classify", "softmax": False, "top_k": len(SCENE_KINDS)},
    }
    provenance: dict[str, Any] = {
        "generator": "tools.demo_tflite_models",
        "seed": seed,
        "n_train": len(x_train),
        "augmentation": "horizontal flip",
        "n_heldout": len(x_held),
        "feature_sd_floor": SD_FLOOR,
        "architecture": f"Conv1x1(3->{len(colour_b)}, fixed colour bank) -> Relu -> "
        f"AveragePool{dm.CLASSIFIER_POOL} -> Gemm({w1.shape[0]}->{hidden}) -> Relu -> "
        f"Gemm({hidden}->{len(SCENE_KINDS)}) -> Softmax",
        "frame_size": list(dm.FRAME_SIZE),
        "onnx_twin": {"version": ONNX_VERSION, "sha256": sha256_hex(onnx_bytes)},
    }
    nhwc = [1, *spec.spatial_size(), 3]
    onnx_fields = {
        **common,
        "inputs": [spec.model_dump(mode="json", exclude_none=True)],
        "outputs": [{"name": "probs", "shape": [1, len(SCENE_KINDS)], "dtype": "float32"}],
    }
    onnx_path = write_bundle(
        out_root,
        TFLITE_CLASSIFIER_NAME,
        ONNX_VERSION,
        onnx_bytes,
        {
            **onnx_fields,
            "provenance": {**provenance, "heldout_accuracy": round(accuracy[ONNX_VERSION], 4)},
        },
        overwrite=overwrite,
    )
    write_bundle(
        out_root,
        TFLITE_CLASSIFIER_NAME,
        ONNX_INT8_VERSION,
        onnx_int8_bytes,
        {
            **onnx_fields,
            "provenance": {
                **provenance,
                "heldout_accuracy": round(accuracy[ONNX_INT8_VERSION], 4),
                "quantization": "onnxruntime quantize_static (tools.tflite_export.onnx_int8_qdq): "
                f"QDQ, per-channel int8 weights, uint8 activations, MinMax over "
                f"{len(representative)} calibration scenes",
            },
        },
        overwrite=overwrite,
    )
    for version, model_bytes in ((FP32_VERSION, fp32_bytes), (INT8_VERSION, int8_bytes)):
        write_bundle(
            out_root,
            TFLITE_CLASSIFIER_NAME,
            version,
            model_bytes,
            {
                **common,
                **_tflite_io_fields(model_bytes, spec, nhwc),
                "backend": "litert",
                "provenance": {
                    **provenance,
                    "heldout_accuracy": round(accuracy[version], 4),
                    "converter": _converter_note(version, len(representative)),
                },
            },
            overwrite=overwrite,
            file_name=TFLITE_FILE,
        )
    return onnx_path


def _accuracy(probs: NDArray[np.float32], labels: NDArray[np.int64]) -> float:
    return float(np.mean(probs.argmax(axis=1) == labels))


def _tflite_io_fields(model_bytes: bytes, spec: InputSpec, nhwc: list[int]) -> dict[str, Any]:
    """Manifest inputs/outputs from the model itself: dtypes, and int8 scales/zero points."""
    from tools.tflite_export import tflite_io

    (inp,), outputs = tflite_io(model_bytes)
    if list(inp.shape) != nhwc:
        raise ValueError(f"converted model takes {list(inp.shape)}, expected {nhwc}")
    input_spec = spec.model_copy(
        update={
            "shape": nhwc,
            "layout": "NHWC",
            "dtype": inp.dtype,
            "quantization": None
            if inp.quantization is None
            else Quantization(scale=inp.quantization[0], zero_point=inp.quantization[1]),
        }
    )
    return {
        "inputs": [input_spec.model_dump(mode="json", exclude_none=True)],
        "outputs": [
            {
                "name": out.name,
                "shape": list(out.shape),
                "dtype": out.dtype,
                **({"quantization": _quant(out.quantization)} if out.quantization else {}),
            }
            for out in outputs
        ],
    }


def _quant(q: tuple[float, int] | None) -> dict[str, float | int] | None:
    return None if q is None else {"scale": q[0], "zero_point": q[1]}


def _converter_note(version: str, n_representative: int) -> str:
    import tensorflow as tf  # type: ignore[import-untyped]

    tf_version = tf.__version__
    if version == INT8_VERSION:
        return (
            f"tensorflow {tf_version} TFLiteConverter from the ONNX twin (tools.tflite_export): "
            f"full int8, {n_representative} calibration scenes"
        )
    return f"tensorflow {tf_version} TFLiteConverter from the ONNX twin (tools.tflite_export)"
