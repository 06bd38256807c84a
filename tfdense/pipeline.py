"""The run directory and the stage sequence behind `python -m tfdense.train`.

A run directory holds `config.json` (the resolved config, preset and git revision), one folder
per stage with its model and `metrics.json`, TensorBoard logs under `logs/<stage>`, and the
top-level `metrics.json` with every completed stage's figures. A stage whose `metrics.json`
exists is complete and is skipped, so re-running the same command resumes the run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
from tfdense.config import PRESETS, ConfigError, RunConfig, resolve
from tfdense.runio import git_revision, read_json, write_json_atomic

# The order is the method; later stages read the model the previous stage wrote.
STAGES = ("train", "prune", "qat", "export", "evaluate")


# Kept at the top of metrics.json from whichever stage last reported them (training speed
# comes from `train`, accuracy from the latest model).
HEADLINE = ("val_accuracy", "test_accuracy", "params", "macs", "seconds_per_epoch", "train_img_per_s")


class UsageError(ValueError):
    """A bad command line or run directory, reported in one line with exit code 2."""


def parse_stages(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip()) if text != "all" else STAGES
    unknown = [s for s in names if s not in STAGES]
    if unknown or not names:
        raise UsageError(f"unknown stage(s) {', '.join(unknown) or repr(text)}; stages are: {', '.join(STAGES)} (or 'all')")
    return tuple(s for s in STAGES if s in names)


def prepare_run_dir(out: Path, config: RunConfig, preset: str) -> bool:
    """Creates or re-opens `out`; returns True when resuming a run of the same config.

    Refuses (UsageError) a directory that holds anything other than a run of this config,
    so nothing of another run is ever overwritten.
    """
    saved = out / "config.json"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    if saved.exists():
        try:
            previous = read_json(saved)["config"]
        except (OSError, ValueError, KeyError) as e:
            raise UsageError(f"--out {out} holds an unreadable config.json ({e}); choose another --out") from e
        if previous != json.loads(json.dumps(config.to_dict())):  # tuples are lists in JSON
            raise UsageError(f"--out {out} holds a run with a different config; choose another --out or delete it")
        _check_writable(out)
        return True
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} is not empty and holds no tfdense run; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {out} cannot be created: {e.strerror}") from e
    _check_writable(out)
    write_json_atomic(saved, {"preset": preset, "config": config.to_dict(), "git_revision": git_revision(), "tfdense": tfdense.__version__})
    return False


def _check_writable(out: Path) -> None:
    try:
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise UsageError(f"--out {out} is not writable: {e.strerror}") from e


def _stage_functions() -> dict[str, Callable]:
    from tfdense.evaluate import evaluate_stage
    from tfdense.export import export_stage
    from tfdense.prune import prune_stage
    from tfdense.qat import qat_stage
    from tfdense.train import train_stage

    return {"train": train_stage, "prune": prune_stage, "qat": qat_stage, "export": export_stage, "evaluate": evaluate_stage}


def load_stage_input(out: Path, stage: str):
    """The model a stage starts from when the previous stage ran in an earlier process."""
    import tf_keras as keras

    from tfdense.qat import load_qat_model

    if stage == "train":
        return None
    if stage in ("export", "evaluate"):
        path = out / "qat" / "model.h5"
        if not path.exists():
            raise UsageError(f"stage {stage} needs {path}: run the qat stage first")
        return load_qat_model(path)
    candidates = [out / "prune" / "model.h5"] if stage == "qat" else []
    for path in candidates + [out / "train" / "model.h5"]:
        if path.exists():
            return keras.models.load_model(str(path), compile=False)
    raise UsageError(f"stage {stage} needs {out / 'train' / 'model.h5'}: run the train stage first")


def run(config: RunConfig, out: Path, stages: tuple[str, ...] = STAGES) -> dict[str, Any]:
    """Runs `stages` in order in `out`, skipping complete ones; returns the top-level metrics."""
    from tfdense import data as data_lib

    functions = _stage_functions()
    data = data_lib.prepare(config.data)
    model = None
    stage_metrics: dict[str, Any] = {}
    for name in STAGES:
        workdir = out / name
        done = workdir / "metrics.json"
        if done.exists():
            stage_metrics[name] = read_json(done)
            model = None  # a later stage loads the saved model
            print(f"[tfdense] stage {name}: complete, skipped", file=sys.stderr)
            continue
        if name not in stages:
            model = None  # the next stage must not get a model this stage never transformed
            continue
        print(f"[tfdense] stage {name} -> {workdir}", file=sys.stderr, flush=True)
        if model is None:
            model = load_stage_input(out, name)
        model, stage_metrics[name] = functions[name](model, data, config, workdir)
    summary = {"stages": stage_metrics, "config": config.to_dict()}
    for metrics in stage_metrics.values():  # headline figures, the latest stage's winning
        summary.update({k: v for k, v in metrics.items() if k in HEADLINE})
    if stage_metrics:  # then everything the last completed stage reports
        summary.update({k: v for k, v in list(stage_metrics.values())[-1].items() if k != "models"})
    write_json_atomic(out / "metrics.json", summary)
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tfdense.train",
        description="Train (and, stage by stage, compress and export) a CIFAR-10 DenseNet. "
        "Re-running the same command resumes the run in --out.",
    )
    parser.add_argument("--preset", default="quick", help=f"one of {', '.join(PRESETS)} (default: quick)")
    parser.add_argument("--config", help="JSON or YAML file of {section: {field: value}} applied over the preset")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="override one field; repeatable")
    parser.add_argument("--out", help="run directory (default: runs/<preset>)")
    parser.add_argument("--stages", default="all", help=f"comma-separated subset of {','.join(STAGES)} (default: all)")
    parser.add_argument("--data-dir", help="local CIFAR-10 copy: cifar-10-batches-py folder or cifar-10-python.tar.gz")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        overrides = list(args.set)
        if args.data_dir:
            overrides.append(f"data.data_dir={os.path.abspath(args.data_dir)}")
        config = resolve(args.preset, args.config, overrides)
        stages = parse_stages(args.stages)
        out = Path(args.out or Path("runs") / args.preset)
        resuming = prepare_run_dir(out, config, args.preset)
    except (ConfigError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[tfdense] {'resuming' if resuming else 'starting'} run in {out}", file=sys.stderr, flush=True)
    from tfdense.data import DataError

    try:
        summary = run(config, out, stages)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    keys = ("test_accuracy", "tflite_bytes", "params", "nonzero_params", "macs", "imt_score", "latency_ms")
    print(" ".join(f"{k}={summary[k]:.4g}" if isinstance(summary.get(k), float) else f"{k}={summary.get(k)}" for k in keys if k in summary))
    print(f"[tfdense] metrics: {out / 'metrics.json'}", file=sys.stderr)
    return 0
