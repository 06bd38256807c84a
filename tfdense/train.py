"""The float training stage, and `python -m tfdense.train`, the entry point of the whole pipeline.

Stage: `train_stage(model, data, config, workdir) -> (model, metrics)` trains with SGD + Nesterov,
warm-up then cosine (or one-cycle) decay, decoupled weight decay and label smoothing; keeps the
best-on-validation weights; and resumes from its last completed epoch after any kill.
The command line lives in `tfdense.pipeline`; see `python -m tfdense.train --help`.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

from tfdense import data as data_lib
from tfdense.config import RunConfig, TrainConfig
from tfdense.model import build_densenet, model_costs
from tfdense.runio import write_json_atomic


class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak`, then cosine (or linear, for one-cycle) decay to 0 at `total_steps`.

    A function of the optimizer's step counter only, so a resumed run continues the schedule
    exactly where the checkpoint left it.
    """

    def __init__(self, peak: float, warmup_steps: int, total_steps: int, kind: str = "cosine"):
        super().__init__()
        self.peak = peak
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.kind = kind

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = float(max(self.warmup_steps, 1))
        rising = self.peak * (step + 1.0) / warmup
        progress = tf.clip_by_value((step - self.warmup_steps) / float(max(self.total_steps - self.warmup_steps, 1)), 0.0, 1.0)
        if self.kind == "cosine":
            falling = 0.5 * self.peak * (1.0 + tf.cos(math.pi * progress))
        else:
            falling = self.peak * (1.0 - progress)
        return tf.where(step < self.warmup_steps, rising, falling)

    def get_config(self) -> dict[str, Any]:
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps, "kind": self.kind}


def make_optimizer(train: TrainConfig, steps_per_epoch: int, learning_rate: float | None = None, epochs: int | None = None,
                   warmup_epochs: float | None = None) -> keras.optimizers.Optimizer:
    """SGD + Nesterov with the warm-up/decay schedule; BatchNorm and biases skip weight decay."""
    epochs = train.epochs if epochs is None else epochs
    warmup = train.warmup_epochs if warmup_epochs is None else warmup_epochs
    schedule = WarmupDecay(
        peak=train.learning_rate if learning_rate is None else learning_rate,
        warmup_steps=int(round(warmup * steps_per_epoch)),
        total_steps=epochs * steps_per_epoch,
        kind=train.schedule,
    )
    optimizer = keras.optimizers.SGD(
        learning_rate=schedule, momentum=train.momentum, nesterov=train.nesterov, weight_decay=train.weight_decay or None
    )
    # Decaying BN scales/offsets and biases only fights the normalisation.
    optimizer.exclude_from_weight_decay(var_names=["_bn", "bias", "gamma", "beta"])
    return optimizer


def compile_for_training(model: keras.Model, optimizer, train: TrainConfig) -> keras.Model:
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=train.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=train.jit_compile,
    )
    return model


class EpochLog(keras.callbacks.Callback):
    """Times each epoch and writes `history.csv`, one row per completed epoch.

    Rows for epochs that a resumed run repeats (killed after logging, before its backup) are
    replaced rather than duplicated, and the file is rewritten atomically.
    """

    def __init__(self, path: Path, train_images: int):
        super().__init__()
        self.path = path
        self.train_images = train_images

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._train_end = None

    def on_test_begin(self, logs=None):
        self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        train_seconds = (self._train_end or now) - self._start
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        row["lr"] = float(self.model.optimizer.learning_rate)  # the rate of the epoch's last step
        row["epoch_seconds"] = now - self._start
        row["train_img_per_s"] = self.train_images / train_seconds
        rows = [r for r in read_history(self.path) if int(r["epoch"]) < epoch + 1] + [row]
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            writer.writeheader()
            for r in rows:
                writer.writerow({k: r.get(k, "") for k in row})
        os.replace(tmp, self.path)


