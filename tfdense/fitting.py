"""The one resumable fit loop, shared by every fitting stage (train, prune, QAT) and the tuner.

`fit(build, data, data_config, recipe, paths)` seeds, builds the model inside the distribution strategy's
scope, compiles it with SGD + Nesterov under a warm-up/decay schedule, decoupled weight decay
and label smoothing, and trains with: BackupAndRestore (resume after any kill, schedule
included), a per-epoch `history.csv`, TensorBoard, and optionally a best-on-validation
checkpoint. Stages differ only in what `build` returns, the recipe's epochs and learning rate,
and extra callbacks.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

from tfdense import data as data_lib
from tfdense.distillation import Distiller, load_teacher, teacher_views
from tfdense.config import ConfigError, RunConfig, TrainConfig
from tfdense.files import read_history, write_atomic

# Each stage draws its own random stream from `train.seed`, so re-running one stage alone
# reproduces what it did inside the whole pipeline.
STAGE_SEED_OFFSETS = {"train": 0, "prune": 1, "qat": 2, "tune": 3}


def stage_seed(seed: int, stage: str) -> int:
    return seed + STAGE_SEED_OFFSETS[stage]


@dataclass(frozen=True)
class Recipe:
    """What one fit needs: the `train` section's shared settings (batch, optimizer, schedule
    kind, label smoothing, distillation weights), with this stage's own epochs, peak rate,
    warm-up, seed and teacher."""

    train: TrainConfig
    epochs: int
    learning_rate: float  # peak, for train.batch_size images per step
    warmup_epochs: float
    seed: int
    ema_momentum: float = 0.0
    teacher: tuple[str, ...] = ()  # distil from these Keras model files, as one teacher (empty = off)
    teacher_flip: bool = False
    teacher_views: int = 0  # 0: the teacher predicts every batch; N: its cached predictions on N views
    views_seed: int | None = None  # what draws those views; None: `seed`
    jit_compile: bool = False
    verbose: int = 1

    @property
    def batch_size(self) -> int:
        return self.train.batch_size

    @classmethod
    def for_stage(cls, config: RunConfig, stage: str) -> Recipe:
        """The recipe of `stage`: train's own, or train's with prune/QAT epochs and rate, no warm-up."""
        train = config.train
        own = {"train": (train.epochs, train.learning_rate, train.warmup_epochs)}
        own["prune"] = (config.prune.epochs, config.prune.learning_rate, 0.0)
        own["qat"] = (config.qat.epochs, config.qat.learning_rate, 0.0)
        epochs, learning_rate, warmup = own[stage]
        return cls(
            train=train,
            epochs=epochs,
            learning_rate=learning_rate,
            warmup_epochs=warmup,
            seed=stage_seed(train.seed, stage),
            # The average and the teacher are the train stage's: an average would revive pruned
            # weights and blur QAT's ranges; prune and QAT distil only when asked (`with_teacher`).
            ema_momentum=train.ema_momentum if stage == "train" else 0.0,
            teacher=train.teacher if stage == "train" else (),
            teacher_flip=train.teacher_flip and stage == "train",
            teacher_views=train.teacher_views if stage == "train" else 0,
            # TF-MOT's fake-quant wrappers are not XLA-compiled here (never measured to work).
            jit_compile=train.jit_compile and stage != "qat",
            verbose=train.verbose,
        )


class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak`, then cosine (or linear) decay to 0 at `total_steps`.

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


def steps_per_epoch(train_images: int, batch_size: int) -> int:
    """Full batches per epoch (the last partial batch is dropped)."""
    steps = train_images // batch_size
    if steps < 1:
        raise ConfigError(f"train.batch_size {batch_size} exceeds the {train_images} training images")
    return steps


class AveragingSGD(keras.optimizers.SGD):
    """SGD whose weight average warms up and also covers the BatchNorm moving statistics.

    Keras' own average (`use_ema`) starts from the initial weights at a fixed momentum, so after
    2,100 steps at 0.999 the random initialisation still weighs 12 %, and it pairs averaged
    kernels with moving statistics that describe the live ones. Measured on the ablation model
    at 12 epochs: 40.16 % validation accuracy against 75.06 % without an average. Here the
    momentum at step t is min(m, (1 + t) / (10 + t)), as TensorFlow's ExponentialMovingAverage
    with `num_updates`, and the statistics are averaged beside the weights (timm's ModelEmaV2
    does the same with its buffers).
    """

    def __init__(self, statistics: Sequence[tf.Variable] = (), **kwargs):
        super().__init__(**kwargs)
        self.statistics = list(statistics)
        self._statistics_average: list[tf.Variable] = []

    def build(self, var_list):
        if getattr(self, "_built", False):
            return
        super().build(var_list)
        if self.use_ema:
            self._statistics_average = [self.add_variable_from_reference(v, "average", initial_value=v) for v in self.statistics]

    def average_momentum(self) -> tf.Tensor:
        steps = tf.cast(self.iterations, tf.float32)
        return tf.minimum(self.ema_momentum, (1.0 + steps) / (10.0 + steps))

    def _update_model_variables_moving_average(self, var_list):
        if not self.use_ema:
            return
        momentum = self.average_momentum()

        def blend(average, value):
            average.assign(momentum * average + (1.0 - momentum) * value)

        averages = [self._model_variables_moving_average[self._index_dict[self._var_key(v)]] for v in var_list]
        for average, value in zip(averages + self._statistics_average, list(var_list) + self.statistics):
            self._distribution_strategy.extended.update(average, blend, args=(value,), group=False)

    def _overwrite_model_variables_with_average_value(self, var_list):
        super()._overwrite_model_variables_with_average_value(var_list)
        for value, average in zip(self.statistics, self._statistics_average):
            self._distribution_strategy.extended.update(value, lambda v, a: v.assign(a), args=(average,))


def batchnorm_statistics(model: keras.Model) -> list[tf.Variable]:
    """The moving means and variances of every BatchNormalization in `model`."""
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    return [v for layer in norms for v in (layer.moving_mean, layer.moving_variance)]


def make_optimizer(recipe: Recipe, steps: int, statistics: Sequence[tf.Variable] = ()) -> keras.optimizers.Optimizer:
    """SGD + Nesterov on the warm-up/decay schedule; BatchNorm and biases skip weight decay.

    With `recipe.ema_momentum`, an `AveragingSGD` that also averages `statistics`.
    """
    schedule = WarmupDecay(
        peak=recipe.learning_rate,
        warmup_steps=int(round(recipe.warmup_epochs * steps)),
        total_steps=recipe.epochs * steps,
        kind=recipe.train.schedule,
    )
    options = dict(
        learning_rate=schedule,
        momentum=recipe.train.momentum,
        nesterov=recipe.train.nesterov,
        weight_decay=recipe.train.weight_decay or None,
    )
    if recipe.ema_momentum > 0:
        optimizer = AveragingSGD(statistics, use_ema=True, ema_momentum=recipe.ema_momentum, **options)
    else:
        optimizer = keras.optimizers.SGD(**options)
    # Decaying BN scales/offsets and biases only fights the normalisation.
    optimizer.exclude_from_weight_decay(var_names=["_bn", "bias", "gamma", "beta"])
    return optimizer


def compile_model(model: keras.Model, recipe: Recipe, steps: int) -> keras.Model:
    model.compile(
        optimizer=make_optimizer(recipe, steps, batchnorm_statistics(getattr(model, "student", model))),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.train.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=recipe.jit_compile,
    )
    return model


def is_multi_worker() -> bool:
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    return sum(len(v) for v in cluster.values()) > 1


@functools.cache
def distribution_strategy() -> tf.distribute.Strategy:
    """Several machines when TF_CONFIG describes a cluster, all local GPUs, else the default.

    No other change to the command is needed: every worker runs the same command. One strategy
    per process (a second MultiWorkerMirroredStrategy would reconfigure the collectives).
    """
    if is_multi_worker():
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


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
        # the rate of the epoch's last step (a MirroredVariable under a multi-worker strategy)
        row["lr"] = float(tf.convert_to_tensor(self.model.optimizer.learning_rate))
        row["epoch_seconds"] = now - self._start
        row["train_img_per_s"] = self.train_images / train_seconds
        rows = [r for r in read_history(self.path) if int(r["epoch"]) < epoch + 1] + [row]
        write_atomic(self.path, _csv_text(rows, list(row)))


def _csv_text(rows: list[dict[str, Any]], fields: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r.get(k, "") for k in fields})
    return buffer.getvalue()


class AveragedWeights:
    """Swaps a model's trainable weights and BatchNorm statistics with the optimizer's averages and back."""

    def __init__(self, model: keras.Model):
        self.model = model
        self.saved: list[np.ndarray] | None = None

    @property
    def active(self) -> bool:
        return bool(getattr(self.model.optimizer, "use_ema", False))

    def _variables(self) -> list[tf.Variable]:
        return list(self.model.trainable_variables) + list(getattr(self.model.optimizer, "statistics", []))

    def swap_in(self) -> None:
        if self.active and self.saved is None:
            self.saved = [v.numpy() for v in self._variables()]
            self.model.optimizer._overwrite_model_variables_with_average_value(self.model.trainable_variables)

    def swap_out(self) -> None:
        if self.saved is not None:
            for v, value in zip(self._variables(), self.saved):
                v.assign(value)
            self.saved = None


class EvaluateAveraged(keras.callbacks.Callback):
    """Validation (after every epoch) scores the weight average when the optimizer keeps one."""

    def on_test_begin(self, logs=None):
        self._swap = AveragedWeights(self.model)
        self._swap.swap_in()

    def on_test_end(self, logs=None):
        self._swap.swap_out()


class BestCheckpoint(keras.callbacks.ModelCheckpoint):
    """`ModelCheckpoint(save_best_only)` that remembers the best score across a resume and
    saves the weight average when the optimizer keeps one (the weights validation scored)."""

    def __init__(self, filepath: Path, history: Path):
        super().__init__(str(filepath), monitor="val_accuracy", mode="max", save_best_only=True, save_weights_only=True)
        previous = [r["val_accuracy"] for r in read_history(history) if "val_accuracy" in r]
        if previous and filepath.exists():
            self.best = max(previous)

    def _save_model(self, epoch, batch, logs):
        swap = AveragedWeights(self.model)
        swap.swap_in()
        fitted = self.model
        # A Distiller's checkpoint is its student's weights (the teacher never changes).
        self.model = getattr(fitted, "student", fitted)
        try:
            super()._save_model(epoch, batch, logs)
        finally:
            self.model = fitted
            swap.swap_out()


@dataclass(frozen=True)
class FitSummary:
    """What a fit's history says: epochs run, the best one, and speed."""

    epochs: int
    best_epoch: int
    best_val_accuracy: float
    seconds_per_epoch: float  # median, epoch 1 (tracing) left out
    train_img_per_s: float
    train_seconds: float

    @classmethod
    def none(cls) -> FitSummary:
        """No epoch run (a train stage with `train.epochs: 0`)."""
        return cls(epochs=0, best_epoch=0, best_val_accuracy=float("nan"), seconds_per_epoch=0.0, train_img_per_s=0.0, train_seconds=0.0)

    @classmethod
    def from_history(cls, rows: list[dict[str, float]]) -> FitSummary:
        best = max(rows, key=lambda r: r.get("val_accuracy", -1.0))
        steady = [r for r in rows if r["epoch"] > 1] or rows
        return cls(
            epochs=len(rows),
            best_epoch=int(best["epoch"]),
            best_val_accuracy=float(best.get("val_accuracy", float("nan"))),
            seconds_per_epoch=float(np.median([r["epoch_seconds"] for r in steady])),
            train_img_per_s=float(np.median([r["train_img_per_s"] for r in steady])),
            train_seconds=float(sum(r["epoch_seconds"] for r in rows)),
        )


