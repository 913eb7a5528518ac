"""``make models`` reproduces the committed bundles: every bundle under models/ is rebuilt with its
``tools.demo_models.BUILDERS`` entry into a temporary directory and compared with the committed
one: the same model bytes (sha256), the same manifest as the runtime reads it, and the same
outputs through ``LoadedModel`` on fixed inputs.

The builders are seeded and train full-batch, so on one machine a build is bit-exact (two builds
here gave identical bytes for every model file). The manifest and output comparisons run first,
so that on a machine where float rounding differs the failure says whether the rebuilt model is
merely not bit-identical or actually different.

Rendering scenes is most of the cost: the demo classifier and its TFLite twin train on the very
same scenes, so renders are memoised for the module (a pure function of the spec and the seed),
which saves the TFLite builder about 2400 of its 2550 scenes without changing what it computes.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

import tools.demo_models as dm
from runtime.backends.litert import LiteRtBackendConfig
from runtime.backends.onnxruntime import OrtBackendConfig
from runtime.config.base import PluginConfig
from runtime.manifest import MANIFEST_FILE, InputSpec, manifest_model
from runtime.model import LoadedModel
from tools.scenes import SCENE_KINDS, SceneKind, render_detection_scene, render_scene

pytestmark = pytest.mark.integration

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"
GITIGNORED = {dm.BENCHMARK_NAME}  # built by `make models` but not committed (see .gitignore)
FIXED_SEED = 4242  # inputs for the output comparison; not a builder seed
FLOAT_RTOL = 1e-3  # manifest floats (metrics, feature statistics, scales)
OUTPUT_ATOL = 1e-5  # float outputs (probabilities, scores) on the fixed inputs


def committed() -> dict[str, list[str]]:
    """Bundle name -> versions committed under models/."""
    return {
        d.name: sorted(v.name for v in d.iterdir() if (v / MANIFEST_FILE).is_file())
        for d in sorted(REPO_MODELS.iterdir())
        if d.is_dir() and d.name not in GITIGNORED
    }


def committed_bundles() -> list[tuple[str, str]]:
    order = {name: i for i, name in enumerate(dm.BUILDERS)}  # classifier before its TFLite twin
    return sorted(
        ((name, v) for name, versions in committed().items() for v in versions),
        key=lambda nv: (order.get(nv[0], len(order)), nv[1]),
    )


# --------------------------------------------------------------------------- rebuilding


class Rebuilt:
    """Builds each bundle family once per module, on first use, into one temporary root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seconds: dict[str, float] = {}

    def bundle(self, name: str, version: str) -> Path:
        if name not in self.seconds:
            started = time.perf_counter()
            dm.BUILDERS[name](self.root, False)
            self.seconds[name] = time.perf_counter() - started
        return self.root / name / version


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rebuilt]:
    cache: dict[tuple[str, str, tuple[int, ...]], NDArray[np.float32]] = {}
    render = dm._classifier_sample

    def memoised(task: tuple[InputSpec, SceneKind, tuple[int, ...]]) -> NDArray[np.float32]:
        spec, kind, seed = task
        key = (spec.model_dump_json(), kind, seed)
        if key not in cache:
            cache[key] = render(task)
        return cache[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dm, "_classifier_sample", memoised)
        yield Rebuilt(tmp_path_factory.mktemp("models"))


# --------------------------------------------------------------------------- comparing


def runtime_manifest(bundle: Path) -> dict[str, object]:
    """The manifest as the runtime reads it (defaults filled in), as JSON values."""
    raw = json.loads((bundle / MANIFEST_FILE).read_text())
    dumped: dict[str, object] = manifest_model().model_validate(raw).model_dump(mode="json")
    return dumped