def read_history(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
    for r in rows:
        r["epoch"] = int(r["epoch"])
    return rows


class BestCheckpoint(keras.callbacks.ModelCheckpoint):
    """`ModelCheckpoint(save_best_only)` that remembers the best score across a resume."""

    def __init__(self, filepath: Path, history: Path):
        super().__init__(str(filepath), monitor="val_accuracy", mode="max", save_best_only=True, save_weights_only=True)
        previous = [r["val_accuracy"] for r in read_history(history) if "val_accuracy" in r]
        if previous and filepath.exists():
            self.best = max(previous)


def distribution_strategy() -> tf.distribute.Strategy:
    """All visible GPUs, with no change to the command; the default strategy on CPU."""
    gpus = tf.config.list_physical_devices("GPU")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


def evaluate_predictions(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Top-1 class of a Keras model for each uint8 image (no augmentation)."""
    probs = model.predict(data_lib.eval_dataset(x, np.zeros(len(x), np.uint8)).map(lambda a, b: a), verbose=0)
    return np.argmax(probs, axis=1)


def evaluate_accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a Keras model on uint8 images (no augmentation)."""
    return float(np.mean(evaluate_predictions(model, x) == y))


def train_stage(model: keras.Model | None, data: data_lib.Cifar, config: RunConfig, workdir: Path) -> tuple[keras.Model, dict[str, Any]]:
    """Trains `model` (or a new one from `config.model`) and returns it with its metrics.

    Writes into `workdir`: `best.weights.h5` (best validation accuracy), `history.csv`,
    `model.h5` (the best model), and `backup/` while training, for resume.
    """
    train = config.train
    workdir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(train.seed)
    steps_per_epoch = len(data.x_train) // train.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"train.batch_size {train.batch_size} exceeds the {len(data.x_train)} training images")
    strategy = distribution_strategy()
    with strategy.scope():
        model = model if model is not None else build_densenet(config.model)
        compile_for_training(model, make_optimizer(train, steps_per_epoch), train)
    history_path = workdir / "history.csv"
    best_path = workdir / "best.weights.h5"
    callbacks = [
        # First: it restores model, optimizer and epoch before the others look at them.
        keras.callbacks.BackupAndRestore(str(workdir / "backup"), delete_checkpoint=False),
        EpochLog(history_path, steps_per_epoch * train.batch_size),
        BestCheckpoint(best_path, history_path),
        keras.callbacks.TensorBoard(str(workdir.parent / "logs" / workdir.name), update_freq="epoch", profile_batch=0),
    ]
    train_ds = data_lib.train_dataset(data.x_train, data.y_train, train.batch_size, config.data, seed=train.seed,
                                      num_classes=config.model.num_classes)
    val_ds = data_lib.eval_dataset(data.x_val, data.y_val, num_classes=config.model.num_classes)
    model.fit(train_ds, validation_data=val_ds, epochs=train.epochs, callbacks=callbacks, verbose=train.verbose)

    model.load_weights(str(best_path))
    model.save(str(workdir / "model.h5"), include_optimizer=False)
    history = read_history(history_path)
    best = max(history, key=lambda r: r.get("val_accuracy", -1.0))
    # The first epoch includes graph tracing and XLA compilation; a resumed one re-traces.
    steady = [r for r in history if r["epoch"] > 1] or history
    metrics = {
        "val_accuracy": evaluate_accuracy(model, data.x_val, data.y_val),
        "test_accuracy": evaluate_accuracy(model, data.x_test, data.y_test),
        **model_costs(model),
        "best_epoch": int(best["epoch"]),
        "epochs": len(history),
        "seconds_per_epoch": float(np.median([r["epoch_seconds"] for r in steady])),
        "train_img_per_s": float(np.median([r["train_img_per_s"] for r in steady])),
        "train_seconds": float(sum(r["epoch_seconds"] for r in history)),
    }
    write_json_atomic(workdir / "metrics.json", metrics)
    # Only now: a kill before metrics.json exists must still find the finished backup.
    shutil.rmtree(workdir / "backup", ignore_errors=True)
    return model, metrics


if __name__ == "__main__":
    from tfdense.pipeline import main

    sys.exit(main())
