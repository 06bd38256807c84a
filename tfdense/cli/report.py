"""A Markdown table and PNG plots of runs, next to the MLPerf Tiny peers, measured in one process.

    python -m tfdense report runs/quick [runs/other ...] --peers mlperf-tiny --out report/

Every .tflite of every run (and every peer) is evaluated again here by the same LiteRT
evaluator on the 10,000 test images, so accuracies and latencies are comparable. Writes
`report.md` (the stage table of each run and the side-by-side model table), `accuracy_vs_bytes.png`,
`accuracy_vs_macs.png` and, for pruned runs, `pruning_curves.png` (per-layer sparsity read
back from the run's TensorBoard events).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tfdense.data import load_cifar10
from tfdense.litert import evaluate_tflite, format_table
from tfdense.metrics import ModelMetrics
from tfdense.peers import PEER_SETS, peer_files
from tfdense.plots import accuracy_scatter, sparsity_curves, validation_curves
from tfdense.files import validation_curve, write_json
from tfdense.rundir import RunDir


def pruning_curves(run_dir: RunDir) -> dict[str, list[tuple[int, float]]]:
    """Per-layer `(step, sparsity)` points from the prune stage's TensorBoard events."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(run_dir.logs("prune").rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"tensors": 0, "scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("tensors", []) + acc.Tags().get("scalars", []):
            if not tag.endswith("/sparsity"):
                continue
            layer = tag.split("/")[0].removeprefix("prune_low_magnitude_")
            if tag in acc.Tags().get("tensors", []):
                points = [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
            else:
                points = [(e.step, float(e.value)) for e in acc.Scalars(tag)]
            curves.setdefault(layer, []).extend(points)
    return {k: sorted(set(v)) for k, v in curves.items()}


def stage_rows(measured: dict[str, ModelMetrics]) -> list[tuple[str, ModelMetrics]]:
    """One `(stage, metrics)` row per stage of a run: the file that shows that stage's effect."""
    pruned = "model_unpruned_float.tflite" in measured
    files = [("train (float32)", "model_unpruned_float.tflite" if pruned else "model_float.tflite")]
    if pruned:
        files.append(("prune (float32)", "model_float.tflite"))
    files += [
        ("PTQ int8 (no QAT)", "model_ptq_int8.tflite"),
        ("QAT int8 (deployed)", "model_int8.tflite"),
        ("QAT int8, sparse encoding", "model_int8_sparse.tflite"),
    ]
    return [(stage, measured[name]) for stage, name in files if name in measured]


def build_report(run_dirs: list[Path], peers: list[Path], out: Path, latency_images: int = 300) -> dict[str, Any]:
    """Evaluates everything in this process and writes the report files into `out`."""
    _, (x_test, y_test) = load_cifar10()
    out.mkdir(parents=True, exist_ok=True)

    def measure(path: Path) -> ModelMetrics:
        print(f"[tfdense] evaluating {path} ...", file=sys.stderr, flush=True)
        return evaluate_tflite(path, x_test, y_test, 1, latency_images)[0]

    sections, points, curves_by_run, training, everything = [], [], {}, {}, {}
    for path in run_dirs:
        run_dir = RunDir(path)
        rows = stage_rows({p.name: measure(p) for p in run_dir.tflite_files()})
        for stage, m in rows:
            points.append({**m.to_dict(), "label": f"{path.name}: {stage.split(' (')[0]}", "kind": "ours"})
        sections.append(f"### {path}\n\n" + format_table(rows, "stage"))
        everything[str(path)] = [{"stage": stage, **m.to_dict()} for stage, m in rows]
        curve = validation_curve(run_dir.history("train"))
        if curve:
            training[path.name] = curve
        curves = pruning_curves(run_dir)
        if curves:
            curves_by_run[path.name] = curves
    peer_rows = [(peer.stem, measure(peer)) for peer in peers]
    points += [{**m.to_dict(), "label": label, "kind": "peer"} for label, m in peer_rows]
    everything["peers"] = [{"peer": label, **m.to_dict()} for label, m in peer_rows]

    accuracy_scatter(points, "tflite_bytes", ".tflite bytes (log)", out / "accuracy_vs_bytes.png")
    accuracy_scatter(points, "macs", "MACs per image (log)", out / "accuracy_vs_macs.png")
    if curves_by_run:
        sparsity_curves(curves_by_run, out / "pruning_curves.png")
    if training:
        validation_curves(training, "train stage: validation accuracy per epoch", out / "validation_curves.png")
    text = [
        "# tfdense report",
        "",
        f"All models evaluated in one process with LiteRT, 1 thread, on the {len(x_test):,} CIFAR-10 test images. "
        "Weights and MACs are read from each .tflite graph; IMT score as in `tfdense/scores.py`.",
        "",
        *[s + "\n" for s in sections],
    ]
    if peer_rows:
        text += ["### Peers", "", format_table(peer_rows, "peer"), ""]
    text += ["![accuracy vs bytes](accuracy_vs_bytes.png)", "", "![accuracy vs MACs](accuracy_vs_macs.png)", ""]
    if training:
        text += ["![validation accuracy per epoch](validation_curves.png)", ""]
    if curves_by_run:
        text += ["![pruning curves](pruning_curves.png)", ""]
    (out / "report.md").write_text("\n".join(text))
    write_json(out / "report.json", everything)
    return everything


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfdense report", description="Markdown table and plots of tfdense runs beside peer models.")
    parser.add_argument("runs", nargs="+", help="run directories (with metrics.json and model_*.tflite)")
    parser.add_argument("--peers", nargs="*", default=[], help=f"peer .tflite files, or a peer set shipped with tfdense ({', '.join(PEER_SETS)})")
    parser.add_argument("--out", default="report", help="output folder (default: report/)")
    parser.add_argument("--latency-images", type=int, default=300)
    args = parser.parse_args(argv)
    runs = [Path(r) for r in args.runs]
    for run in runs:
        if not RunDir(run).metrics_file.exists() or not RunDir(run).tflite_files():
            print(f"error: {run} holds no exported run (metrics.json and model_*.tflite); run all stages first", file=sys.stderr)
            return 2
    peers = [p for item in args.peers for p in (peer_files(item) if item in PEER_SETS else [Path(item)])]
    for peer in peers:
        if not peer.is_file():
            print(f"error: peer {peer}: no such file", file=sys.stderr)
            return 2
    build_report(runs, peers, Path(args.out), args.latency_images)
    print((Path(args.out) / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
