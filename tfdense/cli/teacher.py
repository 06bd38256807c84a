"""`python -m tfdense teacher MODEL.h5 [MODEL.h5 ...]`: what teacher a set of trained models makes.

    python -m tfdense teacher tuning/teachers/dn111k_float.h5 tuning/teachers/dn71k_float.h5
    python -m tfdense teacher RUN/train/model.h5 --half-precision tuning/teachers/NAME_fp16.h5

A student runs for hours against its teacher, so score the teacher first: the validation
accuracy of each model alone and of all of them as one `train.teacher` (the geometric mean of
their predictions), each without and with `train.teacher_flip`, beside the MACs that teacher
adds to every training image. Scored on the validation split the training runs hold out, never
on the test set.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfdense.config import DataConfig
from tfdense.data import DataError, prepare
from tfdense.tables import markdown_table


@dataclass(frozen=True)
class TeacherScore:
    """One candidate `train.teacher` and `train.teacher_flip`, scored on the validation split."""

    files: tuple[str, ...]
    flip: bool
    val_accuracy: float
    macs: int  # teacher MACs per training image: every member, twice with the flip


def score_teachers(files: list[str], x_val: np.ndarray, y_val: np.ndarray, batch_size: int = 500) -> list[TeacherScore]:
    """Each file alone, then all of them together (when several), each without and with the flip."""
    import tf_keras as keras

    from tfdense.costs import model_costs
    from tfdense.distillation import load_teacher

    member_macs = {f: model_costs(keras.models.load_model(f, compile=False)).macs for f in files}
    candidates = [(f,) for f in files] + ([tuple(files)] if len(files) > 1 else [])
    scores = []
    for members in candidates:
        for flip in (False, True):
            teacher = load_teacher(members, flip)
            probs = np.concatenate([teacher(x_val[i : i + batch_size], training=False).numpy() for i in range(0, len(x_val), batch_size)])
            macs = sum(member_macs[f] for f in members) * (2 if flip else 1)
            scores.append(TeacherScore(members, flip, float(np.mean(probs.argmax(axis=1) == y_val)), macs))
    return scores


def format_scores(scores: list[TeacherScore]) -> str:
    return markdown_table(("teacher", "flip", "val accuracy", "MACs per image"),
                          [(" + ".join(Path(f).name for f in s.files), "yes" if s.flip else "no", f"{s.val_accuracy * 100:.2f} %", f"{s.macs:,}") for s in scores])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfdense teacher", description=__doc__.split("\n\n")[0].replace("`", ""))
    parser.add_argument("models", nargs="+", help="trained Keras model files (e.g. RUN/train/model.h5)")
    parser.add_argument("--val-size", type=int, default=DataConfig.val_size, help="the runs' data.val_size (default %(default)s)")
    parser.add_argument("--split-seed", type=int, default=DataConfig.split_seed, help="the runs' data.split_seed (default %(default)s)")
    parser.add_argument("--data-dir", help="local CIFAR-10 copy (see README)")
    parser.add_argument("--half-precision", metavar="OUT.h5",
                        help="with one model: also write it with float16 weights to OUT.h5 (half the bytes, for committing) and score that copy")
    args = parser.parse_args(argv)
    missing = [m for m in args.models if not Path(m).is_file()]
    if missing:
        print(f"error: no such model file: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.half_precision and len(args.models) != 1:
        print("error: --half-precision copies one model; give exactly one", file=sys.stderr)
        return 2
    try:
        data = prepare(DataConfig(data_dir=args.data_dir, val_size=args.val_size, split_seed=args.split_seed))
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    files = list(args.models)
    if args.half_precision:
        from tfdense.files import half_precision_copy

        half_precision_copy(Path(files[0]), Path(args.half_precision))
        files.append(args.half_precision)
    scores = [s for f in files for s in score_teachers([f], data.x_val, data.y_val)] if args.half_precision else score_teachers(files, data.x_val, data.y_val)
    print(format_scores(scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
