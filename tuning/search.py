"""`python -m tuning.search`: a size-aware architecture and recipe search with keras-tuner.

    python -m tuning.search --tuner bayesian --max-trials 16 --profile rung1 --out tuning/searches/rung1
    python -m tuning.search --tuner hyperband --max-epochs 9 --max-weights 45000 --out tuning/searches/64k
    python -m tuning.search --tuner grid --space ninety --profile ninety --around tuning/searches/ninety-bayes:18 \
        --free kernel_size --epochs 30 --train-subset 0 --out tuning/searches/ninety-refine
    python -m tuning.search --tuner grid --space ninety --profile ninety --around tuning/searches/ninety-latency:1 \
        --free layers_3=4,3 --free compression=0.75,0.5 --epochs 30 --train-subset 0 --out tuning/searches/ninety-per-tensor

Candidates over the weights/MACs budget are rejected before any training. Each scored
candidate trains on the proxy schedule (`--epochs` on `--train-subset` images; Hyperband sets
the epochs per bracket) and is scored on the fixed validation split. Re-running the same command
continues a search that was interrupted (even by SIGKILL). Results: see `tuning/results.py`.

A refinement (`--around SEARCH:TRIAL --free NAME ...`) holds every hyperparameter of an earlier
search's trial fixed but the `--free` ones (`NAME=V1,V2` narrows one to the listed values): a
short proxy ranks coarse choices but not the top few candidates, so the few it cannot separate
are searched again on a longer one (`--tuner grid` tries each combination once).

Distributed (keras-tuner's chief/worker mode over gRPC): run the same command on every
machine with KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT set to the chief's address and
KERASTUNER_TUNER_ID set to `chief` on the chief and a unique name (`worker0`, ...) on each
worker. The chief hands out trials and writes the results; a worker killed mid-trial is
restarted with the same KERASTUNER_TUNER_ID and resumes its trial.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from tfdense.config import ConfigError, add_config_arguments, config_from_args
from tuning.trials import TrialsError, pinned_around

PROFILE_NAMES = ("rung1", "64k", "ninety")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tuning.search", description=__doc__.split("\n\n")[0].replace("`", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--tuner", choices=("hyperband", "bayesian", "random", "grid"), default="bayesian",
                        help="search algorithm (default: bayesian; grid: every combination of the free choices)")
    parser.add_argument("--out", required=True, help="search folder: keras-tuner state, trial logs, results")
    parser.add_argument("--profile", choices=PROFILE_NAMES, default="rung1",
                        help="budget profile: rung1 = 70,000 weights / 12.5M MACs / 98,496 predicted int8 bytes, 64k = 45,000 / 12.5M / 65,536 predicted int8 bytes, "
                        "ninety = 112,000 / 76.5M / 131,072 (default: rung1)")
    parser.add_argument("--max-weights", type=int, help="override the profile's weight budget (conv/dense kernel entries)")
    parser.add_argument("--max-macs", type=int, help="override the profile's MAC budget (per 32x32 image)")
    parser.add_argument("--max-bytes", type=int, help="override the profile's budget on the predicted stripped int8 .tflite bytes")
    parser.add_argument("--max-latency-ratio", type=float,
                        help="override the profile's latency budget: the untrained int8 file's single-thread LiteRT latency over the "
                        "MLPerf Tiny large ResNet's, timed together before training (ninety: 1.0; 0 = not timed)")
    parser.add_argument("--max-trials", type=int, default=16, help="trials for bayesian/random, rejected ones included (default 16)")
    parser.add_argument("--max-epochs", type=int, default=9, help="hyperband: epochs of the longest bracket (default 9)")
    parser.add_argument("--epochs", type=int, default=6, help="proxy epochs per trial for bayesian/random (default 6)")
    parser.add_argument("--train-subset", type=int, default=15000, help="proxy training images, stratified; 0 = all 45,000 (default 15000)")
    parser.add_argument("--objective", choices=("accuracy", "imt"), default="accuracy",
                        help="maximise validation accuracy, or minimise the IMT score above --accuracy-floor (default: accuracy)")
    parser.add_argument("--accuracy-floor", type=float, default=0.0, help="validation accuracy a candidate needs for the imt objective")
    add_config_arguments(parser, config_file=False, what="everything the space does not set: the search")
    parser.add_argument("--space", choices=("full", "ninety", "tiny"), default="full",
                        help="the search space (ninety: depthwise DenseNets from 32x32, for --profile ninety; tiny: two smoke-sized models, for tests)")
    parser.add_argument("--around", metavar="SEARCH:TRIAL", help="refine around a scored trial of an earlier search folder: its hyperparameters, but the --free ones, stay fixed")
    parser.add_argument("--free", action="append", default=[], metavar="NAME[=V1,V2,...]",
                        help="with --around: a hyperparameter the refinement searches, over the space's range or only the listed values; repeatable")
    parser.add_argument("--seed", type=int, default=0, help="the tuner's sampling seed (training seeds come from train.seed)")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2, help="per-trial Keras progress: 0 silent, 1 bar, 2 one line per epoch")
    parser.add_argument("--results-only", action="store_true", help="write the results of the search in --out as it stands, run no trial")
    return parser


def free_values(specs: list[str]) -> dict[str, tuple[Any, ...]]:
    """`--free NAME` or `--free NAME=V1,V2,...` by name: the listed values (YAML scalars), or ()
    for the space's whole range."""
    import yaml

    free: dict[str, tuple[Any, ...]] = {}
    for spec in specs:
        name, sep, listed = spec.partition("=")
        name = name.strip()
        values = tuple(yaml.safe_load(v) for v in listed.split(",") if v.strip()) if sep else ()
        if not name or (sep and not values):
            raise ConfigError(f"--free expects NAME or NAME=V1,V2,..., got {spec!r}")
        if name in free:
            raise ConfigError(f"--free {name} is given twice")
        free[name] = values
    return free


