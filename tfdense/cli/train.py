"""`python -m tfdense.train`: train, prune, quantization-aware fine-tune, export and evaluate.

The command line is checked (preset, config file, overrides, stages, run directory) before
TensorFlow is imported, so a mistake is refused in a fraction of a second with one line and
exit code 2. See `python -m tfdense.train --help`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tfdense.config import ConfigError, add_config_arguments, config_from_args
from tfdense.rundir import STAGES, RunDir, RunDirError


def parse_stages(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip()) if text != "all" else STAGES
    unknown = [s for s in names if s not in STAGES]
    if unknown or not names:
        raise RunDirError(f"unknown stage(s) {', '.join(unknown) or repr(text)}; stages are: {', '.join(STAGES)} (or 'all')")
    return tuple(s for s in STAGES if s in names)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tfdense.train",
        description="Train (and, stage by stage, compress and export) a CIFAR-10 DenseNet. "
        "Re-running the same command resumes the run in --out.",
    )
    add_config_arguments(parser)
    parser.add_argument("--out", help="run directory (default: runs/<preset>)")
    parser.add_argument("--stages", default="all", help=f"comma-separated subset of {','.join(STAGES)} (default: all)")
    parser.add_argument("--from", dest="source", metavar="RUN",
                        help="take the completed train (and matching prune, qat) stages from another run of the same "
                        "model, data and train config, e.g. to compare compression settings on one trained model")
    parser.add_argument("--data-dir", help="local CIFAR-10 copy: cifar-10-batches-py folder or cifar-10-python.tar.gz")
    return parser


SUMMARY_KEYS = ("test_accuracy", "tflite_bytes", "weights", "nonzero_weights", "macs", "imt_score", "latency_ms")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args, [f"data.data_dir={os.path.abspath(args.data_dir)}"] if args.data_dir else [])
        stages = parse_stages(args.stages)
        run_dir = RunDir(args.out or Path("runs") / args.preset)
        adopted = run_dir.adoptable_stages(RunDir(args.source), config) if args.source else []
        resuming = run_dir.open(config, args.preset)
        if adopted:
            run_dir.adopt(RunDir(args.source), adopted)
            print(f"[tfdense] stages {', '.join(adopted)} taken from {args.source}", file=sys.stderr, flush=True)
    except (ConfigError, RunDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[tfdense] {'resuming' if resuming else 'starting'} run in {run_dir.path}", file=sys.stderr, flush=True)

    from tfdense import pipeline  # TensorFlow loads here, after every check above
    from tfdense.data import DataError

    try:
        summary = pipeline.run(config, run_dir, stages)
    except BaseException as e:
        # A run this command created that failed before its first epoch leaves nothing behind.
        if not resuming and run_dir.remove_if_empty_start():
            print(f"[tfdense] removed {run_dir.path}: the run failed before its first epoch", file=sys.stderr)
        if isinstance(e, (RunDirError, ConfigError)):
            print(f"error: {e}", file=sys.stderr)
            return 2
        if isinstance(e, DataError):
            print(f"error: {e}", file=sys.stderr)
            return 1
        raise
    shown = {k: summary[k] for k in SUMMARY_KEYS if k in summary}
    if shown:
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))
    print(f"[tfdense] metrics: {run_dir.metrics_file}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
