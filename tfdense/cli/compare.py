"""`python -m tfdense compare`: runs' validation accuracy against a reference run, epoch by epoch.

    python -m tfdense compare tuning/curves/rung1-v3.csv tuning/curves/rung1-v3-k4s2.csv --since 16 --plot curves.png

The first run is the reference. Each other run is compared with it only at the epochs both have
recorded, so a run still training can be judged against a finished one at the same point of its
schedule: epochs ahead, the mean difference over all of them and from `--since` on, and the
best accuracy of each run up to the last epoch they share. A single epoch's figure swings by a
few tenths of a point, so the means say more than the last row. Reads each run's
`<stage>/history.csv` (train by default), or a history.csv given as a file (a finished run's
curve kept after its run directory left git, e.g. `tuning/curves/rung1-v3.csv`), and loads no
TensorFlow, so it runs beside a training.

Runs of different lengths meet at equal epochs at different learning rates: a 250-epoch cosine
trails a 150-epoch one at every shared epoch until late. `--progress` compares them at equal
fractions of their schedules instead (epoch 100 of 250 beside epoch 60 of 150), reading each
other run between its two nearest epochs; a run directory's schedule length is its config's
`epochs` for the stage, a kept history file's is the epochs it recorded.

    python -m tfdense compare tuning/curves/ninety-per-tensor-long.csv tuning/curves/ninety-per-tensor-250.csv --progress
"""

from __future__ import annotations

import argparse
import bisect
import sys
from dataclasses import dataclass
from pathlib import Path

from tfdense.files import read_json, validation_curve
from tfdense.rundir import RunDir
from tfdense.tables import markdown_table


@dataclass(frozen=True)
class CurveComparison:
    """One run's validation curve against the reference's, over the epochs both recorded."""

    run: str
    epochs: int  # epochs both runs recorded
    last_epoch: int  # the last of them
    ahead: int  # epochs where this run's accuracy is higher
    mean_difference: float  # this run minus the reference, accuracy fraction, over all shared epochs
    mean_difference_since: float | None  # the same from `since` on (None: no shared epoch there)
    best: float  # this run's best accuracy up to `last_epoch`
    reference_best: float  # the reference's best up to `last_epoch`


def compare_curves(reference: list[tuple[int, float]], other: list[tuple[int, float]], run: str, since: int = 1) -> CurveComparison | None:
    """`other` against `reference` over their shared epochs (None if they share none)."""
    ref, oth = dict(reference), dict(other)
    shared = sorted(set(ref) & set(oth))
    if not shared:
        return None
    diffs = {e: oth[e] - ref[e] for e in shared}
    late = [diffs[e] for e in shared if e >= since]
    return CurveComparison(run=run, epochs=len(shared), last_epoch=shared[-1], ahead=sum(d > 0 for d in diffs.values()),
                           mean_difference=sum(diffs.values()) / len(shared), mean_difference_since=sum(late) / len(late) if late else None,
                           best=max(oth[e] for e in shared), reference_best=max(ref[e] for e in shared))


def at_equal_progress(curve: list[tuple[int, float]], length: int, reference_epochs: list[int], reference_length: int) -> list[tuple[int, float]]:
    """`curve`, of a `length`-epoch schedule, read at each reference epoch's fraction of a
    `reference_length`-epoch schedule: linear between the two nearest recorded epochs, and only
    inside the epochs it recorded. Keyed by reference epoch, so it compares like any curve."""
    points = dict(curve)
    epochs = sorted(points)
    read = []
    for reference_epoch in reference_epochs:
        x = reference_epoch * length / reference_length
        if not epochs[0] <= x <= epochs[-1]:
            continue
        hi = epochs[bisect.bisect_left(epochs, x)]
        lo = epochs[bisect.bisect_right(epochs, x) - 1]
        accuracy = points[lo] if hi == lo else points[lo] + (points[hi] - points[lo]) * (x - lo) / (hi - lo)
        read.append((reference_epoch, accuracy))
    return read


def schedule_length(run: str, history: Path, stage: str, curve: list[tuple[int, float]]) -> int:
    """A run directory's scheduled epochs for `stage`; for a kept history file, the last epoch of
    its `curve` (such a file is a finished run's whole curve)."""
    if history == Path(run):
        return max(epoch for epoch, _ in curve)
    return int(read_json(RunDir(run).config_file)["config"][stage]["epochs"])


