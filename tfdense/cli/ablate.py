"""`python -m tfdense ablate`: what each recipe change buys, one at a time, at a fixed budget.

    python -m tfdense ablate --preset full --config tuning/configs/rung1_dn71k.yaml --set train.epochs=30 \\
        --arm baseline --arm ema=train.ema_momentum=0.999 --arm ls0.2=train.label_smoothing=0.2 \\
        --out tuning/ablations/rung1-30ep

Each arm is the base config plus its overrides (`name=section.field=value[,section.field=value]`,
or a bare `name` for the base itself; a list value keeps its commas: `model.block_layers=[6,6]`),
trained with the train stage only into `OUT/<name>` (a normal run directory: resumable,
re-running skips finished arms). Scored on the validation split, never the test set. Writes
`OUT/ablation.md` and `OUT/ablation.json` (validation accuracy of the kept weights, best epoch,
seconds per epoch, each arm's difference to the first arm) and `OUT/curves.png` (every arm's
validation accuracy after each epoch).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tfdense.config import ConfigError, add_config_arguments, apply_overrides, check_paths, config_from_args, parse_arms
from tfdense.files import validation_curve, write_atomic, write_json
from tfdense.rundir import RunDir, RunDirError
from tfdense.tables import markdown_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfdense ablate", description=__doc__.split("\n\n")[0].replace("`", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    add_config_arguments(parser, what="every arm")
    parser.add_argument("--arm", action="append", required=True, metavar="NAME[=OVERRIDES]", help="one arm; the first is the reference")
    parser.add_argument("--out", required=True, help="folder holding one run directory per arm")
    args = parser.parse_args(argv)
    try:
        base = config_from_args(args)
        runs = [(name, overrides, RunDir(Path(args.out) / name), apply_overrides(base, overrides)) for name, overrides in parse_arms(args.arm)]
        for _, _, _, config in runs:
            check_paths(config)
        for _, _, run_dir, config in runs:
            run_dir.open(config, args.preset)
    except (ConfigError, RunDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from tfdense import pipeline  # TensorFlow loads here, after every check above
    from tfdense.plots import validation_curves

    rows = []
    for name, overrides, run_dir, config in runs:
        print(f"[tfdense] arm {name} -> {run_dir.path}", file=sys.stderr, flush=True)
        pipeline.run(config, run_dir, ("train",))
        train = run_dir.read_stage_metrics("train")
        rows.append({"arm": name, "overrides": overrides, **{k: train[k] for k in ("val_accuracy", "best_epoch", "epochs", "seconds_per_epoch", "weights", "macs")}})
    reference = rows[0]["val_accuracy"]
    table = markdown_table(("arm", "overrides", "val accuracy", "vs first", "best epoch", "s/epoch"),
                           [(r["arm"], ", ".join(r["overrides"]) or "(base)", f"{100 * r['val_accuracy']:.2f} %", f"{100 * (r['val_accuracy'] - reference):+.2f}",
                             f"{r['best_epoch']}/{r['epochs']}", f"{r['seconds_per_epoch']:.1f}") for r in rows])
    write_atomic(Path(args.out) / "ablation.md", f"# Ablation: {args.preset} {args.config or ''} {' '.join(args.set)}\n\n{table}\n\n![validation accuracy per epoch](curves.png)\n")
    write_json(Path(args.out) / "ablation.json", rows)
    curves = {name: validation_curve(run_dir.history("train")) for name, _, run_dir, _ in runs}
    validation_curves(curves, f"ablation: validation accuracy per epoch ({args.out})", Path(args.out) / "curves.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
