"""`python -m tuning.proxy_check`: does the proxy ranking predict the ranking after real training?

    python -m tuning.proxy_check --search tuning/searches/rung1-bayes --trials 3,5,9,12 --epochs 30 \\
        --out tuning/searches/rung1-bayes/proxy-check

Retrains the chosen scored trials of a search on the full training split for `--epochs` (the
trial's own config: architecture and recipe), each in its own resumable folder, scores them on
the validation split, and reports the Spearman rank correlation between the proxy's validation
accuracy and the long training's, as `proxy_check.md` / `proxy_check.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from tfdense.tables import markdown_table
from tuning.trials import TrialsError, read_search


def ranks(values: list[float]) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank."""
    values_arr = np.asarray(values, dtype=float)
    order = values_arr.argsort(kind="stable")
    result = np.empty(len(values_arr))
    result[order] = np.arange(1, len(values_arr) + 1)
    for v in np.unique(values_arr):
        tied = values_arr == v
        result[tied] = result[tied].mean()
    return result


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rho: the Pearson correlation of the ranks; None when either side is all ties."""
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    spread = np.sqrt((ra**2).sum() * (rb**2).sum())
    if spread == 0:
        return None
    return float((ra * rb).sum() / spread)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuning.proxy_check", description=__doc__.split("\n\n")[0].replace("`", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--search", required=True, help="a search folder holding trials.json")
    parser.add_argument("--trials", required=True, help="comma-separated trial ids (at least 4 scored ones)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of the long training (default 30)")
    parser.add_argument("--out", required=True, help="folder for the retrained trials and the report")
    args = parser.parse_args(argv)
    search = Path(args.search)
    try:
        results = read_search(search)
        trials = results.trials
    except TrialsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    chosen = [t.strip() for t in args.trials.split(",") if t.strip()]
    unknown = [t for t in chosen if t not in trials or "val_accuracy" not in trials[t]]
    if unknown or len(chosen) < 4 or args.epochs < 1:
        print(f"error: need >= 4 scored trial ids and --epochs >= 1 (not scored or unknown: {', '.join(unknown) or 'none'})", file=sys.stderr)
        return 2

    import keras_tuner as kt  # TensorFlow loads here, after the checks above

    from tfdense import data as data_lib
    from tfdense import fitting
    from tfdense.config import resolve
    from tfdense.files import read_history, write_atomic, write_json
    from tfdense.model import build_densenet
    from tuning import space

    settings = results.settings
    base = resolve(settings["preset"], None, settings.get("overrides", []))
    out = Path(args.out)
    rows = []
    data_cache: dict = {}
    for trial_id in chosen:
        hp = kt.HyperParameters()
        hp.values = dict(trials[trial_id]["hyperparameters"])
        config = space.to_config(hp, base)
        # The warm-up rule of the search's proxy (tuning/tuner.py), so a short check is not half warm-up.
        train = dataclasses.replace(config.train, epochs=args.epochs, warmup_epochs=min(config.train.warmup_epochs, args.epochs / 4))
        config = dataclasses.replace(config, train=train, data=dataclasses.replace(config.data, train_subset=0))
        key = config.data
        if key not in data_cache:
            data_cache[key] = data_lib.prepare(config.data)
        folder = out / f"trial_{trial_id}"
        paths = fitting.FitPaths(backup=folder / "backup", history=folder / "history.csv", logs=folder / "logs", best_weights=folder / "best.weights.h5")
        history = read_history(paths.history)
        if len(history) >= args.epochs and paths.best_weights.is_file():
            # Trained by an earlier call of this command: its kept weights are scored again, not retrained.
            print(f"[tuning] trial {trial_id}: trained before in {folder}", file=sys.stderr, flush=True)
            model = build_densenet(config.model)
            model.load_weights(str(paths.best_weights))
            summary = fitting.FitSummary.from_history(history)
        else:
            print(f"[tuning] trial {trial_id}: {args.epochs} epochs on all training images -> {folder}", file=sys.stderr, flush=True)
            model, summary = fitting.fit_config(config, data_cache[key], paths)
        long_accuracy = fitting.accuracy(model, data_cache[key].x_val, data_cache[key].y_val)
        fitting.discard_backup(paths)
        rows.append({"trial_id": trial_id, "proxy_val_accuracy": trials[trial_id]["val_accuracy"], "long_val_accuracy": long_accuracy,
                     "weights": trials[trial_id]["weights"], "macs": trials[trial_id]["macs"], "seconds": summary.train_seconds})
    rho = spearman([r["proxy_val_accuracy"] for r in rows], [r["long_val_accuracy"] for r in rows])
    table = markdown_table(("trial", "proxy val accuracy", "long val accuracy", "weights", "MACs", "seconds"),
                           [(r["trial_id"], f"{100 * r['proxy_val_accuracy']:.2f} %", f"{100 * r['long_val_accuracy']:.2f} %", f"{int(r['weights']):,}",
                             f"{int(r['macs']):,}", f"{r['seconds']:.0f}") for r in rows])
    rho_text = f"**{rho:.3f}**" if rho is not None else "undefined (one ranking is all ties)"
    lines = [f"# Proxy vs {args.epochs}-epoch training ({len(rows)} trials of {search})", "", table, "", f"Spearman rank correlation: {rho_text}", ""]
    write_atomic(out / "proxy_check.md", "\n".join(lines))
    write_json(out / "proxy_check.json", {"spearman": rho, "epochs": args.epochs, "trials": rows})
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
