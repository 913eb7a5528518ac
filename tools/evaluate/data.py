"""Labelled (or, for calibration, unlabelled) sets preprocessed exactly as a manifest says.

Sources, and where their labels come from:

* an image folder: one subfolder per label (``smoke/001.png``), the subfolder name is the label;
  for detectors a ``boxes.json`` next to the images maps file name → ``[[x1,y1,x2,y2,label]]`` in
  image pixels. Without labels a folder still calibrates.
* a video file (.mp4/.avi/.mkv/.mov): its frames; labels from the ``<stem>.labels.json`` sidecar
  :func:`tools.scenes.write_demo_video` / ``write_dock_video`` write (segment kind per frame,
  and the hazard box for dock videos).
* ``scenes:seed=S,n=N``: scenes generated with :mod:`tools.scenes`, labelled by construction
  (classifiers: N per scene kind; detectors: N scenes with 0-3 hazards and their boxes). Use a
  seed the model was not trained on (the demo models train on seed 0).
* a sensor recording (.csv/.jsonl): count windows → features exactly as the manifest's
  ``sensor`` section says; a numeric ``label`` column (non-zero = anomalous) labels a window
  anomalous when any reading in it is.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from runtime.manifest import ManifestBase
from runtime.processing.preprocess import Geometry, Preprocessor
from tools.evaluate.metrics import Box

logger = logging.getLogger(__name__)

Task = Literal["classify", "detect", "anomaly"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov")
SENSOR_SUFFIXES = (".csv", ".jsonl", ".ndjson")
LABEL_COLUMN = "label"
Progress = Callable[[int], None]


class DataError(ValueError):
    """A data source that can't be read, is empty, or doesn't fit the model."""


@dataclass(frozen=True, slots=True)
class LabelledSet:
    """``inputs`` [N, ...]: one preprocessed tensor per sample (no batch axis). Labels by task:
    ``class_ids`` (-1 = unlabelled), ``boxes`` (frame pixels, with ``geometries`` to map model
    boxes back), ``anomalous``."""

    task: Task
    inputs: NDArray[np.float32]
    source: str
    labelled_by: str
    class_ids: NDArray[np.int64] | None = None
    boxes: tuple[tuple[Box, ...], ...] | None = None
    geometries: tuple[Geometry, ...] = ()
    anomalous: NDArray[np.bool_] | None = None

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def has_labels(self) -> bool:
        if self.class_ids is not None:
            return bool(np.all(self.class_ids >= 0))
        return self.boxes is not None or self.anomalous is not None


def task_of(manifest: ManifestBase) -> Task:
    if manifest.sensor is not None:
        return "anomaly"
    kind = getattr(manifest.postprocess, "type", None)
    if kind == "classify":
        return "classify"
    if kind in ("yolo", "ssd"):
        return "detect"
    raise DataError(
        f"bundle {manifest.name}/{manifest.version}: can't tell its task (postprocess "
        f"{kind!r}, no sensor section); expected classify, yolo, ssd or a sensor model"
    )


def load_set(
    source: str | Path,
    manifest: ManifestBase,
    limit: int | None = None,
    progress: Progress | None = None,
) -> LabelledSet:
    """Read ``source`` for ``manifest``'s model; raises :class:`DataError` on empty or bad input."""
    task = task_of(manifest)
    text = str(source)
    if text.startswith("scenes:"):
        data = _scenes(text, manifest, task, limit, progress)
    else:
        path = Path(source)
        if not path.exists():
            raise DataError(f"data source {path} does not exist")
        if task == "anomaly":
            data = _sensor(path, manifest)
        elif path.is_dir():
            data = _image_folder(path, manifest, task, limit, progress)
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            data = _video(path, manifest, task, limit, progress)
        else:
            raise DataError(
                f"data source {path}: expected an image folder, a video "
                f"({', '.join(VIDEO_SUFFIXES)}), scenes:seed=S,n=N or, for sensor models, "
                f"a recording ({', '.join(SENSOR_SUFFIXES)})"
            )
    if len(data) == 0:
        raise DataError(f"data source {text}: no samples")
    return data