@dataclass(frozen=True)
class FitPaths:
    """Where a fit keeps its state (the run directory's paths for one stage, or a tuner trial's)."""

    backup: Path
    history: Path
    logs: Path
    best_weights: Path | None = None  # None: keep the last epoch's weights


def fit(
    build: Callable[[], keras.Model],
    data: data_lib.Cifar,
    data_config,
    recipe: Recipe,
    paths: FitPaths,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    tensorboard: keras.callbacks.TensorBoard | None = None,
) -> tuple[keras.Model, FitSummary]:
    """Builds (inside the strategy scope), compiles and trains; resumes after a kill.

    Args:
      build: returns the model to train; called inside the distribution strategy's scope,
        after seeding, so wrappers (pruning, QAT) create their variables there.
      data: train and validation arrays; validation is evaluated after every epoch.
      data_config: the `DataConfig` whose augmentation the training batches get.
      recipe: epochs, schedule and optimizer settings (`Recipe.for_stage`).
      paths: backup, history, TensorBoard and (optional) best-weights locations.
      callbacks: extra callbacks, run after the resume/logging ones.
      tensorboard: a TensorBoard callback to use instead of the default (pruning summaries).

    Returns the trained model (best-on-validation weights when `paths.best_weights`, except
    on a multi-worker cluster, where every worker keeps the last epoch's) and a
    summary of the whole history, resumed epochs included. The backup is left in place:
    call `discard_backup` once the stage's results are safely written.
    """
    keras.utils.set_random_seed(recipe.seed)
    steps = steps_per_epoch(len(data.x_train), recipe.batch_size)
    views = None
    if recipe.teacher and recipe.teacher_views:
        views = teacher_views(recipe.teacher, recipe.teacher_flip, data.x_train, data_config, recipe.teacher_views,
                              recipe.seed if recipe.views_seed is None else recipe.views_seed)
    with distribution_strategy().scope():
        model = student = build()
        if recipe.teacher:
            teacher = load_teacher(recipe.teacher, recipe.teacher_flip)
            model = Distiller(student, teacher, recipe.train.distill_alpha, recipe.train.distill_temperature)
            # Built before fit, so BackupAndRestore builds the optimizer and restores its momentum
            # on resume (an unbuilt model resumed with the optimizer's slots left at zero).
            model.build(student.input_shape)
        compile_model(model, recipe, steps)
    paths.history.parent.mkdir(parents=True, exist_ok=True)
    chain = [
        # First: it restores model, optimizer and epoch before the others look at them.
        keras.callbacks.BackupAndRestore(str(paths.backup), delete_checkpoint=False),
        EpochLog(paths.history, steps * recipe.batch_size),
        tensorboard or keras.callbacks.TensorBoard(str(paths.logs), update_freq="epoch", profile_batch=0),
        EvaluateAveraged(),
    ]
    # Across machines only the chief keeps checkpoints (Keras writes the others' to temporary
    # folders), so every worker keeps the last epoch's weights and they stay identical.
    keep_best = paths.best_weights is not None and not is_multi_worker()
    if keep_best:
        chain.append(BestCheckpoint(paths.best_weights, paths.history))
    # One endless dataset and `steps_per_epoch`, so Keras keeps one iterator for the whole fit:
    # with a finite dataset it makes a new iterator every epoch, and deleting the old one left
    # the CPU idle for 20-40 s after each ~105 s epoch (a 150-epoch run's `history.csv`
    # timestamps against its `epoch_seconds`; `py-spy dump --native` shows fit waiting in
    # RootDataset::Iterator's destructor on a tf.data thread).
    train_ds = data_lib.train_dataset(data.x_train, data.y_train, recipe.batch_size, data_config, seed=recipe.seed, views=views,
                                      repeat=True)
    val_ds = data_lib.eval_dataset(data.x_val, data.y_val)
    model.fit(train_ds, validation_data=val_ds, epochs=recipe.epochs, steps_per_epoch=steps, callbacks=chain + list(callbacks),
              verbose=recipe.verbose)
    if keep_best:
        student.load_weights(str(paths.best_weights))
    return student, FitSummary.from_history(read_history(paths.history))


