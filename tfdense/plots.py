"""Plots of the report, the model card and the search results (PNG files, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: CI and servers have no display
    import matplotlib.pyplot as plt

    return plt


def accuracy_scatter(points: list[dict[str, Any]], key: str, xlabel: str, path: Path) -> None:
    """Accuracy against `key` (log axis) for every point (`label`, `kind` ours/peer, `test_accuracy`, `key`)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for p in points:
        if p["kind"] == "peer":
            ax.scatter(p[key], 100 * p["test_accuracy"], marker="s", s=50, color="tab:gray")
            ax.annotate(p["label"], (p[key], 100 * p["test_accuracy"]), textcoords="offset points", xytext=(5, 4), fontsize=7)
        else:  # our stages often sit close together: a legend entry each instead of labels that collide
            ax.scatter(p[key], 100 * p["test_accuracy"], marker="o", s=45, label=p["label"])
    ax.axhline(90, color="tab:red", linestyle="--", linewidth=1, label="90 % target")
    if key == "tflite_bytes":
        ax.axvline(64 * 1024, color="tab:orange", linestyle=":", linewidth=1, label="64 KiB")
    ax.set_xscale("log")
    ax.margins(x=0.25)  # room for the labels of the points furthest right
    ax.set_xlabel(xlabel)
    ax.set_ylabel("CIFAR-10 test accuracy (%, LiteRT)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def validation_curves(curves: dict[str, list[tuple[int, float]]], title: str, path: Path) -> None:
    """Validation accuracy after every epoch, one line per run: the swings a final figure hides."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    marker = "." if max(len(points) for points in curves.values()) <= 30 else None  # dots only where they stay apart
    colours = len(plt.rcParams["axes.prop_cycle"])
    for i, (label, points) in enumerate(curves.items()):
        epochs, values = zip(*points)
        # Once the colour cycle wraps, the line style tells the runs apart.
        style = ("-", "--", ":")[i // colours % 3]
        ax.plot(epochs, np.array(values) * 100, linewidth=1.2, linestyle=style, marker=marker, label=label)
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sparsity_curves(curves_by_run: dict[str, dict[str, list[tuple[int, float]]]], path: Path) -> None:
    """Per-layer sparsity against fine-tuning step, one panel per run."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves_by_run), figsize=(7 * len(curves_by_run), 4.5), squeeze=False)
    for ax, (run, curves) in zip(axes[0], curves_by_run.items()):
        for layer, points in sorted(curves.items()):
            steps, values = zip(*points)
            ax.plot(steps, np.array(values) * 100, linewidth=1, label=layer.replace("prune_low_magnitude_", ""))
        ax.set_title(f"{run}: per-layer sparsity while pruning")
        ax.set_xlabel("fine-tuning step")
        ax.set_ylabel("sparsity (%)")
        ax.grid(True, alpha=0.3)
        if len(curves) <= 12:
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def trials_scatter(records: list[dict[str, Any]], best: dict[str, Any] | None, path: Path) -> None:
    """A search's scored trials: validation accuracy against weights, coloured by MACs."""
    plt = _pyplot()
    scored = [r for r in records if "val_accuracy" in r]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if scored:
        points = ax.scatter(
            [r["weights"] for r in scored], [100 * r["val_accuracy"] for r in scored], c=[r["macs"] / 1e6 for r in scored], cmap="viridis", s=40
        )
        fig.colorbar(points, label="MACs (millions)")
        for r in scored:
            ax.annotate(r["trial_id"], (r["weights"], 100 * r["val_accuracy"]), textcoords="offset points", xytext=(4, 3), fontsize=6)
    if best is not None:
        ax.scatter([best["weights"]], [100 * best["val_accuracy"]], marker="*", s=220, facecolors="none", edgecolors="tab:red", label="chosen")
        ax.legend(fontsize=7)
    ax.set_xlabel("weights (conv/dense kernel entries)")
    ax.set_ylabel("validation accuracy (%, proxy training)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