# --------------------------------------------------------------------------- images


def _preprocessor(manifest: ManifestBase) -> Preprocessor:
    spec = manifest.inputs[0]
    if len(spec.shape) != 4:
        raise DataError(f"input {spec.name!r} {spec.shape} is not an image")
    try:
        return Preprocessor(spec.model_copy(update={"dtype": "float32", "quantization": None}))
    except ValueError as exc:  # dynamic height/width: nothing to resize to
        raise DataError(
            f"input {spec.name!r} has shape {spec.shape}: calibration needs a fixed input "
            f"size; re-export with a fixed height and width ({exc})"
        ) from exc


def _label_index(manifest: ManifestBase, name: str, where: str) -> int:
    if name not in manifest.labels:
        raise DataError(f"{where}: label {name!r} is not one of the model's {manifest.labels}")
    return manifest.labels.index(name)


def _collect(
    images: Iterator[tuple[NDArray[np.uint8], int, tuple[Box, ...]]],
    manifest: ManifestBase,
    task: Task,
    source: str,
    labelled_by: str,
    progress: Progress | None,
) -> LabelledSet:
    pre = _preprocessor(manifest)
    tensors: list[NDArray[np.float32]] = []
    ids: list[int] = []
    boxes: list[tuple[Box, ...]] = []
    geometries: list[Geometry] = []
    for image, class_id, image_boxes in images:
        tensor, geometry = pre(image)
        tensors.append(np.asarray(tensor[0], np.float32))
        ids.append(class_id)
        boxes.append(image_boxes)
        geometries.append(geometry)
        if progress is not None:
            progress(1)
    inputs = np.stack(tensors) if tensors else np.zeros((0, 1), np.float32)
    if task == "classify":
        return LabelledSet(task, inputs, source, labelled_by, class_ids=np.asarray(ids, np.int64))
    labelled = labelled_by != "unlabelled"
    return LabelledSet(
        task,
        inputs,
        source,
        labelled_by,
        boxes=tuple(boxes) if labelled else None,
        geometries=tuple(geometries),
    )


def _image_folder(
    path: Path, manifest: ManifestBase, task: Task, limit: int | None, progress: Progress | None
) -> LabelledSet:
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise DataError(f"image folder {path}: no images ({', '.join(IMAGE_SUFFIXES)})")
    box_file = path / "boxes.json"
    box_table = json.loads(box_file.read_text()) if box_file.is_file() else None
    by_folder = all(f.parent != path for f in files)
    if task == "classify":
        labelled_by = "subfolder name" if by_folder else "unlabelled"
    else:
        labelled_by = "boxes.json" if box_table is not None else "unlabelled"

    def images() -> Iterator[tuple[NDArray[np.uint8], int, tuple[Box, ...]]]:
        for f in files:
            image = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if image is None:
                raise DataError(f"{f}: not a readable image")
            class_id = -1
            if task == "classify" and by_folder:
                class_id = _label_index(manifest, f.parent.name, str(f))
            boxes: tuple[Box, ...] = ()
            if box_table is not None:
                rel = str(f.relative_to(path))
                boxes = tuple(
                    _box(row[:4], _label_index(manifest, str(row[4]), rel))
                    for row in box_table.get(rel, [])
                )
            yield np.asarray(image, np.uint8), class_id, boxes

    return _collect(images(), manifest, task, str(path), labelled_by, progress)


def _box(xyxy: list[float], class_id: int) -> Box:
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return Box(x1, y1, x2, y2, class_id)