def differences(a: object, b: object, path: str = "") -> list[str]:
    """Where two JSON values differ: floats beyond FLOAT_RTOL, anything else exactly; keys named
    ``sha256`` are skipped (the model bytes are compared on their own)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}: only in one" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            if k != "sha256":
                out += differences(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in differences(x, y, f"{path}[{i}]")
        ]
    if isinstance(a, float) and isinstance(b, float):
        return (
            [] if math.isclose(a, b, rel_tol=FLOAT_RTOL, abs_tol=1e-9) else [f"{path}: {a} vs {b}"]
        )
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def backend_config(bundle: Path) -> PluginConfig:
    backend = json.loads((bundle / MANIFEST_FILE).read_text()).get("backend", "onnxruntime")
    return LiteRtBackendConfig(num_threads=1) if backend == "litert" else OrtBackendConfig()


def fixed_inputs(model: LoadedModel) -> list[NDArray[np.generic]]:
    """Preprocessed tensors the model takes: rendered scenes for image models (each kind, and
    hazard scenes for the detector), else feature rows around the manifest's training statistics."""
    rng = np.random.default_rng(FIXED_SEED)
    if model.preprocessor is not None:
        preprocess = model.preprocessor
        images = [render_scene(kind, rng, *dm.FRAME_SIZE, t=1.0) for kind in SCENE_KINDS * 2]
        images += [render_detection_scene(rng, n, *dm.FRAME_SIZE)[0] for n in (1, 2)]
        return [preprocess(image)[0] for image in images]
    sensor = model.manifest.sensor
    assert sensor is not None, f"{model.path}: neither an image nor a sensor model"
    mean = np.asarray(sensor.feature_mean, np.float32)
    std = np.asarray(sensor.feature_std, np.float32)
    return [(mean + std * rng.normal(0.0, 3.0, (4, len(mean)))).astype(np.float32)]


def outputs(bundle: Path, inputs_from: Path) -> list[list[NDArray[np.float32]]]:
    """``bundle``'s outputs through LoadedModel on the fixed inputs made for ``inputs_from``."""
    reference = LoadedModel.load(inputs_from, backend_config(inputs_from))
    try:
        tensors = fixed_inputs(reference)
    finally:
        reference.close()
    model = LoadedModel.load(bundle, backend_config(bundle))
    try:
        return [model.infer(t) for t in tensors]
    finally:
        model.close()


def output_tolerance(bundle: Path, index: int) -> float:
    """A float output's OUTPUT_ATOL, or one quantization step of an int8 output."""
    spec = json.loads((bundle / MANIFEST_FILE).read_text())["outputs"][index]
    quant = spec.get("quantization")
    return OUTPUT_ATOL if not quant else float(quant["scale"]) * 1.001


# --------------------------------------------------------------------------- tests


def test_every_committed_bundle_has_a_builder() -> None:
    names = committed()
    assert names, f"no bundles under {REPO_MODELS}"
    missing = sorted(set(names) - set(dm.BUILDERS))
    assert not missing, (
        f"committed bundles no builder in tools.demo_models.BUILDERS makes: {missing}"
    )


@pytest.mark.parametrize(
    ("name", "version"), committed_bundles(), ids=[f"{n}/{v}" for n, v in committed_bundles()]
)
def test_rebuild_matches_committed_bundle(rebuilt: Rebuilt, name: str, version: str) -> None:
    ours = REPO_MODELS / name / version
    theirs = rebuilt.bundle(name, version)
    built = sorted(p.name for p in theirs.parent.iterdir() if not p.name.startswith("."))
    assert built == committed()[name], (
        f"{name}: builder makes {built}, models/ has {committed()[name]}"
    )

    diff = differences(runtime_manifest(ours), runtime_manifest(theirs))
    assert not diff, f"{name}/{version}: rebuilt manifest differs: {diff}"

    ours_out, theirs_out = outputs(ours, ours), outputs(theirs, ours)
    for call, (a, b) in enumerate(zip(ours_out, theirs_out, strict=True)):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            tol = output_tolerance(ours, i)
            worst = float(np.max(np.abs(x - y)))
            assert worst <= tol, f"{name}/{version} input {call} output {i}: max |diff| {worst:.3g}"

    manifest = json.loads((ours / MANIFEST_FILE).read_text())
    rebuilt_manifest = json.loads((theirs / MANIFEST_FILE).read_text())
    model_bytes = (theirs / rebuilt_manifest["file"]).read_bytes()
    assert rebuilt_manifest["sha256"] == manifest["sha256"], (
        f"{name}/{version}: rebuilt model is not bit-identical (outputs agree within tolerance); "
        f"rebuilt {len(model_bytes)} bytes sha256 {rebuilt_manifest['sha256'][:16]}…"
    )
    assert model_bytes == (ours / manifest["file"]).read_bytes()


def test_scene_memo_returns_what_rendering_returns() -> None:
    """The module's render memo is only sound if rendering is a pure function of its task."""
    spec = dm.classifier_input_spec([0.4] * 3, [0.2] * 3)
    task: tuple[InputSpec, SceneKind, tuple[int, ...]] = (spec, "smoke", (0, dm.TRAIN_STREAM, 1, 7))
    first, second = dm._classifier_sample(task), dm._classifier_sample(task)
    assert first.shape == (3, 64, 64)
    assert np.array_equal(first, second)
    other = dm._classifier_sample((spec, "smoke", (0, dm.TRAIN_STREAM, 1, 8)))
    assert not np.array_equal(first, other)
