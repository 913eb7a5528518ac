"""Real test videos and image folders whose frames say which frame they are.

Each frame encodes its index in binary as eight black/white blocks (4 columns x 2 rows), which
survives lossy mp4v compression, so a test can check exactly WHICH frame a source delivered.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

WIDTH, HEIGHT = 160, 120
_COLS, _ROWS = 4, 2
MAX_INDEX = 2 ** (_COLS * _ROWS) - 1


def frame_image(index: int, width: int = WIDTH, height: int = HEIGHT) -> NDArray[np.uint8]:
    """A BGR frame whose blocks spell ``index`` in binary (block 0 = least significant bit)."""
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"frame index must be in 0..{MAX_INDEX}, got {index}")
    image = np.zeros((height, width, 3), dtype=np.uint8)
    bw, bh = width // _COLS, height // _ROWS
    for bit in range(_COLS * _ROWS):
        if index >> bit & 1:
            row, col = divmod(bit, _COLS)
            image[row * bh : (row + 1) * bh, col * bw : (col + 1) * bw] = 255
    return image


def frame_index(image: NDArray[np.uint8]) -> int:
    """The index ``frame_image`` encoded, read back from a (possibly compressed) frame."""
    height, width = image.shape[:2]
    bw, bh = width // _COLS, height // _ROWS
    index = 0
    for bit in range(_COLS * _ROWS):
        row, col = divmod(bit, _COLS)
        # the block's centre, away from compression ringing at the edges
        block = image[
            row * bh + bh // 4 : (row + 1) * bh - bh // 4,
            col * bw + bw // 4 : (col + 1) * bw - bw // 4,
        ]
        if float(block.mean()) > 127:
            index |= 1 << bit
    return index


def write_video(path: Path, frames: int, fps: float = 30.0) -> Path:
    """An mp4v video of ``frames`` frames numbered 0..frames-1."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter cannot write {path} with mp4v")
    try:
        for i in range(frames):
            writer.write(frame_image(i))
    finally:
        writer.release()
    return path


def write_images(folder: Path, indices: list[int], suffix: str = ".png") -> list[Path]:
    """One image per index, named so that name order is index order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in indices:
        path = folder / f"frame_{i:03d}{suffix}"
        if not cv2.imwrite(str(path), frame_image(i)):
            raise RuntimeError(f"cv2.imwrite cannot write {path}")
        paths.append(path)
    return paths