def refinement(args: argparse.Namespace, free: list[str]) -> tuple[tuple[str, Any], ...]:
    """The hyperparameters `--around` pins (none without it), all but the `free` names."""
    if not args.around:
        if free:
            raise ConfigError("--free needs --around SEARCH:TRIAL")
        return ()
    folder, sep, trial_id = args.around.rpartition(":")
    if not sep or not folder or not trial_id:
        raise ConfigError(f"--around must be SEARCH_FOLDER:TRIAL_ID, got {args.around!r}")
    return pinned_around(Path(folder), trial_id, free)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        base = config_from_args(args)
        for name in ("max_trials", "max_epochs", "epochs"):
            if getattr(args, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
        if not 0 <= args.train_subset <= 50000 - base.data.val_size:
            raise ConfigError(f"--train-subset must be in [0, {50000 - base.data.val_size}], got {args.train_subset}")
        if not 0 <= args.accuracy_floor < 1:
            raise ConfigError(f"--accuracy-floor must be in [0, 1), got {args.accuracy_floor}")
        for name in ("max_weights", "max_macs", "max_bytes"):
            if getattr(args, name) is not None and getattr(args, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1")
        free = free_values(args.free)
        pinned = refinement(args, list(free))
    except (ConfigError, TrialsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from tuning import results, space  # TensorFlow and keras-tuner load here, after the checks
    from tuning.tuner import TUNERS, Proxy, SearchSettings

    profile = space.PROFILES[args.profile]
    latency = profile.max_latency_ratio if args.max_latency_ratio is None else (args.max_latency_ratio or None)
    budget = space.Budget(max_weights=args.max_weights or profile.max_weights, max_macs=args.max_macs or profile.max_macs,
                          max_bytes=args.max_bytes or profile.max_bytes, max_latency_ratio=latency)
    unknown = sorted(set(free) - set(space.declared_names(args.space)))
    if unknown:
        print(f"error: --free {', '.join(unknown)}: not a hyperparameter of --space {args.space}", file=sys.stderr)
        return 2
    try:
        narrowed = tuple((name, space.narrowed(args.space, name, values)) for name, values in free.items() if values)
    except ValueError as e:
        print(f"error: --free {e}", file=sys.stderr)
        return 2
    settings = SearchSettings(
        base=base,
        budget=budget,
        proxy=Proxy(epochs=args.epochs, train_subset=args.train_subset),
        objective=args.objective,
        accuracy_floor=args.accuracy_floor,
        space=args.space,
        verbose=args.verbose,
        pinned=pinned,
        narrowed=narrowed,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.tuner == "hyperband":
        tuner = TUNERS["hyperband"](settings, out, max_epochs=args.max_epochs, seed=args.seed)
    else:
        tuner = TUNERS[args.tuner](settings, out, max_trials=args.max_trials, seed=args.seed)
    if args.results_only:
        if not (out / "search" / "oracle.json").exists():
            print(f"error: {out} holds no search to report", file=sys.stderr)
            return 2
    else:
        tuner.search(verbose=1)
    role = os.environ.get("KERASTUNER_TUNER_ID", "")
    if "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in role:
        print(f"[tuning] worker {role}: no more trials", file=sys.stderr)
        return 0
    summary = {
        "tuner": args.tuner,
        "budget": dataclasses.asdict(budget),
        "proxy": dataclasses.asdict(settings.proxy),
        "objective": args.objective,
        "accuracy_floor": args.accuracy_floor,
        "preset": args.preset,
        "overrides": args.set,
        "space": args.space,
        **({"around": args.around, "free": args.free} if args.around else {}),
    }
    best = results.write_results(tuner, summary, out, args.objective, budget)
    if best is None:
        print("[tuning] no trial was scored (all rejected or failed); see summary.md", file=sys.stderr)
        return 1
    print(f"[tuning] best: trial {best['trial_id']}, val accuracy {best['val_accuracy']:.4f}, "
          f"{int(best['weights']):,} weights, {int(best['macs']):,} MACs -> {out / 'best_config.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
