"""Synthetic factory-camera scenes drawn with OpenCV: a conveyor belt with cardboard boxes, and
optionally smoke, fire or hazard objects (traffic cones, spills).

Every random choice comes from the ``numpy.random.Generator`` passed in, so a seed gives the same
pixels on every run. A scene is drawn in three steps: a static :class:`Layout` (the camera's view:
wall, floor, belt, boxes, lighting, noise level), an optional effect (:class:`Plume` for smoke,
:class:`Flame` for fire, drawn at time ``t``) and per-frame sensor noise and camera shake.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar, get_args

import cv2
import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

SceneKind = Literal["normal", "smoke", "fire"]
SCENE_KINDS: tuple[SceneKind, ...] = get_args(SceneKind)
BoxXYXY = tuple[float, float, float, float]
"""x1, y1, x2, y2 in frame pixels."""

DEFAULT_SEGMENTS: tuple[tuple[SceneKind, float], ...] = (
    ("normal", 4.0),
    ("fire", 3.0),
    ("normal", 3.0),
    ("smoke", 3.0),
    ("normal", 3.0),
)

_EFFECT_SCALE = 4  # smoke and flames are computed at 1/4 resolution, then upsampled
_BGR = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class CardboardBox:
    x0: float  # left edge at t=0, frame pixels
    width: int
    height: int
    color: _BGR  # BGR of the front face


@dataclass(frozen=True, slots=True)
class Layout:
    """The static part of a camera's view; moving parts are functions of ``t``."""

    width: int
    height: int
    wall_top: tuple[float, float, float]
    wall_bottom: tuple[float, float, float]
    floor_y: int
    floor_color: tuple[float, float, float]
    belt_top: int
    belt_bottom: int
    belt_color: tuple[float, float, float]
    slat_period: int
    belt_speed: float  # pixels per second, positive = to the right
    boxes: tuple[CardboardBox, ...]
    pipe_y: int
    safety_stripe: bool
    gain: float
    tint: tuple[float, float, float]
    light_x: float  # light centre, fraction of width / height
    light_y: float
    falloff: float
    noise_sigma: float
    shake_px: float
    shake_phase: float


@dataclass(frozen=True, slots=True)
class Plume:
    """A rising column of grey translucent smoke."""

    x: float  # source, frame pixels
    y: float
    rise_px: float  # how far the column rises
    spread_px: float  # puff radius at the source
    opacity: float
    grey: float
    drift_px: float  # sideways offset of the top of the column
    rise_speed: float  # column fractions per second
    n_puffs: int
    phase: float


@dataclass(frozen=True, slots=True)
class Flame:
    """A flickering fire: several tongues over a hot base, with an orange glow and maybe smoke."""

    x: float  # base centre, frame pixels
    y: float
    width_px: float
    height_px: float
    flicker_hz: float
    tongue_offsets: tuple[float, ...]  # fractions of the width
    tongue_phases: tuple[float, ...]
    glow: float
    smoke: Plume | None


@dataclass(frozen=True, slots=True)
class Hazard:
    """An object the demo detector must find; its box is measured from the drawn pixels."""

    kind: Literal["cone", "spill"]
    x: float  # cone: base centre; spill: centre
    y: float
    width_px: float
    height_px: float
    color: _BGR
    angle: float  # spill rotation, degrees
    blobs: tuple[tuple[float, float, float], ...]  # spill lobes: dx, dy (fractions), radius


# --------------------------------------------------------------------------- sampling


def _check_size(width: int, height: int) -> None:
    if width < 64 or height < 48:
        raise ValueError(f"scene size must be at least 64x48 pixels, got {width}x{height}")


