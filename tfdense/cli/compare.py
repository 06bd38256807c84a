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
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from tfdense.files import validation_curve
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
    comparisons = [compare_curves(reference, curve, label, args.since) for label, curve in list(curves.items())[1:]]
    unmatched = [run for run, c in zip(args.runs[1:], comparisons) if c is None]
    if unmatched:
        print(f"error: no epoch in common with {args.runs[0]}: {', '.join(unmatched)}", file=sys.stderr)
        return 2
    print(f"reference: {args.runs[0]} ({args.stage}, {len(reference)} epochs); differences in accuracy points\n")
    print(comparison_table(comparisons, args.since))
    if args.since > 1:
        print()
        print(epoch_table(curves, args.since))
    if args.plot:
        from tfdense.plots import validation_curves

        validation_curves(curves, f"validation accuracy per epoch ({args.stage})", args.plot)
        print(f"\nplot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