def _video(
    path: Path, manifest: ManifestBase, task: Task, limit: int | None, progress: Progress | None
) -> LabelledSet:
    sidecar = path.with_suffix(".labels.json")
    segments = json.loads(sidecar.read_text())["segments"] if sidecar.is_file() else None
    labelled_by = f"segments in {sidecar.name}" if segments is not None else "unlabelled"

    def frame_label(index: int) -> tuple[int, tuple[Box, ...]]:
        for seg in segments or []:
            if seg["first_frame"] <= index <= seg["last_frame"]:
                kind = str(seg["kind"])
                if task == "classify":
                    return _label_index(manifest, kind, str(sidecar)), ()
                box = seg.get("box")
                if box is None:
                    return -1, ()
                cls = manifest.labels.index(kind) if kind in manifest.labels else 0
                return -1, (_box(box, cls),)
        return -1, ()

    def frames() -> Iterator[tuple[NDArray[np.uint8], int, tuple[Box, ...]]]:
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise DataError(f"video {path}: cv2 cannot open it")
        try:
            index = 0
            while limit is None or index < limit:
                ok, image = capture.read()
                if not ok:
                    break
                class_id, boxes = frame_label(index)
                yield np.asarray(image, np.uint8), class_id, boxes
                index += 1
        finally:
            capture.release()

    return _collect(frames(), manifest, task, str(path), labelled_by, progress)


def _scenes(
    text: str, manifest: ManifestBase, task: Task, limit: int | None, progress: Progress | None
) -> LabelledSet:
    from tools.scenes import SCENE_KINDS, render_detection_scene, render_scene

    try:
        params = dict(item.split("=", 1) for item in text.removeprefix("scenes:").split(","))
        seed, n = int(params["seed"]), int(params["n"])
    except (KeyError, ValueError) as exc:
        raise DataError(f"{text!r}: expected scenes:seed=S,n=N") from exc

    def classified() -> Iterator[tuple[NDArray[np.uint8], int, tuple[Box, ...]]]:
        for i in range(n):
            for kind in SCENE_KINDS:
                rng = np.random.default_rng([seed, i, SCENE_KINDS.index(kind)])
                image = render_scene(kind, rng, 640, 480, t=float(rng.uniform(0.0, 60.0)))
                yield image, _label_index(manifest, kind, text), ()

    def detected() -> Iterator[tuple[NDArray[np.uint8], int, tuple[Box, ...]]]:
        for i in range(n):
            image, boxes = render_detection_scene(np.random.default_rng([seed, i]), i % 4)
            yield image, -1, tuple(Box(*b, 0) for b in boxes)

    images = classified() if task == "classify" else detected()
    if limit is not None:
        images = (item for k, item in enumerate(images) if k < limit)
    return _collect(images, manifest, task, text, "generated by tools.scenes", progress)


# --------------------------------------------------------------------------- sensor


def _sensor(path: Path, manifest: ManifestBase) -> LabelledSet:
    from tools.fit.data import WindowBatch, load_recordings, make_windows

    sensor = manifest.sensor
    assert sensor is not None
    if path.suffix.lower() not in SENSOR_SUFFIXES:
        raise DataError(f"{path}: sensor models read a recording ({', '.join(SENSOR_SUFFIXES)})")
    if sensor.window.kind != "count":
        raise DataError(f"{path}: only count windows are supported, the model has time windows")
    header = _columns(path)
    fields = list(sensor.fields)
    has_label = LABEL_COLUMN in header
    try:
        recordings = load_recordings(
            path,
            [*fields, LABEL_COLUMN] if has_label else fields,
            key_column="key" if "key" in header else None,
            timestamp_column="ts" if "ts" in header else None,
        )
        batch = make_windows(recordings, int(sensor.window.size), int(sensor.window.hop))
    except ValueError as exc:
        raise DataError(str(exc)) from exc
    n = len(fields)
    values = WindowBatch(batch.data[:, :, :n], batch.timestamps_ns, batch.keys)
    features = sensor.features.compute(values.data, values.timestamps_ns)
    anomalous = (batch.data[:, :, n] != 0).any(axis=1) if has_label else None
    return LabelledSet(
        "anomaly",
        np.asarray(features, np.float32),
        str(path),
        f"'{LABEL_COLUMN}' column" if has_label else "unlabelled",
        anomalous=anomalous,
    )


def _columns(path: Path) -> set[str]:
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    if path.suffix.lower() == ".csv":
        return {c.strip() for c in first.split(",")}
    try:
        return set(json.loads(first)) if first.strip() else set()
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:1: not JSON: {exc}") from exc
