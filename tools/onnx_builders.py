"""ONNX graphs (opset 17) built with ``onnx.helper`` from numpy weights.

* :func:`mlp_classifier_onnx`: AveragePool → Flatten → Gemm → Relu → Gemm → Softmax.
* :func:`mobilenet_v2_onnx`: the MobileNetV2 topology with seeded random weights, for benchmarks.
* :func:`grid_detector_onnx`: a one-class YOLO-format grid detector (Ultralytics output layout).

Every builder runs ``onnx.checker.check_model``; :func:`serialize` gives deterministic bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # what opset 17 needs; keeps the files loadable by older onnxruntime releases
PRODUCER = "edgewatch-tools"


def serialize(model: onnx.ModelProto) -> bytes:
    """The model's protobuf bytes, identical for identical graphs and weights."""
    data: bytes = model.SerializeToString(deterministic=True)
    return data


def _finish(graph: onnx.GraphProto, doc: str) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def _init(name: str, array: NDArray[np.generic]) -> onnx.TensorProto:
    tensor: onnx.TensorProto = numpy_helper.from_array(np.ascontiguousarray(array), name)
    return tensor


def _f32(
    array: NDArray[np.floating] | Sequence[float], what: str, shape: tuple[int, ...]
) -> NDArray[np.float32]:
    arr = np.asarray(array, dtype=np.float32)
    if arr.shape != shape:
        raise ValueError(f"{what}: expected shape {shape}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what}: weights must be finite")
    return arr


# --------------------------------------------------------------------------- MLP classifier


