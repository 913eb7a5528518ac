"""The gate's report: plain text for the console, report.md + report.html with PNG plots."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from tools.evaluate.compare import Comparison
from tools.evaluate.gate import WORST_LAYERS, GateResult
from tools.evaluate.metrics import confusion_matrix


def summary_lines(result: GateResult) -> list[str]:
    c = result.comparison
    verdict = "PASS" if result.passed else "REJECT"
    lines = [
        f"gate: {verdict}" + ("" if result.passed else " — " + "; ".join(result.reasons)),
        f"data: {c.source} ({c.n_samples} samples, labels: {c.labelled_by})",
        f"{c.metric}: float {100 * c.reference.accuracy:.2f}%, quantized "
        f"{100 * c.candidate.accuracy:.2f}% (drop {c.drop_points:.2f} points, "
        f"max {result.thresholds.max_drop_points:g})",
    ]
    if c.agreement is not None:
        lines.append(f"agreement: {100 * c.agreement:.1f}% of decisions")
    lines.append(f"output diff: max {c.max_abs_diff:.4g}, mean {c.mean_abs_diff:.4g}")
    if c.latency is not None and c.speedup is not None:
        lines.append(
            f"latency p50: float {c.latency[0].p50_ms:.3f} ms, quantized "
            f"{c.latency[1].p50_ms:.3f} ms, speed-up {c.speedup:.2f}x "
            f"(min {result.thresholds.min_speedup:g}x)"
        )
    if c.layers:
        lines.append("layers that diverge most (SQNR dB, lower is worse):")
        lines += [f"  {layer.node}: {layer.sqnr_db:.1f} dB" for layer in c.layers[:WORST_LAYERS]]
    return lines


def write_report(result: GateResult, directory: Path) -> Path:
    """Write report.md, report.html and their PNGs into ``directory``; returns report.md."""
    directory.mkdir(parents=True, exist_ok=True)
    plots = _plots(result.comparison, directory)
    lines = summary_lines(result)
    md = ["# Quantization report", "", *(f"- {line}" for line in lines), ""]
    md += [f"![{name}]({name})" for name in plots]
    (directory / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    body = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    images = "".join(f'<p><img src="{html.escape(name)}" alt="{name}"></p>' for name in plots)
    (directory / "report.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>Quantization report</title>"
        f"</head><body><h1>Quantization report</h1><ul>{body}</ul>{images}</body></html>\n",
        encoding="utf-8",
    )
    return directory / "report.md"


def _plots(c: Comparison, directory: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    if c.truth_ids is not None and c.reference.class_ids is not None:
        assert c.candidate.class_ids is not None
        n = max(len(c.labels), int(c.truth_ids.max()) + 1)
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
        for ax, title, ids in zip(
            axes,
            ("float", "quantized"),
            (c.reference.class_ids, c.candidate.class_ids),
            strict=True,
        ):
            m = confusion_matrix(ids, c.truth_ids, n)
            ax.imshow(m, cmap="Blues")
            for (i, j), v in np.ndenumerate(m):
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
            ticks = list(c.labels) or [str(i) for i in range(n)]
            ax.set_xticks(range(n), ticks, rotation=45)
            ax.set_yticks(range(n), ticks)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.set_title(title)
        names.append(_save(fig, directory, "confusion.png"))
    if c.reference.scores is not None and c.candidate.scores is not None:
        fig, ax = plt.subplots(figsize=(6, 3.4))
        ax.hist(c.reference.scores, bins=40, alpha=0.6, label="float")
        ax.hist(c.candidate.scores, bins=40, alpha=0.6, label="quantized")
        if c.threshold is not None:
            ax.axvline(c.threshold, color="k", linestyle="--", label="threshold")
        ax.set_xlabel("anomaly score")
        ax.legend()
        names.append(_save(fig, directory, "scores.png"))
    if c.latency is not None:
        fig, ax = plt.subplots(figsize=(6, 3.4))
        ax.hist(c.latency[0].samples_ms, bins=30, alpha=0.6, label="float")
        ax.hist(c.latency[1].samples_ms, bins=30, alpha=0.6, label="quantized")
        ax.set_xlabel("latency per call (ms)")
        ax.legend()
        names.append(_save(fig, directory, "latency.png"))
    return names


def _save(fig: object, directory: Path, name: str) -> str:
    import matplotlib.pyplot as plt

    fig.savefig(directory / name, dpi=80, bbox_inches="tight")  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return name
