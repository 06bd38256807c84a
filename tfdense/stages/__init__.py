"""The pipeline's stages, in order: train -> prune -> qat -> export -> evaluate.

Each module has `run(model, data, config, run_dir) -> (model, metrics)`, which writes its own
outputs and typed metrics into the run directory, and `load(run_dir)`, which reads back the
model it produced. Stages share the fit loop (`tfdense.fitting`), the model and cost modules
and the run directory; they never import each other or the pipeline. Only `evaluate` reads
the test set.
"""

from __future__ import annotations

import dataclasses

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
import tf_keras as keras

from tfdense.fitting import FitPaths, Recipe, stage_seed
from tfdense.rundir import RunDir


def fit_paths(run_dir: RunDir, stage: str, keep_best: bool = False) -> FitPaths:
    """The run directory's resume, history, TensorBoard (and best-weights) paths of `stage`."""
    return FitPaths(
        backup=run_dir.backup(stage),
        history=run_dir.history(stage),
        logs=run_dir.logs(stage),
        best_weights=run_dir.best_weights(stage) if keep_best else None,
    )


def load_keras_model(path, custom_scope=None) -> keras.Model:
    """A saved stage model, uncompiled (stages compile for their own fit)."""
    if custom_scope is None:
        return keras.models.load_model(str(path), compile=False)
    with custom_scope():
        return keras.models.load_model(str(path), compile=False)


def with_teacher(recipe: Recipe, run_dir: RunDir, stage: str, distill: bool, distill_from: str = "model") -> Recipe:
    """`recipe` distilling, when `distill` is set, from the saved model of `stage` in this run
    (`distill_from="model"`) or from the train stage's teacher, its flip and its cached views
    (`"teacher"`)."""
    if not distill:
        return recipe
    if distill_from == "teacher":
        # The train stage's views, drawn with its seed: read from its cache, not predicted again.
        train = recipe.train
        return dataclasses.replace(recipe, teacher=train.teacher, teacher_flip=train.teacher_flip, teacher_views=train.teacher_views,
                                   views_seed=stage_seed(train.seed, "train"))
    return dataclasses.replace(recipe, teacher=(str(run_dir.require(run_dir.model(stage), stage)),), teacher_flip=False)