def mlp_classifier_onnx(
    w1: NDArray[np.floating],
    b1: NDArray[np.floating],
    w2: NDArray[np.floating],
    b2: NDArray[np.floating],
    *,
    input_hw: tuple[int, int],
    pool: int,
    colour_w: NDArray[np.floating] | None = None,
    colour_b: NDArray[np.floating] | None = None,
    input_name: str = "image",
    output_name: str = "probs",
) -> onnx.ModelProto:
    """``image`` [1,3,H,W] → AveragePool(pool) → Flatten → Gemm(w1,b1) → Relu → Gemm(w2,b2) →
    Softmax → ``probs`` [1,C].

    With ``colour_w`` [F,3] (and ``colour_b`` [F]) a per-pixel colour stage, 1x1 Conv → Relu,
    comes first, so a small bright object still shows after pooling. ``w1`` is
    [F*(H/pool)*(W/pool), hidden] over the pooled map flattened in C,H,W order (F = 3 without the
    colour stage), ``w2`` is [hidden, C].
    """
    h, w = input_hw
    if pool < 1 or h % pool or w % pool:
        raise ValueError(f"pool {pool} must be >= 1 and divide the input size {h}x{w}")
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    pool_input = input_name
    channels = 3
    if colour_w is not None:
        cw = np.asarray(colour_w)
        if cw.ndim != 2 or cw.shape[1] != 3:
            raise ValueError(f"colour_w: expected shape [F, 3], got {cw.shape}")
        channels = cw.shape[0]
        cb = np.zeros(channels) if colour_b is None else colour_b
        inits.append(
            _init("colour.w", _f32(cw, "colour_w", (channels, 3)).reshape(channels, 3, 1, 1))
        )
        inits.append(_init("colour.b", _f32(cb, "colour_b", (channels,))))
        nodes.append(
            helper.make_node(
                "Conv", [input_name, "colour.w", "colour.b"], ["colour_pre"], kernel_shape=[1, 1]
            )
        )
        nodes.append(helper.make_node("Relu", ["colour_pre"], ["colour"]))
        pool_input = "colour"
    n_in = channels * (h // pool) * (w // pool)
    w1a = np.asarray(w1)
    if w1a.ndim != 2:
        raise ValueError(f"w1: expected a 2-D [{n_in}, hidden] array, got shape {w1a.shape}")
    hidden = w1a.shape[1]
    w2a = np.asarray(w2)
    if w2a.ndim != 2:
        raise ValueError(f"w2: expected a 2-D [{hidden}, classes] array, got shape {w2a.shape}")
    classes = w2a.shape[1]
    inits += [
        _init("w1", _f32(w1, "w1", (n_in, hidden))),
        _init("b1", _f32(b1, "b1", (hidden,))),
        _init("w2", _f32(w2, "w2", (hidden, classes))),
        _init("b2", _f32(b2, "b2", (classes,))),
    ]
    nodes += [
        helper.make_node(
            "AveragePool", [pool_input], ["pooled"], kernel_shape=[pool, pool], strides=[pool, pool]
        ),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w1", "b1"], ["hidden_pre"]),
        helper.make_node("Relu", ["hidden_pre"], ["hidden"]),
        helper.make_node("Gemm", ["hidden", "w2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [output_name], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp_classifier",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [1, classes])],
        initializer=inits,
    )
    return _finish(graph, "pooled-colour MLP classifier trained with numpy (tools.demo_models)")


def pooled_features(
    tensor: NDArray[np.floating],
    pool: int,
    colour_w: NDArray[np.floating] | None = None,
    colour_b: NDArray[np.floating] | None = None,
) -> NDArray[np.float64]:
    """What the classifier graph feeds its first Gemm: [N,3,H,W] → [N, F*(H/pool)*(W/pool)]."""
    x = np.asarray(tensor)
    if colour_w is None:
        pooled = _avg_pool(x.astype(np.float64), pool)
    else:
        cb = np.zeros(len(colour_w)) if colour_b is None else colour_b
        pooled = colour_pool(x, colour_w, cb, pool)
    return np.asarray(pooled.reshape(len(x), -1), dtype=np.float64)


def _avg_pool(x: NDArray[np.float64], pool: int) -> NDArray[np.float64]:
    n, c, h, w = x.shape
    out = x.reshape(n, c, h // pool, pool, w // pool, pool).mean(axis=(3, 5))
    return np.asarray(out, dtype=np.float64)


def colour_pool(
    tensor: NDArray[np.floating],
    colour_w: NDArray[np.floating],
    colour_b: NDArray[np.floating],
    pool: int,
    batch: int = 128,
) -> NDArray[np.float64]:
    """1x1 Conv → Relu → AveragePool(pool) in numpy, as the graphs compute it:
    [N,3,H,W] → [N,F,H/pool,W/pool] (in batches, to bound memory)."""
    x = np.asarray(tensor)
    w = np.asarray(colour_w, np.float64)
    b = np.asarray(colour_b, np.float64)[None, :, None, None]
    parts = []
    for i in range(0, len(x), batch):
        f = np.einsum("fc,nchw->nfhw", w, x[i : i + batch].astype(np.float64)) + b
        np.maximum(f, 0.0, out=f)
        parts.append(_avg_pool(f, pool))
    return np.concatenate(parts) if parts else np.zeros((0, len(w), 0, 0))


# --------------------------------------------------------------------------- MobileNetV2

# (expansion t, output channels c, repeats n, first stride s), as in Sandler et al. 2018, table 2
MOBILENET_V2_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class _GraphBuilder:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0
        self.inits.append(_init("relu6_min", np.array(0.0, np.float32)))
        self.inits.append(_init("relu6_max", np.array(6.0, np.float32)))

    def _name(self, kind: str) -> str:
        self._n += 1
        return f"{kind}_{self._n}"

    def conv(
        self,
        x: str,
        c_in: int,
        c_out: int,
        k: int,
        *,
        stride: int = 1,
        groups: int = 1,
        relu6: bool = True,
    ) -> str:
        """Conv with batch norm folded into its weights and bias (He-initialised)."""
        name = self._name("conv")
        fan_in = (c_in // groups) * k * k
        gain = 2.0 if relu6 else 1.0  # a linear bottleneck keeps unit variance
        w = self.rng.normal(0.0, np.sqrt(gain / fan_in), (c_out, c_in // groups, k, k))
        b = self.rng.normal(0.0, 0.01, c_out)
        self.inits.append(_init(f"{name}.w", w.astype(np.float32)))
        self.inits.append(_init(f"{name}.b", b.astype(np.float32)))
        pad = k // 2
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{name}.w", f"{name}.b"],
                [name],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[pad, pad, pad, pad],
                group=groups,
            )
        )
        if not relu6:
            return name
        out = f"{name}.relu6"
        self.nodes.append(helper.make_node("Clip", [name, "relu6_min", "relu6_max"], [out]))
        return out

    def add(self, a: str, b: str) -> str:
        out = self._name("add")
        self.nodes.append(helper.make_node("Add", [a, b], [out]))
        return out


def mobilenet_v2_onnx(
    num_classes: int = 1000,
    input_hw: int = 224,
    seed: int = 0,
    batch: int | None = 1,
    *,
    input_name: str = "image",
    output_name: str = "logits",
) -> onnx.ModelProto:
    """MobileNetV2 (width 1.0): 3x3/2 stem, 17 inverted residual blocks (expansion 6, ReLU6 as
    Clip, depthwise convs via ``group``), 1x1 to 1280, global average pool and a classifier.

    Random seeded weights; about 3.5M parameters for 1000 classes. ``batch=None`` makes the batch
    dimension symbolic.
    """
    if num_classes < 1 or input_hw < 32:
        raise ValueError(
            f"mobilenet_v2: need num_classes >= 1 and input_hw >= 32, got {num_classes}, {input_hw}"
        )
    g = _GraphBuilder(np.random.default_rng(seed))
    x = g.conv(input_name, 3, 32, 3, stride=2)
    c_in = 32
    for t, c, n, s in MOBILENET_V2_SETTINGS:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = c_in * t
            y = x if t == 1 else g.conv(x, c_in, hidden, 1)
            y = g.conv(y, hidden, hidden, 3, stride=stride, groups=hidden)
            y = g.conv(y, hidden, c, 1, relu6=False)
            x = g.add(x, y) if stride == 1 and c_in == c else y
            c_in = c
    x = g.conv(x, c_in, 1280, 1)
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    g.nodes.append(helper.make_node("Flatten", ["gap"], ["features"], axis=1))
    fc_w = g.rng.normal(0.0, np.sqrt(1.0 / 1280), (num_classes, 1280)).astype(np.float32)
    g.inits.append(_init("fc.w", fc_w))
    g.inits.append(_init("fc.b", np.zeros(num_classes, np.float32)))
    g.nodes.append(helper.make_node("Gemm", ["features", "fc.w", "fc.b"], [output_name], transB=1))
    dim: int | str = "batch" if batch is None else batch
    graph = helper.make_graph(
        g.nodes,
        "mobilenet_v2",
        [
            helper.make_tensor_value_info(
                input_name, TensorProto.FLOAT, [dim, 3, input_hw, input_hw]
            )
        ],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [dim, num_classes])],
        initializer=g.inits,
    )
    return _finish(graph, f"MobileNetV2 topology, random weights (seed {seed}), for benchmarks")


def parameter_count(model: onnx.ModelProto) -> int:
    """Number of weights: elements of all initializers (scalar constants count 1)."""
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer)