def comparison_table(comparisons: list[CurveComparison], since: int) -> str:
    def points(x: float | None) -> str:
        return "" if x is None else f"{100 * x:+.2f}"

    late = since > 1  # from epoch 1 on, the late mean is the overall one
    header = ("run", "shared epochs", "ahead", "mean diff") + ((f"mean diff from epoch {since}",) if late else ()) + ("best", "reference best")
    rows = []
    for c in comparisons:
        shared = f"1-{c.last_epoch}" if c.epochs == c.last_epoch else f"{c.epochs} (to {c.last_epoch})"
        rows.append((c.run, shared, f"{c.ahead}/{c.epochs}", points(c.mean_difference))
                    + ((points(c.mean_difference_since),) if late else ()) + (f"{100 * c.best:.2f} %", f"{100 * c.reference_best:.2f} %"))
    return markdown_table(header, rows)


def epoch_table(curves: dict[str, list[tuple[int, float]]], since: int) -> str:
    """Each run's accuracy at every shared epoch from `since` on, and its difference to the reference."""
    (reference_name, reference), *others = curves.items()
    ref = dict(reference)
    other_points = [(name, dict(curve)) for name, curve in others]
    header = ["epoch", reference_name] + [h for name, _ in other_points for h in (name, "diff")]
    rows = []
    for epoch in sorted(e for e in ref if e >= since and any(e in points for _, points in other_points)):
        row: list[object] = [epoch, f"{100 * ref[epoch]:.2f}"]
        for _, points in other_points:
            row += [f"{100 * points[epoch]:.2f}", f"{100 * (points[epoch] - ref[epoch]):+.2f}"] if epoch in points else ["", ""]
        rows.append(row)
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfdense compare", description=__doc__.split("\n\n")[0].replace("`", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories or history.csv files; the first is the reference")
    parser.add_argument("--stage", default="train", choices=("train", "prune", "qat"), help="whose history to compare (default: train)")
    parser.add_argument("--since", type=int, default=1, metavar="EPOCH", help="also average from this epoch on, and list each epoch from it")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="also draw every run's curve")
    parser.add_argument("--progress", action="store_true",
                        help="compare at equal fractions of each run's schedule, not at equal epochs (epochs are the reference's)")
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        parser.error("give a reference run and at least one run to compare with it")
    histories = [Path(run) if Path(run).is_file() else RunDir(run).history(args.stage) for run in args.runs]
    # Runs are labelled by folder (or file) name where those tell them apart, as tuning/runs/* do.
    names = [history.stem if history == Path(run) else Path(run).name for run, history in zip(args.runs, histories)]
    labels = names if len(set(names)) == len(names) else args.runs
    curves = {}
    for run, label, history in zip(args.runs, labels, histories):
        curve = validation_curve(history)
        if not curve:
            print(f"error: {run} has no recorded {args.stage} epoch ({history})", file=sys.stderr)
            return 2
        curves[label] = curve
    reference = curves[labels[0]]
    lengths = ""
    if args.progress:
        try:
            length = {label: schedule_length(run, history, args.stage, curves[label]) for run, label, history in zip(args.runs, labels, histories)}
        except (OSError, ValueError, KeyError) as e:
            print(f"error: --progress needs each run directory's config.json with {args.stage}.epochs ({e})", file=sys.stderr)
            return 2
        reference_epochs = [epoch for epoch, _ in reference]
        curves = {label: curve if label == labels[0] else at_equal_progress(curve, length[label], reference_epochs, length[labels[0]])
                  for label, curve in curves.items()}
        lengths = "; at equal fractions of schedules of " + ", ".join(f"{label} {n}" for label, n in length.items()) + " epochs, in the reference's epochs"
    comparisons = [compare_curves(reference, curve, label, args.since) for label, curve in list(curves.items())[1:]]
    unmatched = [run for run, c in zip(args.runs[1:], comparisons) if c is None]
    if unmatched:
        print(f"error: no epoch in common with {args.runs[0]}: {', '.join(unmatched)}", file=sys.stderr)
        return 2
    print(f"reference: {args.runs[0]} ({args.stage}, {len(reference)} epochs){lengths}; differences in accuracy points\n")
    print(comparison_table(comparisons, args.since))
    if args.since > 1:
        print()
        print(epoch_table(curves, args.since))
    if args.plot:
        from tfdense.plots import validation_curves

        title = f"validation accuracy per {'reference ' if args.progress else ''}epoch ({args.stage})"
        validation_curves(curves, title, args.plot)
        print(f"\nplot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