def sample_layout(rng: np.random.Generator, width: int = 640, height: int = 480) -> Layout:
    """A random but plausible camera view of a conveyor belt."""
    _check_size(width, height)
    wall_base = rng.uniform(95, 185)
    warm = rng.uniform(-12, 12)
    wall_top = (wall_base - warm + 8, wall_base + 4, wall_base + warm)
    wall_bottom = tuple(c * rng.uniform(0.75, 0.95) for c in wall_top)
    floor_y = int(height * rng.uniform(0.40, 0.50))
    floor_grey = rng.uniform(60, 110)
    floor_color = (floor_grey + rng.uniform(-5, 10), floor_grey, floor_grey - rng.uniform(0, 8))
    belt_top = int(height * rng.uniform(0.52, 0.60))
    belt_bottom = belt_top + int(height * rng.uniform(0.11, 0.16))
    if rng.random() < 0.5:  # blue-grey rubber belt
        belt_color = (rng.uniform(90, 130), rng.uniform(70, 95), rng.uniform(50, 70))
    else:  # plain grey
        g = rng.uniform(55, 95)
        belt_color = (g + 3, g, g - 2)
    speed = rng.uniform(25, 70) * (1 if rng.random() < 0.8 else -1)
    n_boxes = int(rng.integers(1, 5))
    span = width + 200
    boxes = []
    for i in range(n_boxes):
        bw = int(rng.uniform(0.09, 0.2) * width)
        bh = int(bw * rng.uniform(0.5, 0.95))
        tone = rng.uniform(0.8, 1.15)
        color = (
            int(np.clip(85 * tone + rng.uniform(-8, 8), 0, 255)),
            int(np.clip(130 * tone + rng.uniform(-8, 8), 0, 255)),
            int(np.clip(168 * tone + rng.uniform(-8, 8), 0, 255)),
        )
        x0 = span * (i + rng.uniform(0.0, 0.6)) / n_boxes
        boxes.append(CardboardBox(x0=x0, width=bw, height=bh, color=color))
    tint_shift = rng.uniform(-0.06, 0.06)
    return Layout(
        width=width,
        height=height,
        wall_top=(float(wall_top[0]), float(wall_top[1]), float(wall_top[2])),
        wall_bottom=(float(wall_bottom[0]), float(wall_bottom[1]), float(wall_bottom[2])),
        floor_y=floor_y,
        floor_color=floor_color,
        belt_top=belt_top,
        belt_bottom=belt_bottom,
        belt_color=belt_color,
        slat_period=int(rng.integers(18, 40)),
        belt_speed=float(speed),
        boxes=tuple(boxes),
        pipe_y=int(floor_y * rng.uniform(0.15, 0.55)),
        safety_stripe=bool(rng.random() < 0.6),
        gain=float(rng.uniform(0.7, 1.25)),
        tint=(1.0 - tint_shift, 1.0, 1.0 + tint_shift),
        light_x=float(rng.uniform(0.2, 0.8)),
        light_y=float(rng.uniform(-0.2, 0.4)),
        falloff=float(rng.uniform(0.1, 0.45)),
        noise_sigma=float(rng.uniform(1.5, 6.0)),
        shake_px=float(rng.uniform(0.0, 2.5)),
        shake_phase=float(rng.uniform(0, 2 * math.pi)),
    )


def sample_plume(
    rng: np.random.Generator,
    layout: Layout,
    source: tuple[float, float] | None = None,
    strength: float = 1.0,
) -> Plume:
    w, h = layout.width, layout.height
    if source is None:
        source = (rng.uniform(0.15, 0.85) * w, rng.uniform(layout.belt_top, 0.95 * h))
    return Plume(
        x=float(source[0]),
        y=float(source[1]),
        rise_px=float(rng.uniform(0.45, 0.8) * h),
        spread_px=float(rng.uniform(0.05, 0.09) * w),
        opacity=float(np.clip(rng.uniform(0.5, 0.85) * strength, 0.05, 0.9)),
        grey=float(rng.uniform(125, 215)),
        drift_px=float(rng.uniform(-0.15, 0.15) * w),
        rise_speed=float(rng.uniform(0.1, 0.3)),
        n_puffs=int(rng.integers(9, 15)),
        phase=float(rng.uniform(0, 1)),
    )


def sample_flame(rng: np.random.Generator, layout: Layout) -> Flame:
    w, h = layout.width, layout.height
    fw = rng.uniform(0.09, 0.22) * w
    fh = fw * rng.uniform(1.2, 2.2)
    x = rng.uniform(0.12, 0.88) * w
    y = rng.uniform(layout.belt_top + 0.3 * (layout.belt_bottom - layout.belt_top), 0.96 * h)
    n = int(rng.integers(3, 7))
    smoke = None
    if rng.random() < 0.5:
        smoke = sample_plume(rng, layout, source=(x, y - 0.8 * fh), strength=0.6)
    return Flame(
        x=float(x),
        y=float(y),
        width_px=float(fw),
        height_px=float(fh),
        flicker_hz=float(rng.uniform(1.5, 4.0)),
        tongue_offsets=tuple(float(v) for v in rng.uniform(-0.35, 0.35, n)),
        tongue_phases=tuple(float(v) for v in rng.uniform(0, 2 * math.pi, n)),
        glow=float(rng.uniform(25, 70)),
        smoke=smoke,
    )