# --------------------------------------------------------------------------- grid detector


def grid_anchor_boxes(
    input_hw: int, stride: int, anchors: Sequence[tuple[float, float]]
) -> NDArray[np.float32]:
    """[4, A*G*G] cx,cy,w,h in input pixels, anchor-major then row-major cells: the order in which
    the detector graph flattens its [1, A, G, G] score map."""
    grid = input_hw // stride
    centres = (np.arange(grid, dtype=np.float32) + 0.5) * stride
    cy, cx = np.meshgrid(centres, centres, indexing="ij")
    cols = []
    for aw, ah in anchors:
        cols.append(
            np.stack([cx.ravel(), cy.ravel(), np.full(grid * grid, aw), np.full(grid * grid, ah)])
        )
    return np.concatenate(cols, axis=1).astype(np.float32)


def grid_detector_onnx(
    feature_w: NDArray[np.floating],
    feature_b: NDArray[np.floating],
    head_w: NDArray[np.floating],
    head_b: NDArray[np.floating],
    *,
    anchors: Sequence[tuple[float, float]],
    input_hw: int = 128,
    stride: int = 8,
    input_name: str = "image",
    output_name: str = "output0",
) -> onnx.ModelProto:
    """A one-class YOLO-format detector on a grid of fixed anchor boxes.

    ``image`` [1,3,S,S] → 1x1 Conv(feature_w [F,3], feature_b) → Relu → AveragePool(stride) →
    [1,F,G,G] pooled colour features → kxk Conv(head_w [A,F,k,k], head_b) → Sigmoid → one
    objectness per anchor per cell. ``output0`` is [1, 5, A*G*G]: the anchor boxes' cx,cy,w,h in
    input pixels (constants, see :func:`grid_anchor_boxes`), then the score.
    """
    if stride < 1 or input_hw % stride:
        raise ValueError(f"stride {stride} must be >= 1 and divide input_hw {input_hw}")
    fw = np.asarray(feature_w)
    if fw.ndim != 2 or fw.shape[1] != 3:
        raise ValueError(f"feature_w: expected shape [F, 3], got {fw.shape}")
    n_feat = fw.shape[0]
    hw = np.asarray(head_w)
    n_anchor = len(anchors)
    if (
        hw.ndim != 4
        or hw.shape[:2] != (n_anchor, n_feat)
        or hw.shape[2] != hw.shape[3]
        or hw.shape[2] % 2 == 0
    ):
        raise ValueError(
            f"head_w: expected shape [{n_anchor}, {n_feat}, k, k] with odd k, got {hw.shape}"
        )
    k = hw.shape[2]
    grid = input_hw // stride
    n_boxes = n_anchor * grid * grid
    boxes = grid_anchor_boxes(input_hw, stride, anchors)[np.newaxis]
    inits = [
        _init("feat.w", _f32(feature_w, "feature_w", (n_feat, 3)).reshape(n_feat, 3, 1, 1)),
        _init("feat.b", _f32(feature_b, "feature_b", (n_feat,))),
        _init("head.w", _f32(head_w, "head_w", (n_anchor, n_feat, k, k))),
        _init("head.b", _f32(head_b, "head_b", (n_anchor,))),
        _init("anchor_boxes", boxes),
        _init("score_shape", np.array([1, 1, n_boxes], np.int64)),
    ]
    pad = k // 2
    nodes = [
        helper.make_node(
            "Conv", [input_name, "feat.w", "feat.b"], ["feat_pre"], kernel_shape=[1, 1]
        ),
        helper.make_node("Relu", ["feat_pre"], ["feat"]),
        helper.make_node(
            "AveragePool",
            ["feat"],
            ["cells"],
            kernel_shape=[stride, stride],
            strides=[stride, stride],
        ),
        helper.make_node(
            "Conv",
            ["cells", "head.w", "head.b"],
            ["obj_logits"],
            kernel_shape=[k, k],
            pads=[pad] * 4,
        ),
        helper.make_node("Sigmoid", ["obj_logits"], ["obj"]),
        helper.make_node("Reshape", ["obj", "score_shape"], ["scores"]),
        helper.make_node("Concat", ["anchor_boxes", "scores"], [output_name], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "grid_detector",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, input_hw, input_hw])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [1, 5, n_boxes])],
        initializer=inits,
    )
    return _finish(graph, "grid-anchor hazard detector, logistic objectness trained with numpy")
