"""The prune stage: channel pruning and/or TF-MOT magnitude pruning, fine-tuning, strip.

With `prune.channel_fraction` > 0 the trained model is first narrowed (`tfdense.slimming`).
Then, if `prune.target_sparsity` > 0 or `m_by_n` is set, it wraps every convolution and Dense
kernel (except the layers named in `prune.skip_layers`) in `prune_low_magnitude`
(`tfdense.sparsity`), fine-tunes with the shared fit loop while the sparsity ramps up, logs
per-layer sparsity curves for TensorBoard, strips the wrappers and checks each layer's achieved
sparsity against the target.
"""

from __future__ import annotations

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
import tf_keras as keras

from tfdense import fitting
from tfdense.config import RunConfig
from tfdense.costs import model_costs
from tfdense.data import Cifar
from tfdense.metrics import PruneMetrics
from tfdense.rundir import RunDir
from tfdense.slimming import slim_by_fraction
from tfdense.sparsity import PruningCurves, apply_pruning, check_sparsity, kernel_sparsity, strip_pruning, update_pruning_step
from tfdense.stages import fit_paths, load_keras_model, with_teacher

NAME = "prune"


def run(model: keras.Model, data: Cifar, config: RunConfig, run_dir: RunDir) -> tuple[keras.Model, PruneMetrics]:
    """Prunes and fine-tunes the trained float model; returns the stripped model and metrics."""
    prune = config.prune
    recipe = with_teacher(fitting.Recipe.for_stage(config, NAME), run_dir, "train", prune.distill, prune.distill_from)
    steps = fitting.steps_per_epoch(len(data.x_train), recipe.batch_size)
    paths = fit_paths(run_dir, NAME)
    weights_before, slimmed_accuracy = None, None
    if prune.channel_fraction:
        weights_before = model_costs(model).weights
        model = slim_by_fraction(model, prune.channel_fraction, prune.skip_layers)
        slimmed_accuracy = fitting.accuracy(model, data.x_val, data.y_val)
    pruned, summary = fitting.fit(
        lambda: apply_pruning(model, prune, steps),
        data,
        config.data,
        recipe,
        paths,
        callbacks=[update_pruning_step()],
        tensorboard=PruningCurves(str(paths.logs), every_steps=max(prune.frequency, steps // 10)),
    )
    stripped = strip_pruning(pruned)
    stripped.save(str(run_dir.model(NAME)), include_optimizer=False)
    per_layer = kernel_sparsity(stripped, prune)
    misses = check_sparsity(per_layer, prune.target_sparsity)
    costs = model_costs(stripped)
    zeros = sum(e["zeros"] for e in per_layer.values())
    metrics = PruneMetrics(
        val_accuracy=fitting.accuracy(stripped, data.x_val, data.y_val),
        weights=costs.weights,
        nonzero_weights=costs.weights - zeros,
        macs=costs.macs,
        sparsity=zeros / costs.weights,
        target_sparsity=prune.target_sparsity,
        sparsity_within_tolerance=not misses,
        sparsity_misses=misses,
        per_layer_sparsity={k: round(v["sparsity"], 4) for k, v in per_layer.items()},
        train_seconds=summary.train_seconds,
        channel_fraction=prune.channel_fraction,
        weights_before_slimming=weights_before,
        slimmed_val_accuracy=slimmed_accuracy,
    )
    run_dir.write_stage_metrics(NAME, metrics.to_dict())
    fitting.discard_backup(paths)
    return stripped, metrics


def load(run_dir: RunDir) -> keras.Model:
    return load_keras_model(run_dir.require(run_dir.model(NAME), NAME))