def sample_effect(
    kind: SceneKind, rng: np.random.Generator, layout: Layout
) -> Plume | Flame | None:
    if kind == "normal":
        return None
    if kind == "smoke":
        return sample_plume(rng, layout)
    if kind == "fire":
        return sample_flame(rng, layout)
    raise ValueError(f"unknown scene kind {kind!r}; expected one of: {', '.join(SCENE_KINDS)}")


# --------------------------------------------------------------------------- drawing


def _draw_layout(layout: Layout, t: float) -> NDArray[np.uint8]:
    w, h = layout.width, layout.height
    img = np.empty((h, w, 3), dtype=np.uint8)
    ramp = np.linspace(0.0, 1.0, layout.floor_y, dtype=np.float32)[:, None]
    wall = (1 - ramp) * np.asarray(layout.wall_top, np.float32) + ramp * np.asarray(
        layout.wall_bottom, np.float32
    )
    img[: layout.floor_y] = np.clip(wall, 0, 255).astype(np.uint8)[:, None, :]
    floor_rows = h - layout.floor_y
    shade = np.linspace(1.0, 0.8, floor_rows, dtype=np.float32)[:, None]
    floor = shade * np.asarray(layout.floor_color, np.float32)
    img[layout.floor_y :] = np.clip(floor, 0, 255).astype(np.uint8)[:, None, :]
    # skirting line, a wall pipe with a highlight, a wall panel
    cv2.line(img, (0, layout.floor_y), (w, layout.floor_y), (40, 40, 45), max(2, h // 160))
    pipe_t = max(4, h // 50)
    cv2.line(img, (0, layout.pipe_y), (w, layout.pipe_y), (120, 125, 128), pipe_t)
    cv2.line(
        img, (0, layout.pipe_y - pipe_t // 3), (w, layout.pipe_y - pipe_t // 3), (185, 190, 192), 1
    )
    if layout.safety_stripe:
        sy = min(h - 3, layout.belt_bottom + int(0.07 * h))
        cv2.line(img, (0, sy), (w, sy), (20, 190, 215), max(3, h // 80))
    # conveyor legs, belt, moving slats, rails
    leg_w = max(4, w // 60)
    for lx in range(w // 10, w, w // 4):
        cv2.rectangle(
            img,
            (lx, layout.belt_bottom),
            (lx + leg_w, min(h - 1, layout.belt_bottom + h // 7)),
            (50, 52, 55),
            -1,
        )
    belt = tuple(int(c) for c in layout.belt_color)
    cv2.rectangle(img, (0, layout.belt_top), (w, layout.belt_bottom), belt, -1)
    slat = tuple(int(c * 0.75) for c in layout.belt_color)
    offset = (layout.belt_speed * t) % layout.slat_period
    for sx in np.arange(offset - layout.slat_period, w + layout.slat_period, layout.slat_period):
        x = int(sx)
        cv2.line(img, (x, layout.belt_top), (x, layout.belt_bottom), slat, 2)
    rail = max(3, h // 90)
    cv2.rectangle(img, (0, layout.belt_top - rail), (w, layout.belt_top), (165, 168, 170), -1)
    cv2.rectangle(img, (0, layout.belt_bottom), (w, layout.belt_bottom + rail), (110, 112, 115), -1)
    # boxes ride on the belt and wrap around
    span = w + 200
    base_y = layout.belt_top + int(0.65 * (layout.belt_bottom - layout.belt_top))
    for box in layout.boxes:
        x = int((box.x0 + layout.belt_speed * t) % span) - 200
        _draw_box(img, x, base_y, box)
    return img


def _draw_box(img: NDArray[np.uint8], x: int, base_y: int, box: CardboardBox) -> None:
    depth = max(3, box.height // 4)
    top = base_y - box.height
    front = box.color
    lid = tuple(min(255, int(c * 1.18)) for c in front)
    side = tuple(int(c * 0.72) for c in front)
    lid_poly = np.array(
        [
            (x, top),
            (x + depth, top - depth),
            (x + box.width + depth, top - depth),
            (x + box.width, top),
        ],
        np.int32,
    )
    side_poly = np.array(
        [
            (x + box.width, top),
            (x + box.width + depth, top - depth),
            (x + box.width + depth, base_y - depth),
            (x + box.width, base_y),
        ],
        np.int32,
    )
    cv2.fillConvexPoly(img, side_poly, side)
    cv2.fillConvexPoly(img, lid_poly, lid)
    cv2.rectangle(img, (x, top), (x + box.width, base_y), front, -1)
    tape = (150, 185, 205)
    mid = x + box.width // 2
    cv2.rectangle(
        img, (mid - box.width // 12, top), (mid + box.width // 12, top + box.height // 3), tape, -1
    )
    cv2.rectangle(img, (x, top), (x + box.width, base_y), tuple(int(c * 0.55) for c in front), 1)


def _lighting(layout: Layout, t: float) -> NDArray[np.float32]:
    """Per-pixel BGR gain: overall level, a soft light falloff, colour tint and slight flicker.

    It is smooth, so it is computed on a coarse grid and upsampled.
    """
    w, h = layout.width, layout.height
    cw, ch = max(2, w // 16), max(2, h // 16)
    xs = ((np.arange(cw, dtype=np.float32) + 0.5) / cw - layout.light_x) ** 2
    ys = ((np.arange(ch, dtype=np.float32) + 0.5) / ch - layout.light_y) ** 2
    flicker = 1.0 + 0.015 * math.sin(2 * math.pi * 0.7 * t + layout.shake_phase)
    g = layout.gain * flicker * (1.0 - layout.falloff * (ys[:, None] + xs[None, :]))
    coarse = np.clip(g, 0.2, 2.0)[:, :, None] * np.asarray(layout.tint, np.float32)
    out = cv2.resize(coarse.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return np.asarray(out, dtype=np.float32)


def _puffs(
    plume: Plume, t: float, rng: np.random.Generator
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """Centres, radii and opacities of the smoke puffs at time ``t`` (frame pixels)."""
    i = np.arange(plume.n_puffs, dtype=np.float32)
    f = (i / plume.n_puffs + plume.phase + plume.rise_speed * t) % 1.0
    wobble = np.sin(2 * np.pi * (f * 2.0 + plume.phase) + i) * plume.spread_px * 0.4
    px = plume.x + plume.drift_px * f**1.5 + wobble + rng.normal(0, 2.0, plume.n_puffs)
    py = plume.y - plume.rise_px * f
    pr = plume.spread_px * (0.7 + 2.2 * f)
    pa = plume.opacity * np.minimum(1.0, f * 6.0) * (1.0 - f) ** 0.8
    return (
        px.astype(np.float32),
        py.astype(np.float32),
        pr.astype(np.float32),
        pa.astype(np.float32),
    )


def _smoke_alpha(
    plume: Plume, t: float, rng: np.random.Generator, width: int, height: int
) -> NDArray[np.float32]:
    s = _EFFECT_SCALE
    lw, lh = width // s, height // s
    gx = (np.arange(lw, dtype=np.float32) + 0.5) * s
    gy = (np.arange(lh, dtype=np.float32) + 0.5) * s
    px, py, pr, pa = _puffs(plume, t, rng)
    keep = 1.0 - np.zeros((lh, lw), np.float32)
    for x, y, r, a in zip(px, py, pr, pa, strict=True):
        d2 = ((gy[:, None] - y) ** 2 + (gx[None, :] - x) ** 2) / (2 * r * r)
        keep *= 1.0 - a * np.exp(-d2)
    texture = rng.uniform(0.75, 1.25, (lh // 4 + 2, lw // 4 + 2)).astype(np.float32)
    texture = np.asarray(
        cv2.resize(texture, (lw, lh), interpolation=cv2.INTER_CUBIC), dtype=np.float32
    )
    alpha = np.clip((1.0 - keep) * texture, 0.0, 0.95)
    out = cv2.resize(alpha, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.asarray(out, dtype=np.float32)


def _blend_smoke(
    img: NDArray[np.float32], plume: Plume, t: float, rng: np.random.Generator
) -> None:
    h, w = img.shape[:2]
    alpha = _smoke_alpha(plume, t, rng, w, h)[:, :, None]
    img *= 1.0 - alpha
    img += alpha * np.float32(plume.grey)


_FIRE_STOPS = np.array([0.0, 0.25, 0.55, 0.85, 1.2], np.float32)
_FIRE_COLORS = np.array(  # BGR: dark red -> orange -> yellow -> near white
    [[0, 20, 120], [0, 60, 210], [10, 140, 255], [60, 220, 255], [190, 250, 255]], np.float32
)


def _draw_flame(img: NDArray[np.float32], flame: Flame, t: float, rng: np.random.Generator) -> None:
    h, w = img.shape[:2]
    s = _EFFECT_SCALE
    lw, lh = w // s, h // s
    gx = (np.arange(lw, dtype=np.float32) + 0.5) * s
    gy = (np.arange(lh, dtype=np.float32) + 0.5) * s
    heat = np.zeros((lh, lw), np.float32)
    fw, fh = flame.width_px, flame.height_px
    base_d2 = ((gx[None, :] - flame.x) / (0.45 * fw)) ** 2 + (
        (gy[:, None] - flame.y) / (0.12 * fh)
    ) ** 2
    heat += 1.0 * np.exp(-base_d2)
    for off, ph in zip(flame.tongue_offsets, flame.tongue_phases, strict=True):
        flick = (
            0.65 + 0.35 * math.sin(2 * math.pi * flame.flicker_hz * t + ph) + rng.normal(0, 0.06)
        )
        th = fh * max(0.25, flick)
        tx = flame.x + off * fw + 0.08 * fw * math.sin(3.1 * t + ph)
        cy = flame.y - 0.45 * th
        sx = 0.22 * fw * (1.0 - 0.3 * abs(off))
        d2 = ((gx[None, :] - tx) / sx) ** 2 + ((gy[:, None] - cy) / (0.5 * th)) ** 2
        heat += 0.85 * np.exp(-d2 * 1.3)
    heat *= np.asarray(rng.uniform(0.85, 1.15, heat.shape), dtype=np.float32)
    heat = cv2.GaussianBlur(heat, (0, 0), 1.0)
    color = np.stack(
        [np.interp(heat, _FIRE_STOPS, _FIRE_COLORS[:, c]) for c in range(3)], axis=-1
    ).astype(np.float32)
    alpha = np.clip((heat - 0.12) * 2.2, 0.0, 1.0)[:, :, None]
    glow_amp = flame.glow * (0.85 + 0.15 * math.sin(2 * math.pi * flame.flicker_hz * 0.7 * t))
    glow = (np.exp(-base_d2 / 40.0) * glow_amp)[:, :, None] * np.array([0.25, 0.7, 1.0], np.float32)
    rgb = color * alpha
    full_alpha = cv2.resize(alpha[:, :, 0], (w, h), interpolation=cv2.INTER_LINEAR)[:, :, None]
    full_rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
    full_glow = cv2.resize(glow.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    img += full_glow
    img *= 1.0 - full_alpha
    img += full_rgb


def _shake(layout: Layout, t: float, rng: np.random.Generator) -> NDArray[np.float64] | None:
    if layout.shake_px <= 0:
        return None
    ph = layout.shake_phase
    dx = layout.shake_px * math.sin(2 * math.pi * 1.7 * t + ph) + rng.normal(0, 0.3)
    dy = layout.shake_px * math.cos(2 * math.pi * 2.3 * t + ph) + rng.normal(0, 0.3)
    angle = 0.3 * math.sin(2 * math.pi * 0.9 * t + ph)
    m = np.asarray(
        cv2.getRotationMatrix2D((layout.width / 2, layout.height / 2), angle, 1.0), np.float64
    )
    m[:, 2] += np.array([dx, dy])
    return m


def draw_scene(
    layout: Layout,
    effect: Plume | Flame | None,
    t: float,
    rng: np.random.Generator,
    *,
    hazards: Sequence[Hazard] = (),
    shake: bool = True,
) -> NDArray[np.uint8]:
    """Render one frame of ``layout`` with ``effect`` at time ``t``; ``rng`` drives noise/jitter."""
    base = _draw_layout(layout, t)
    for hazard in hazards:
        _draw_hazard(base, hazard)
    img = base.astype(np.float32)
    plume = effect if isinstance(effect, Plume) else None
    if isinstance(effect, Flame):
        plume = effect.smoke
    if plume is not None:
        _blend_smoke(img, plume, t, rng)
    cv2.multiply(img, _lighting(layout, t), dst=img)
    if isinstance(effect, Flame):
        _draw_flame(img, effect, t, rng)
    out = np.asarray(cv2.convertScaleAbs(img), np.uint8)  # img >= 0: saturate and round
    m = _shake(layout, t, rng) if shake else None
    if m is not None:
        out = np.asarray(
            cv2.warpAffine(
                out,
                m,
                (layout.width, layout.height),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT,
            ),
            np.uint8,
        )
    return _add_sensor_noise(out, layout.noise_sigma, rng)


_UNIFORM_INT8_STD = math.sqrt((256**2 - 1) / 12)


def _add_sensor_noise(
    img: NDArray[np.uint8], sigma: float, rng: np.random.Generator
) -> NDArray[np.uint8]:
    """Zero-mean uniform noise of standard deviation ``sigma``, saturated back to uint8."""
    raw = np.frombuffer(rng.bytes(img.size), dtype=np.int8).reshape(img.shape)
    out = cv2.addWeighted(img, 1.0, raw, sigma / _UNIFORM_INT8_STD, 0.0, dtype=cv2.CV_8U)
    return np.asarray(out, dtype=np.uint8)


def render_scene(
    kind: SceneKind,
    rng: np.random.Generator,
    width: int = 640,
    height: int = 480,
    t: float = 0.0,
) -> NDArray[np.uint8]:
    """A fresh random scene of ``kind`` ("normal", "smoke" or "fire") as a BGR uint8 image."""
    if kind not in SCENE_KINDS:
        raise ValueError(f"unknown scene kind {kind!r}; expected one of: {', '.join(SCENE_KINDS)}")
    layout = sample_layout(rng, width, height)
    effect = sample_effect(kind, rng, layout)
    return draw_scene(layout, effect, t, rng)


# --------------------------------------------------------------------------- hazards (detector)

_CONE_STRIPE = (235, 235, 235)


def sample_hazard(rng: np.random.Generator, layout: Layout) -> Hazard:
    """A traffic cone (70%) or an orange-red spill (30%) on the floor in front of the belt."""
    w, h = layout.width, layout.height
    y_min = layout.belt_bottom + 0.05 * h
    if rng.random() < 0.7:
        y = rng.uniform(y_min, h - 3)
        depth = (y - layout.floor_y) / (h - layout.floor_y)
        ch = rng.uniform(0.13, 0.26) * h * (0.6 + 0.5 * depth)
        cw = ch * rng.uniform(0.6, 0.8)
        color = (int(rng.uniform(0, 30)), int(rng.uniform(90, 150)), int(rng.uniform(225, 255)))
        x = rng.uniform(cw / 2 + 2, w - cw / 2 - 2)
        return Hazard("cone", float(x), float(y), float(cw), float(ch), color, 0.0, ())
    sw = rng.uniform(0.1, 0.24) * w
    sh = sw * rng.uniform(0.25, 0.4)
    lo, hi = y_min + sh / 2, h - sh / 2 - 2
    y = rng.uniform(lo, max(lo, hi))
    x = rng.uniform(sw / 2 + 2, w - sw / 2 - 2)
    color = (int(rng.uniform(10, 45)), int(rng.uniform(50, 100)), int(rng.uniform(190, 240)))
    blobs = tuple(
        (
            float(rng.uniform(-0.35, 0.35)),
            float(rng.uniform(-0.25, 0.25)),
            float(rng.uniform(0.15, 0.3)),
        )
        for _ in range(int(rng.integers(2, 5)))
    )
    angle = float(rng.uniform(-8, 8))
    return Hazard("spill", float(x), float(y), float(sw), float(sh), color, angle, blobs)


def _hazard_mask(
    hazard: Hazard, width: int, height: int
) -> tuple[NDArray[np.uint8], list[tuple[NDArray[np.int32], _BGR]]]:
    """The hazard's pixel mask and the coloured polygons/ellipses that draw it."""
    mask = np.zeros((height, width), np.uint8)
    parts: list[tuple[NDArray[np.int32], _BGR]] = []
    x, y, cw, ch = hazard.x, hazard.y, hazard.width_px, hazard.height_px
    if hazard.kind == "cone":
        base_h = max(2.0, 0.1 * ch)
        dark = tuple(int(c * 0.55) for c in hazard.color)
        base = np.array(
            [(x - cw / 2, y), (x + cw / 2, y), (x + cw / 2, y - base_h), (x - cw / 2, y - base_h)]
        )
        body = np.array(
            [
                (x - 0.38 * cw, y - base_h),
                (x + 0.38 * cw, y - base_h),
                (x + 0.08 * cw, y - ch),
                (x - 0.08 * cw, y - ch),
            ]
        )
        parts.append((np.round(base).astype(np.int32), (dark[0], dark[1], dark[2])))
        parts.append((np.round(body).astype(np.int32), hazard.color))
        for lo, hi in ((0.35, 0.45), (0.58, 0.66)):
            yl, yh = y - base_h - lo * (ch - base_h), y - base_h - hi * (ch - base_h)
            half_l = 0.38 * cw - (0.30 * cw) * lo
            half_h = 0.38 * cw - (0.30 * cw) * hi
            band = np.array(
                [(x - half_l, yl), (x + half_l, yl), (x + half_h, yh), (x - half_h, yh)]
            )
            parts.append((np.round(band).astype(np.int32), _CONE_STRIPE))
    else:
        outline = cv2.ellipse2Poly(
            (round(x), round(y)), (round(cw / 2), round(ch / 2)), round(hazard.angle), 0, 360, 10
        )
        parts.append((np.asarray(outline, np.int32), hazard.color))
        for dx, dy, r in hazard.blobs:
            centre = (round(x + dx * cw), round(y + dy * ch))
            axes = (max(2, round(r * cw)), max(2, round(r * ch * 1.2)))
            lobe = cv2.ellipse2Poly(centre, axes, round(hazard.angle), 0, 360, 15)
            parts.append((np.asarray(lobe, np.int32), hazard.color))
    for poly, _ in parts:
        cv2.fillPoly(mask, [poly], 255)
    return mask, parts


def _draw_hazard(img: NDArray[np.uint8], hazard: Hazard) -> None:
    h, w = img.shape[:2]
    _, parts = _hazard_mask(hazard, w, h)
    for poly, color in parts:
        cv2.fillPoly(img, [poly], color, lineType=cv2.LINE_AA)
    if hazard.kind == "spill":  # a glossy highlight
        hx, hy = round(hazard.x - 0.15 * hazard.width_px), round(hazard.y - 0.1 * hazard.height_px)
        axes = (max(1, round(0.12 * hazard.width_px)), max(1, round(0.06 * hazard.height_px)))
        cv2.ellipse(img, (hx, hy), axes, hazard.angle, 0, 360, (90, 140, 250), -1, cv2.LINE_AA)


def hazard_box(hazard: Hazard, width: int, height: int) -> BoxXYXY:
    """The tight x1,y1,x2,y2 box of the hazard's drawn pixels (exclusive right/bottom edge)."""
    mask, _ = _hazard_mask(hazard, width, height)
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        raise ValueError(f"hazard {hazard} is entirely outside the {width}x{height} frame")
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


def _iou(a: BoxXYXY, b: BoxXYXY) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def render_detection_scene(
    rng: np.random.Generator, n_objects: int, width: int = 640, height: int = 480
) -> tuple[NDArray[np.uint8], list[BoxXYXY]]:
    """A normal conveyor scene with ``n_objects`` hazards (cones, spills) on the floor.

    Returns the BGR image and the hazards' x1,y1,x2,y2 boxes in frame pixels. Hazards overlap
    each other little (IoU < 0.1); nearer ones are drawn over farther ones.
    """
    if n_objects < 0:
        raise ValueError(f"n_objects must be >= 0, got {n_objects}")
    layout = sample_layout(rng, width, height)
    placed: list[tuple[Hazard, BoxXYXY]] = []
    attempts = 0
    while len(placed) < n_objects:
        attempts += 1
        if attempts > 200 * max(1, n_objects):
            raise ValueError(
                f"could not place {n_objects} non-overlapping hazards in {width}x{height}"
            )
        hazard = sample_hazard(rng, layout)
        box = hazard_box(hazard, width, height)
        if all(_iou(box, other) < 0.1 for _, other in placed):
            placed.append((hazard, box))
    placed.sort(key=lambda hb: hb[1][3])
    image = draw_scene(
        layout, None, float(rng.uniform(0, 10)), rng, hazards=[hz for hz, _ in placed], shake=False
    )
    return image, [box for _, box in placed]


# --------------------------------------------------------------------------- demo video


def labels_path(video: Path) -> Path:
    """Where :func:`write_demo_video` writes the ground-truth segments of ``video``."""
    return video.with_suffix(".labels.json")


def write_demo_video(
    path: Path,
    fps: float = 10,
    segments: Sequence[tuple[SceneKind, float]] = DEFAULT_SEGMENTS,
    size: tuple[int, int] = (640, 480),
    seed: int = 0,
) -> list[tuple[int, int, SceneKind]]:
    """Write an mp4 of one camera view going through ``segments`` of (kind, seconds).

    Returns (first_frame, last_frame, kind) per segment, inclusive frame indices, and writes the
    same list with the video's fps/size/seed to ``<video stem>.labels.json`` next to it.
    """
    for kind, _ in segments:
        if kind not in SCENE_KINDS:
            raise ValueError(
                f"unknown scene kind {kind!r} in segments; expected one of: {', '.join(SCENE_KINDS)}"
            )
    rng = np.random.default_rng(seed)
    layout = sample_layout(rng, *size)

    def frames(kind: SceneKind, first: int, n: int) -> Iterator[NDArray[np.uint8]]:
        effect = sample_effect(kind, rng, layout)
        for i in range(first, first + n):
            yield draw_scene(layout, effect, i / fps, rng)

    written = _write_video(path, fps, size, seed, segments, frames)
    return [(a, b, kind) for a, b, kind, _ in written]


DockKind = Literal["clear", "hazard"]
DEFAULT_DOCK_SEGMENTS: tuple[tuple[DockKind, float], ...] = (
    ("clear", 3.0),
    ("hazard", 4.0),
    ("clear", 3.0),
    ("hazard", 4.0),
    ("clear", 2.0),
)


def write_dock_video(
    path: Path,
    fps: float = 10,
    segments: Sequence[tuple[DockKind, float]] = DEFAULT_DOCK_SEGMENTS,
    size: tuple[int, int] = (640, 480),
    seed: int = 1,
) -> list[tuple[int, int, DockKind, BoxXYXY | None]]:
    """An mp4 of a loading dock floor where a hazard (cone or spill) lies during each ``hazard``
    segment. Returns (first_frame, last_frame, kind, hazard box or None) per segment and writes
    the sidecar ``<video stem>.labels.json``."""
    rng = np.random.default_rng(seed)
    layout = sample_layout(rng, *size)
    boxes: dict[int, BoxXYXY | None] = {}

    def frames(kind: DockKind, first: int, n: int) -> Iterator[NDArray[np.uint8]]:
        hazards = [sample_hazard(rng, layout)] if kind == "hazard" else []
        boxes[first] = hazard_box(hazards[0], *size) if hazards else None
        for i in range(first, first + n):
            yield draw_scene(layout, None, i / fps, rng, hazards=hazards, shake=False)

    written = _write_video(path, fps, size, seed, segments, frames, boxes)
    return [(a, b, kind, boxes[a]) for a, b, kind, _ in written]


K = TypeVar("K", bound=str)


def _write_video(
    path: Path,
    fps: float,
    size: tuple[int, int],
    seed: int,
    segments: Sequence[tuple[K, float]],
    frames: Callable[[K, int, int], Iterator[NDArray[np.uint8]]],
    boxes: Mapping[int, BoxXYXY | None] | None = None,
) -> list[tuple[int, int, K, int]]:
    """Write segments of (kind, seconds) with ``frames(kind, first_index, count)``, then the
    sidecar labels file. Returns (first, last, kind, count) per segment."""
    path = Path(path)
    width, height = size
    _check_size(width, height)
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if not segments:
        raise ValueError("segments must not be empty")
    counts = [round(seconds * fps) for _, seconds in segments]
    for (kind, seconds), n in zip(segments, counts, strict=True):
        if n < 1:
            raise ValueError(
                f"segment ({kind!r}, {seconds}) is shorter than one frame at {fps} fps"
            )
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter.fourcc(*"mp4v"), float(fps), (width, height)
    )
    if not writer.isOpened():
        raise OSError(f"cv2.VideoWriter could not open {path} for mp4v at {width}x{height}")
    result: list[tuple[int, int, K, int]] = []
    first = 0
    try:
        for (kind, _), n in zip(segments, counts, strict=True):
            for image in frames(kind, first, n):
                writer.write(image)
            result.append((first, first + n - 1, kind, n))
            first += n
    finally:
        writer.release()
    sidecar = {
        "video": path.name,
        "fps": fps,
        "width": width,
        "height": height,
        "seed": seed,
        "frame_count": first,
        "segments": [
            {
                "first_frame": a,
                "last_frame": b,
                "kind": k,
                "start_s": a / fps,
                "end_s": (b + 1) / fps,
                **({} if boxes is None else {"box": boxes.get(a)}),
            }
            for a, b, k, _ in result
        ],
    }
    labels_path(path).write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    logger.info("wrote video %s: %d frames, segments %s", path, first, result)
    return result
