"""The stage sequence behind `python -m tfdense.train`: train -> prune -> qat -> export -> evaluate.

Each stage reads the model of the stage before it (in memory when that stage just ran, else
from the run directory) and writes its own outputs and metrics. A stage whose metrics exist is
complete and is skipped, so re-running the same command resumes the run. The run directory's
top-level `metrics.json` holds the deployed model's figures and every stage's metrics.
"""

from __future__ import annotations

import sys
from typing import Any

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
import tf_keras as keras

from tfdense import data as data_lib
from tfdense.config import RunConfig
from tfdense.hparams import flatten, log_hparams
from tfdense.metrics import HEADLINE, STAGE_METRICS
from tfdense.files import write_json
from tfdense.config import result_identity
from tfdense.rundir import STAGES, RunDir
from tfdense.stages import evaluation, export, pruning, quantization, training

MODULES = {"train": training, "prune": pruning, "qat": quantization, "export": export, "evaluate": evaluation}


def input_stage(stage: str, run_dir: RunDir) -> str | None:
    """The stage whose model `stage` starts from (None: train builds a new one)."""
    return {"train": None, "prune": "train", "qat": run_dir.float_source(), "export": "qat", "evaluate": "qat"}[stage]


def run(config: RunConfig, run_dir: RunDir, stages: tuple[str, ...] = STAGES) -> dict[str, Any]:
    """Runs `stages` in order in `run_dir`, skipping complete ones; returns the run's summary."""
    data = data_lib.prepare(config.data)
    model: keras.Model | None = None
    model_from: str | None = None  # the stage whose output `model` is
    for name in STAGES:
        if run_dir.is_complete(name):
            print(f"[tfdense] stage {name}: complete, skipped", file=sys.stderr)
            continue
        if name not in stages:
            continue
        source = input_stage(name, run_dir)
        if source is not None and model_from != source:
            model = MODULES[source].load(run_dir)
        print(f"[tfdense] stage {name} -> {run_dir.stage(name)}", file=sys.stderr, flush=True)
        model, _ = MODULES[name].run(model if source is not None else None, data, config, run_dir)
        # export and evaluate hand the QAT model through unchanged
        model_from = name if name in ("train", "prune", "qat") else "qat"
    return write_summary(run_dir, config)


def write_summary(run_dir: RunDir, config: RunConfig) -> dict[str, Any]:
    """RUN/metrics.json: the deployed model's figures (once evaluated) and every stage's metrics."""
    stage_metrics = {name: run_dir.read_stage_metrics(name) for name in STAGES if run_dir.is_complete(name)}
    summary: dict[str, Any] = {}
    if "evaluate" in stage_metrics:
        deployed = STAGE_METRICS["evaluate"].from_dict(stage_metrics["evaluate"]).deployed.to_dict()
        summary.update({k: deployed[k] for k in HEADLINE})
    summary["stages"] = stage_metrics
    summary["config"] = config.to_dict()
    write_json(run_dir.metrics_file, summary)
    figures = {k: v for k, v in summary.items() if k in HEADLINE}
    for stage in ("train", "prune", "qat"):
        if stage in stage_metrics:
            figures[f"{stage}_val_accuracy"] = stage_metrics[stage]["val_accuracy"]
    if figures:
        # One HParams row per run: `tensorboard --logdir` over several runs compares them. Only the
        # settings that decide results, so a rerun that changes none leaves the record alone.
        log_hparams(run_dir.logs("hparams"), flatten(result_identity(config.to_dict())), figures, session=run_dir.path.name)
    return summary
