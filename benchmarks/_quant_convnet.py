"""A MobileNetV2-size 224-px convnet trained on generated scenes, for benchmarks/quantization.py.

The network is MobileNetV2 (width 1.0, the topology of :func:`tools.onnx_builders.mobilenet_v2_onnx`,
3 classes) with batch norm, trained with torch (seeded) to tell normal / smoke / fire scenes from
:mod:`tools.scenes`: 600 training scenes, mostly at 112 px and then at 224 px (:data:`PHASES`).
Batch norm is folded into the convolutions and the weights are written into the graph
``mobilenet_v2_onnx`` builds, so the ONNX model is the backend benchmark's graph with trained
weights. Scenes are rendered at 640x480 and resized to 224x224 by the runtime's own
:class:`Preprocessor` (kept as uint8; normalised on use).

Everything is cached under ``build/bench-quantization/`` (scene sets as .npz, models).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from _common import progress
from numpy.typing import NDArray
from onnx import numpy_helper

from runtime.manifest import InputSpec
from runtime.processing.preprocess import Preprocessor
from tools.demo_models import IMAGENET_MEAN, IMAGENET_STD
from tools.onnx_builders import MOBILENET_V2_SETTINGS, mobilenet_v2_onnx, serialize
from tools.scenes import SCENE_KINDS, render_scene

INPUT = 224
FRAME = (640, 480)
SEED = 0
TRAIN_STREAM, HELDOUT_STREAM = 10, 11  # not used by tools.demo_models (0..4)


@dataclass(frozen=True, slots=True)
class SceneSet:
    images: NDArray[np.uint8]  # [N,3,224,224] RGB, resized as the runtime does
    labels: NDArray[np.int64]  # indices into SCENE_KINDS

    def tensors(self, start: int = 0, stop: int | None = None) -> NDArray[np.float32]:
        """Normalised float32 [N,3,224,224] as the manifest's preprocessing gives them."""
        return normalise(self.images[start:stop])


_MEAN = np.asarray(IMAGENET_MEAN, np.float32)[:, None, None]
_STD = np.asarray(IMAGENET_STD, np.float32)[:, None, None]


def normalise(images: NDArray[np.uint8]) -> NDArray[np.float32]:
    out: NDArray[np.float32] = (images.astype(np.float32) / np.float32(255.0) - _MEAN) / _STD
    return out


def input_spec() -> dict[str, object]:
    return {
        "name": "image",
        "shape": [1, 3, INPUT, INPUT],
        "layout": "NCHW",
        "dtype": "float32",
        "color": "RGB",
        "resize": "stretch",
        "scale": 1.0 / 255.0,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
    }


def render_set(n_per_class: int, stream: int, workers: int = 2) -> SceneSet:
    """``n_per_class`` scenes of each kind, each from its own seed (seed, stream, class, i)."""
    raw = InputSpec.model_validate(
        {**input_spec(), "scale": 1.0, "mean": [0.0] * 3, "std": [1.0] * 3}
    )
    preprocess = Preprocessor(raw)
    tasks = [(c, i) for i in range(n_per_class) for c in range(len(SCENE_KINDS))]

    def one(task: tuple[int, int]) -> NDArray[np.uint8]:
        c, i = task
        rng = np.random.default_rng([SEED, stream, c, i])
        image = render_scene(SCENE_KINDS[c], rng, *FRAME, t=float(rng.uniform(0.0, 60.0)))
        return np.asarray(preprocess(image)[0][0], np.float32).astype(np.uint8)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        images = np.stack(list(pool.map(one, tasks)))
    labels = np.asarray([c for c, _ in tasks], np.int64)
    return SceneSet(images, labels)


def cached_set(path: Path, make: Callable[[], SceneSet]) -> SceneSet:
    if path.is_file():
        with np.load(path) as data:
            return SceneSet(data["images"], data["labels"])
    scenes = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, images=scenes.images, labels=scenes.labels)
    tmp.replace(path)
    return scenes


# --------------------------------------------------------------------------- torch model


