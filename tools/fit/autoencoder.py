"""Autoencoder anomaly model: a small MLP D→h→k→h→D (torch) on standardised features; the score
is the mean squared reconstruction error per row. Exported with ``torch.onnx.export`` (opset 17,
one file, dynamic batch axis), standardisation and score included in the graph."""

from __future__ import annotations

import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from tools.fit.thresholds import ThresholdSpec, fit_threshold

logger = logging.getLogger(__name__)

OPSET = 17
_STD_FLOOR = 1e-12


class ReconstructionScore(nn.Module):
    """features [N, D] → mean squared reconstruction error [N] of the standardised features."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: NDArray[np.float64], std: NDArray[np.float64], hidden: int, code: int):
        super().__init__()
        d = mean.shape[0]
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.net = nn.Sequential(
            nn.Linear(d, hidden),
            nn.Tanh(),
            nn.Linear(hidden, code),
            nn.Tanh(),
            nn.Linear(code, hidden),
            nn.Tanh(),
            nn.Linear(hidden, d),
        )

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = self.standardise(features)
        recon: torch.Tensor = self.net(z)
        err = z - recon
        return (err * err).mean(dim=1)


@dataclass(frozen=True, slots=True)
class AutoencoderModel:
    module: ReconstructionScore
    n_features: int
    hidden: int
    code: int
    epochs: int
    final_loss: float
    threshold: float

    kind: ClassVar[str] = "autoencoder"

    def score(self, features: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
        """The torch forward pass (float32), as float64."""
        self.module.eval()
        with torch.no_grad():
            out: torch.Tensor = self.module(torch.from_numpy(np.asarray(features, np.float32)))
        return np.asarray(out.numpy(), np.float64)

    def output_specs(self) -> list[dict[str, Any]]:
        return [{"name": "score", "shape": [None], "dtype": "float32"}]

    def provenance(self) -> dict[str, Any]:
        return {
            "layers": [self.n_features, self.hidden, self.code, self.hidden, self.n_features],
            "activation": "tanh",
            "epochs": self.epochs,
            "final_loss": self.final_loss,
            "torch": torch.__version__,
        }

    def to_onnx(self) -> bytes:
        """features [N, D] → score [N] float32."""
        self.module.eval()
        with tempfile.TemporaryDirectory(prefix="edgewatch-fit-") as tmp, warnings.catch_warnings():
            path = Path(tmp) / "model.onnx"
            # the TorchScript exporter is deprecated but needs no onnxscript and is exact for an MLP
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
            torch.onnx.export(
                self.module,
                (torch.zeros(1, self.n_features),),
                path,
                opset_version=OPSET,
                input_names=["features"],
                output_names=["score"],
                dynamic_axes={"features": {0: "N"}, "score": {0: "N"}},
                dynamo=False,
            )
            return path.read_bytes()


def fit_autoencoder(
    features: NDArray[np.floating[Any]],
    threshold: ThresholdSpec,
    *,
    hidden: int | None = None,
    code: int | None = None,
    epochs: int = 400,
    learning_rate: float = 1e-2,
    seed: int = 0,
) -> AutoencoderModel:
    """Full-batch Adam on the standardised training features, seeded and deterministic."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"autoencoder: expected at least 2 feature rows (N, D), got {x.shape}")
    d = x.shape[1]
    hidden = hidden or max(4, d // 2)
    code = code or max(2, d // 4)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std > _STD_FLOOR * np.maximum(1.0, np.abs(mean)), std, 1.0)
    torch.manual_seed(seed)
    module = ReconstructionScore(mean, std, hidden, code)
    optimiser = torch.optim.Adam(module.net.parameters(), lr=learning_rate)
    xt = torch.from_numpy(x.astype(np.float32))
    module.train()
    loss = torch.tensor(0.0)
    for _ in range(epochs):
        optimiser.zero_grad()
        loss = module(xt).mean()
        loss.backward()
        optimiser.step()
    draft = AutoencoderModel(module, d, hidden, code, epochs, float(loss.item()), 0.0)
    value = fit_threshold(draft.score(x), threshold)
    logger.info("autoencoder: %d epochs, loss %.4g, threshold %.4g", epochs, loss.item(), value)
    return AutoencoderModel(module, d, hidden, code, epochs, float(loss.item()), value)
