"""The train stage: the float DenseNet, trained with the `train` recipe from scratch (or from
`train.init_from`'s weights; with `train.epochs: 0`, that file's model kept as it is).

Keeps the best-on-validation weights and resumes from its last completed epoch after any kill.
"""

from __future__ import annotations

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
import tf_keras as keras

from tfdense import fitting
from tfdense.config import RunConfig
from tfdense.costs import model_costs
from tfdense.data import Cifar
from tfdense.metrics import TrainMetrics
from tfdense.rundir import RunDir
from tfdense.stages import fit_paths, load_keras_model

NAME = "train"


def run(model: keras.Model | None, data: Cifar, config: RunConfig, run_dir: RunDir) -> tuple[keras.Model, TrainMetrics]:
    """Trains a model of `config.model` (the first stage: `model` is None); writes `train/model.h5` and metrics."""
    paths = fit_paths(run_dir, NAME, keep_best=True)
    if config.train.epochs == 0:
        # init_from's model kept as it is (checked against config.model layer by layer).
        model, summary = fitting.initial_model(config, data), fitting.FitSummary.none()
    else:
        model, summary = fitting.fit_config(config, data, paths)
    model.save(str(run_dir.model(NAME)), include_optimizer=False)
    costs = model_costs(model)
    metrics = TrainMetrics(
        val_accuracy=fitting.accuracy(model, data.x_val, data.y_val),
        weights=costs.weights,
        params=costs.params,
        macs=costs.macs,
        epochs=summary.epochs,
        best_epoch=summary.best_epoch,
        seconds_per_epoch=summary.seconds_per_epoch,
        train_img_per_s=summary.train_img_per_s,
        train_seconds=summary.train_seconds,
    )
    run_dir.write_stage_metrics(NAME, metrics.to_dict())
    fitting.discard_backup(paths)  # only now: a kill before the metrics must still resume
    return model, metrics


def load(run_dir: RunDir) -> keras.Model:
    return load_keras_model(run_dir.require(run_dir.model(NAME), NAME))