def _torch_model(num_classes: int) -> Any:
    """MobileNetV2 in torch; its convs in the order ``mobilenet_v2_onnx`` emits them."""
    import torch
    from torch import nn

    class ConvBn(nn.Module):
        def __init__(
            self, c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, act: bool = True
        ) -> None:
            super().__init__()
            self.conv = nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False)
            self.bn = nn.BatchNorm2d(c_out)
            self.act = nn.ReLU6() if act else nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.bn(self.conv(x)))  # type: ignore[no-any-return]

    class Block(nn.Module):
        def __init__(self, layers: list[ConvBn], residual: bool) -> None:
            super().__init__()
            self.layers = nn.Sequential(*layers)
            self.residual = residual

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.layers(x)
            return x + y if self.residual else y  # type: ignore[no-any-return]

    class MobileNetV2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            blocks: list[nn.Module] = [ConvBn(3, 32, 3, 2)]
            c_in = 32
            for t, c, n, s in MOBILENET_V2_SETTINGS:
                for i in range(n):
                    stride = s if i == 0 else 1
                    hidden = c_in * t
                    layers = [] if t == 1 else [ConvBn(c_in, hidden, 1)]
                    layers += [
                        ConvBn(hidden, hidden, 3, stride, groups=hidden),
                        ConvBn(hidden, c, 1, act=False),
                    ]
                    blocks.append(Block(layers, stride == 1 and c_in == c))
                    c_in = c
            blocks.append(ConvBn(c_in, 1280, 1))
            self.features = nn.Sequential(*blocks)
            self.dropout = nn.Dropout(0.2)
            self.fc = nn.Linear(1280, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.features(x).mean(dim=(2, 3))
            return self.fc(self.dropout(x))  # type: ignore[no-any-return]

        def conv_bns(self) -> list[ConvBn]:
            return [m for m in self.modules() if isinstance(m, ConvBn)]

    return MobileNetV2()


@dataclass(frozen=True, slots=True)
class TrainReport:
    seconds: float
    epochs: int
    train_accuracy: float


PHASES = ((112, 12, 3e-3), (224, 2, 5e-4))
"""(input size, epochs, peak learning rate): the whole network is trained, first on scenes
downscaled to 112x112 (4x cheaper: a 224-px step costs ~0.15 s per image on 2 shared cores),
then briefly at 224x224, the size it is deployed and measured at."""


def train(
    scenes: SceneSet, *, batch: int = 32, threads: int = 2
) -> tuple[onnx.ModelProto, TrainReport]:
    """Train (seeded: torch init, shuffling, flips) and return the BN-folded ONNX model."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    torch.manual_seed(SEED)
    torch.set_num_threads(threads)
    rng = np.random.default_rng([SEED, 99])
    model = _torch_model(len(SCENE_KINDS)).to(memory_format=torch.channels_last)
    n = len(scenes.labels)
    labels = torch.from_numpy(scenes.labels)
    started = time.perf_counter()
    correct = seen = epochs_done = 0
    for size, epochs, lr in PHASES:
        steps = epochs * (n // batch)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
        model.train()
        for epoch in range(epochs):
            order = rng.permutation(n)
            correct = seen = 0
            for b in range(n // batch):
                idx = order[b * batch : (b + 1) * batch]
                x = normalise(scenes.images[idx])
                flip = rng.random(len(idx)) < 0.5
                x[flip] = x[flip][..., ::-1]
                xt = torch.from_numpy(np.ascontiguousarray(x))
                if size != INPUT:
                    xt = F.interpolate(xt, size=(size, size), mode="area")
                xt = xt.contiguous(memory_format=torch.channels_last)
                logits = model(xt)
                loss = F.cross_entropy(logits, labels[idx], label_smoothing=0.05)
                opt.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                sched.step()
                correct += int((logits.argmax(1) == labels[idx]).sum())
                seen += len(idx)
            epochs_done += 1
            progress(
                f"  {size} px epoch {epoch + 1}/{epochs}: train accuracy {correct / seen:.3f}, "
                f"{time.perf_counter() - started:.0f} s"
            )
    model.eval()
    onnx_model = to_onnx(model)
    report = TrainReport(time.perf_counter() - started, epochs_done, correct / max(1, seen))
    return onnx_model, report


def to_onnx(model: Any) -> onnx.ModelProto:
    """Fold each batch norm into its conv and write the weights into ``mobilenet_v2_onnx``'s
    graph (its Conv nodes come in the same order as the torch model's convs)."""
    import torch

    graph_model = mobilenet_v2_onnx(num_classes=len(SCENE_KINDS), input_hw=INPUT, seed=SEED)
    inits = {t.name: t for t in graph_model.graph.initializer}
    convs = [node for node in graph_model.graph.node if node.op_type == "Conv"]
    layers = model.conv_bns()
    if len(convs) != len(layers):
        raise RuntimeError(f"{len(layers)} torch convs for {len(convs)} ONNX Conv nodes")
    with torch.no_grad():
        for node, layer in zip(convs, layers, strict=True):
            bn = layer.bn
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            w = (layer.conv.weight * scale[:, None, None, None]).numpy()
            b = (bn.bias - bn.running_mean * scale).numpy()
            _replace(inits[node.input[1]], w)
            _replace(inits[node.input[2]], b)
        _replace(inits["fc.w"], model.fc.weight.numpy())
        _replace(inits["fc.b"], model.fc.bias.numpy())
    graph_model.doc_string = "MobileNetV2 trained on generated scenes (benchmarks/quantization.py)"
    return graph_model


def _replace(tensor: onnx.TensorProto, value: NDArray[np.floating]) -> None:
    if tuple(tensor.dims) != value.shape:
        raise RuntimeError(f"{tensor.name}: shape {tuple(tensor.dims)} vs trained {value.shape}")
    tensor.CopyFrom(numpy_helper.from_array(np.asarray(value, np.float32), tensor.name))


def cached_model(path: Path, scenes: Callable[[], SceneSet]) -> onnx.ModelProto:
    if path.is_file():
        return onnx.load(str(path))
    progress("training the 224-px MobileNetV2 on generated scenes (cached for next time)")
    model, report = train(scenes())
    progress(
        f"trained in {report.seconds:.0f} s ({report.epochs} epochs), last-epoch train "
        f"accuracy {report.train_accuracy:.3f}"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(serialize(model))
    tmp.replace(path)
    return model