def fit_config(config: RunConfig, data: data_lib.Cifar, paths: FitPaths, recipe: Recipe | None = None) -> tuple[keras.Model, FitSummary]:
    """Trains `config.model` on `data` into `paths`, from scratch or from `train.init_from`'s
    weights: the one way a config is trained in a folder, shared by the train stage, the tuner's
    trials and the proxy check.

    `recipe` defaults to the config's own train recipe (`Recipe.for_stage(config, "train")`);
    the tuner passes its proxy's shorter one.
    """
    recipe = recipe or Recipe.for_stage(config, "train")
    return fit(lambda: initial_model(config, data), data, config.data, recipe, paths)


def initial_model(config: RunConfig, data: data_lib.Cifar) -> keras.Model:
    """`config.model` as training starts it: fresh initialisers, or `train.init_from`'s weights."""
    from tfdense.model import build_for_training

    model = build_for_training(config.model, data.x_train)
    if config.train.init_from:
        load_init_weights(model, config.train.init_from)
    return model


def load_init_weights(model: keras.Model, path: str) -> None:
    """Copies the weights of the Keras model file `path` into `model`, layer by layer by name;
    ConfigError when the two architectures differ (a layer missing or a shape that disagrees)."""
    source = keras.models.load_model(path, compile=False)
    theirs = {layer.name: layer for layer in source.layers}
    for layer in model.layers:
        if not layer.weights:
            continue
        other = theirs.get(layer.name)
        shapes = [tuple(w.shape) for w in layer.weights]
        if other is None or [tuple(w.shape) for w in other.weights] != shapes:
            found = "no such layer" if other is None else f"weights {[tuple(w.shape) for w in other.weights]}"
            raise ConfigError(f"train.init_from {path} is another architecture: layer {layer.name!r} has weights {shapes}, the file {found}")
        layer.set_weights(other.get_weights())


def discard_backup(paths: FitPaths) -> None:
    """Removes the resume checkpoint; only after the stage's metrics exist (a kill before must resume)."""
    shutil.rmtree(paths.backup, ignore_errors=True)


def predict_classes(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Top-1 class of a Keras model for each uint8 image (no augmentation)."""
    images = data_lib.eval_dataset(x, np.zeros(len(x), np.uint8)).map(lambda a, b: a)
    return np.argmax(model.predict(images, verbose=0), axis=1)


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a Keras model on uint8 images (no augmentation)."""
    return float(np.mean(predict_classes(model, x) == y))
