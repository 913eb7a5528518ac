"""Preprocessor: resize (stretch/letterbox) geometry, colour order, normalisation, layout, dtype."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from runtime.errors import ModelError
from runtime.manifest import InputSpec, Quantization
from runtime.processing.preprocess import Geometry, Preprocessor

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def spec(width: int = 32, height: int = 32, **kwargs: Any) -> InputSpec:
    layout = kwargs.get("layout", "NCHW")
    shape = [1, 3, height, width] if layout == "NCHW" else [1, height, width, 3]
    return InputSpec(name="images", shape=shape, **kwargs)


def solid(width: int, height: int, bgr: tuple[int, int, int]) -> NDArray[np.uint8]:
    image = np.empty((height, width, 3), np.uint8)
    image[:] = bgr
    return image


def random_image(width: int, height: int, seed: int = 0) -> NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def to_input(geometry: Geometry, box: tuple[float, float, float, float]) -> NDArray[np.float32]:
    """Frame pixels → model-input pixels: the forward of ``Geometry.to_frame``."""
    x1, y1, x2, y2 = box
    sx, sy, px, py = geometry.scale_x, geometry.scale_y, geometry.pad_x, geometry.pad_y
    return np.asarray([[x1 * sx + px, y1 * sy + py, x2 * sx + px, y2 * sy + py]], np.float32)


# ------------------------------------------------------------------------------------ geometry


@pytest.mark.parametrize(
    ("frame_wh", "input_wh", "expected"),
    [
        # frame w, h → input w, h: (scale_x, scale_y, pad_x, pad_y)
        pytest.param((640, 480), (320, 320), (0.5, 0.5, 0.0, 40.0), id="landscape"),
        pytest.param((480, 640), (320, 320), (0.5, 0.5, 40.0, 0.0), id="portrait"),
        pytest.param((100, 100), (320, 320), (3.2, 3.2, 0.0, 0.0), id="upscale-square"),
        pytest.param((320, 320), (320, 320), (1.0, 1.0, 0.0, 0.0), id="same-size"),
        # s = 320/300; nh = round(106.67) = 107, pad (256 - 107) // 2 = 74
        pytest.param((300, 100), (320, 256), (320 / 300, 1.07, 0.0, 74.0), id="rounded"),
        # nh = 256 of 257 rows: the odd spare row goes to the bottom, so pad_y stays 0
        pytest.param((1280, 1024), (320, 257), (0.25, 0.25, 0.0, 0.0), id="exact-fit"),
        # 16 * 1/32 = 0.5 rounds to 0 px: the content is kept one pixel wide, centred
        pytest.param((16, 1024), (32, 32), (1 / 16, 1 / 32, 15.0, 0.0), id="thin-frame"),
    ],
)
def test_letterbox_geometry(
    frame_wh: tuple[int, int],
    input_wh: tuple[int, int],
    expected: tuple[float, float, float, float],
) -> None:
    pre = Preprocessor(spec(*input_wh, resize="letterbox"))
    tensor, geometry = pre(random_image(*frame_wh))
    assert tensor.shape == (1, 3, input_wh[1], input_wh[0])
    assert (geometry.frame_width, geometry.frame_height) == frame_wh
    got = (geometry.scale_x, geometry.scale_y, geometry.pad_x, geometry.pad_y)
    assert got == pytest.approx(expected)


@pytest.mark.parametrize(
    ("frame_wh", "input_wh"),
    [
        ((640, 480), (320, 320)),
        ((64, 48), (32, 32)),
        ((100, 300), (224, 224)),
        ((32, 32), (32, 32)),
    ],
)
def test_stretch_geometry(frame_wh: tuple[int, int], input_wh: tuple[int, int]) -> None:
    tensor, geometry = Preprocessor(spec(*input_wh, resize="stretch"))(random_image(*frame_wh))
    assert tensor.shape == (1, 3, input_wh[1], input_wh[0])
    assert geometry == Geometry(
        frame_wh[0],
        frame_wh[1],
        input_wh[0] / frame_wh[0],
        input_wh[1] / frame_wh[1],
        0.0,
        0.0,
        input_wh[0],
        input_wh[1],
    )


@pytest.mark.parametrize("fill", [0, 114, 255])
def test_letterbox_pads_with_fill_and_keeps_content(fill: int) -> None:
    pre = Preprocessor(
        spec(
            64,
            64,
            resize="letterbox",
            letterbox_fill=fill,
            dtype="uint8",
            color="BGR",
            layout="NHWC",
        )
    )
    image = solid(128, 64, (10, 200, 30))  # 2:1 → 64x32 content, 16 px bands top and bottom
    tensor, geometry = pre(image)
    canvas = tensor[0]
    assert (geometry.pad_x, geometry.pad_y) == (0.0, 16.0)
    assert (canvas[:16] == fill).all()
    assert (canvas[48:] == fill).all()
    assert (canvas[16:48] == (10, 200, 30)).all()


@pytest.mark.parametrize(
    ("resize", "frame_wh", "input_wh", "box"),
    [
        ("letterbox", (640, 480), (320, 320), (100, 120, 300, 360)),
        ("letterbox", (480, 640), (320, 320), (40, 200, 440, 260)),
        ("letterbox", (300, 100), (320, 256), (30, 20, 150, 80)),
        ("stretch", (640, 480), (300, 300), (100, 120, 300, 360)),
        ("stretch", (200, 600), (160, 160), (20, 60, 180, 300)),
    ],
)
def test_box_drawn_in_frame_maps_back_through_geometry(
    resize: str,
    frame_wh: tuple[int, int],
    input_wh: tuple[int, int],
    box: tuple[int, int, int, int],
) -> None:
    """A white rectangle, found again in the tensor, maps back to where it was drawn."""
    x1, y1, x2, y2 = box
    image = np.zeros((frame_wh[1], frame_wh[0], 3), np.uint8)
    image[y1:y2, x1:x2] = 255
    pre = Preprocessor(
        spec(*input_wh, resize=resize, letterbox_fill=0, dtype="uint8", color="BGR", layout="NHWC")
    )
    tensor, geometry = pre(image)
    ys, xs = np.nonzero(tensor[0, :, :, 0].astype(np.int32) > 127)
    found = np.asarray([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
    back = geometry.to_frame(found)[0]
    tolerance = 1.5 / min(geometry.scale_x, geometry.scale_y)  # a pixel of resampling each side
    assert back == pytest.approx(box, abs=tolerance)


@settings(max_examples=60, deadline=None)
@given(
    frame_w=st.integers(16, 1920),
    frame_h=st.integers(16, 1920),
    input_w=st.integers(32, 1024),
    input_h=st.integers(32, 1024),
    resize=st.sampled_from(["stretch", "letterbox"]),
    rel=st.tuples(*[st.floats(0.0, 1.0)] * 4),
)
def test_to_frame_inverts_the_input_mapping(
    *,
    frame_w: int,
    frame_h: int,
    input_w: int,
    input_h: int,
    resize: str,
    rel: tuple[float, float, float, float],
) -> None:
    pre = Preprocessor(spec(input_w, input_h, resize=resize))
    _, geometry = pre(np.zeros((frame_h, frame_w, 3), np.uint8))
    xa, xb = sorted((rel[0] * frame_w, rel[2] * frame_w))
    ya, yb = sorted((rel[1] * frame_h, rel[3] * frame_h))
    back = geometry.to_frame(to_input(geometry, (xa, ya, xb, yb)))[0]
    assert back == pytest.approx((xa, ya, xb, yb), abs=1e-5 * max(frame_w, frame_h) + 1e-3)


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ((-50, -20, 700, 500), (0, 0, 640, 480)),  # clipped on every side
        ((10, 20, 30, 40), (10, 20, 30, 40)),
        ((700, 500, 800, 600), (640, 480, 640, 480)),  # entirely outside → zero area
    ],
)
def test_to_frame_clips_to_the_frame(
    box: tuple[float, float, float, float], expected: tuple[float, ...]
) -> None:
    geometry = Geometry(640, 480, 1.0, 1.0, 0.0, 0.0)
    out = geometry.to_frame(np.asarray([box], np.float32))
    assert out.dtype == np.float32
    assert tuple(out[0].tolist()) == expected


def test_to_frame_accepts_no_boxes_and_leaves_input_alone() -> None:
    geometry = Geometry(640, 480, 0.5, 0.5, 0.0, 40.0)
    assert geometry.to_frame(np.zeros((0, 4), np.float32)).shape == (0, 4)
    boxes = np.asarray([[-10.0, 0.0, 400.0, 400.0]], np.float32)
    geometry.to_frame(boxes)
    assert boxes.tolist() == [[-10.0, 0.0, 400.0, 400.0]]


# ------------------------------------------------------------------------- colour, normalising


@pytest.mark.parametrize(
    ("color", "expected_channels"),
    [("RGB", (0.0, 0.0, 1.0)), ("BGR", (1.0, 0.0, 0.0))],
)
def test_colour_order(color: str, expected_channels: tuple[float, float, float]) -> None:
    image = solid(16, 16, (255, 0, 0))  # pure blue in OpenCV's BGR
    tensor, _ = Preprocessor(spec(16, 16, color=color))(image)
    assert tensor.dtype == np.float32
    for c, value in enumerate(expected_channels):
        assert (tensor[0, c] == np.float32(value)).all()
    assert (image == (255, 0, 0)).all()  # the frame itself is not converted in place


def test_mean_std_normalisation_per_channel() -> None:
    image = solid(8, 8, (10, 20, 30))  # BGR → RGB (30, 20, 10)
    pre = Preprocessor(spec(8, 8, mean=IMAGENET_MEAN, std=IMAGENET_STD))
    tensor, _ = pre(image)
    for c, pixel in enumerate((30, 20, 10)):
        expected = (pixel / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        np.testing.assert_allclose(tensor[0, c], expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("scale", "pixel", "expected"),
    [(1.0, 200, 200.0), (1 / 255, 255, 1.0), (1 / 127.5, 51, 0.4)],
)
def test_scale_without_mean_std(scale: float, pixel: int, expected: float) -> None:
    tensor, _ = Preprocessor(spec(4, 4, scale=scale))(solid(4, 4, (pixel,) * 3))
    assert tensor.dtype == np.float32
    np.testing.assert_allclose(tensor.astype(np.float32), expected, rtol=1e-6)


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_nchw_is_the_transpose_of_nhwc(resize: str) -> None:
    image = random_image(80, 60, seed=3)
    kwargs: dict[str, Any] = {"resize": resize, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    nchw, _ = Preprocessor(spec(48, 32, layout="NCHW", **kwargs))(image)
    nhwc, _ = Preprocessor(spec(48, 32, layout="NHWC", **kwargs))(image)
    assert nchw.shape == (1, 3, 32, 48)
    assert nhwc.shape == (1, 32, 48, 3)
    assert nchw.flags.c_contiguous
    np.testing.assert_array_equal(nchw[0], nhwc[0].transpose(2, 0, 1))


def test_stretch_resamples_like_opencv() -> None:
    image = random_image(64, 48, seed=5)
    tensor, _ = Preprocessor(spec(32, 24, color="BGR", dtype="uint8", layout="NHWC"))(image)
    expected = cv2.resize(image, (32, 24), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(tensor[0], expected)


# -------------------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_float_dtypes(dtype: str) -> None:
    tensor, _ = Preprocessor(spec(4, 4, dtype=dtype))(solid(4, 4, (0, 128, 255)))
    assert tensor.dtype == np.dtype(dtype)
    np.testing.assert_allclose(tensor[0, :, 0, 0].astype(np.float32), [1.0, 128 / 255, 0.0], 1e-3)


def test_uint8_without_quantization_passes_raw_pixels() -> None:
    image = random_image(16, 16, seed=7)
    # scale/mean/std describe float inputs; a plain uint8 input takes the pixels as they are
    tensor, _ = Preprocessor(spec(16, 16, dtype="uint8", layout="NHWC"))(image)
    assert tensor.dtype == np.uint8
    np.testing.assert_array_equal(tensor[0], image[:, :, ::-1])


@pytest.mark.parametrize(
    ("dtype", "spec_kwargs", "pixels", "expected"),
    [
        # x = p/255, q = x / (1/255) - 128 → p - 128
        pytest.param(
            "int8",
            {"quantization": Quantization(scale=1 / 255, zero_point=-128)},
            [0, 1, 128, 255],
            [-128, -127, 0, 127],
            id="int8-full-range",
        ),
        pytest.param(
            "uint8",
            {"quantization": Quantization(scale=1 / 255, zero_point=0)},
            [0, 1, 128, 255],
            [0, 1, 128, 255],
            id="uint8-identity",
        ),
        # q = 2p, clipped at 255
        pytest.param(
            "uint8",
            {"quantization": Quantization(scale=0.5 / 255, zero_point=0)},
            [0, 100, 127, 128, 255],
            [0, 200, 254, 255, 255],
            id="uint8-clipped",
        ),
        # x = (p/255 - 0.5) / 0.25 in [-2, 2]; q = 64 x, rounded, clipped to [-128, 127]
        pytest.param(
            "int8",
            {
                "mean": [0.5] * 3,
                "std": [0.25] * 3,
                "quantization": Quantization(scale=1 / 64, zero_point=0),
            },
            [0, 51, 128, 255],
            [-128, -77, 1, 127],
            id="int8-mean-std-round-clip",
        ),
    ],
)
def test_quantized_inputs(
    dtype: str, spec_kwargs: dict[str, Any], pixels: list[int], expected: list[int]
) -> None:
    image = np.asarray([[[p, p, p] for p in pixels]], np.uint8)  # 1 x len x 3
    pre = Preprocessor(spec(len(pixels), 1, dtype=dtype, layout="NHWC", **spec_kwargs))
    tensor, _ = pre(image)
    assert tensor.dtype == np.dtype(dtype)
    assert tensor[0, 0, :, 0].tolist() == expected


@pytest.mark.parametrize(
    ("spec_kwargs", "message"),
    [
        ({"dtype": "int8"}, "dtype int8 needs quantization"),
        (
            {"dtype": "float32", "quantization": Quantization(scale=0.1, zero_point=0)},
            "quantization applies to int8/uint8 inputs, not float32",
        ),
    ],
)
def test_inconsistent_quantization_is_a_model_error(
    spec_kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        Preprocessor(spec(8, 8, **spec_kwargs))


def test_dynamic_spatial_size_is_rejected() -> None:
    dynamic = InputSpec(name="images", shape=[1, 3, "height", "width"])
    with pytest.raises(ValueError, match="height and width must be fixed"):
        Preprocessor(dynamic)
