"""The prune stage: channel pruning and/or TF-MOT magnitude pruning, fine-tuning, strip.

With `prune.channel_fraction` > 0 the trained model is first narrowed (`tfdense.slimming`).
Then, if `prune.target_sparsity` > 0 or `m_by_n` is set, it wraps every convolution and Dense kernel (except the layers named in `prune.skip_layers`) in
`prune_low_magnitude`, fine-tunes with the shared fit loop while the sparsity ramps up, logs
per-layer sparsity curves for TensorBoard, strips the wrappers and checks each layer's achieved
sparsity against the target.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from tf_keras import layers

from tfdense import fitting
from tfdense.config import PruneConfig, RunConfig
from tfdense.costs import kernels, model_costs
from tfdense.data import Cifar
from tfdense.metrics import PruneMetrics
from tfdense.rundir import RunDir
from tfdense.slimming import slim_by_fraction
from tfdense.stages import fit_paths, load_keras_model, with_teacher

NAME = "prune"
_sparsity = tfmot.sparsity.keras

# Achieved sparsity may miss the target by rounding (k = round(n * s) zeros per tensor).
SPARSITY_TOLERANCE = 0.01


class PruningCurves(_sparsity.PruningSummaries):
    """`PruningSummaries` that also logs every `every_steps` steps, not only at epoch starts.

    TF-MOT logs per-layer `<layer>/sparsity` and `/threshold` scalars; a short fine-tune has
    few epochs, and a curve needs more points than that.
    """

    def __init__(self, log_dir: str, every_steps: int):
        super().__init__(log_dir=log_dir)
        self.every_steps = max(1, every_steps)
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        super().on_epoch_begin(epoch, logs)

    def _implements_train_batch_hooks(self):
        return True  # TensorBoard skips batch hooks when update_freq="epoch"; these curves need them

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        if (batch + 1) % self.every_steps == 0:
            super().on_epoch_begin(self._epoch)  # with logs=None it logs only the pruning scalars

    def on_train_end(self, logs=None):
        super().on_epoch_begin(self._epoch)
        super().on_train_end(logs)


def is_pruned_layer(layer: layers.Layer, config: PruneConfig) -> bool:
    """Convolutions and Dense layers, unless their name starts with a `skip_layers` prefix."""
    kinds = (layers.Conv2D, layers.DepthwiseConv2D, layers.Dense)
    return isinstance(layer, kinds) and not any(layer.name.startswith(p) for p in config.skip_layers)


def pruning_schedule(config: PruneConfig, steps_per_epoch: int) -> _sparsity.PruningSchedule:
    """The schedule, with its end step on a multiple of `frequency` so the target is reached.

    TF-MOT only updates masks every `frequency` steps; an end step between two updates would
    stop short of the final sparsity.
    """
    total = config.epochs * steps_per_epoch
    end = max(config.frequency, int(config.ramp_fraction * total) // config.frequency * config.frequency)
    if config.schedule == "constant":
        return _sparsity.ConstantSparsity(config.target_sparsity, begin_step=0, frequency=config.frequency)
    return _sparsity.PolynomialDecay(
        initial_sparsity=config.initial_sparsity,
        final_sparsity=config.target_sparsity,
        begin_step=0,
        end_step=min(end, total),
        frequency=config.frequency,
    )


def uses_weight_sparsity(config: PruneConfig) -> bool:
    return config.target_sparsity > 0 or bool(config.m_by_n)


def apply_pruning(model: keras.Model, config: PruneConfig, steps_per_epoch: int) -> keras.Model:
    """Wraps the pruned layers of `model` for pruning (weights shared with `model`)."""
    if not uses_weight_sparsity(config):
        return model  # channel pruning only: a plain fine-tune of the narrowed model
    schedule = pruning_schedule(config, steps_per_epoch)
    m_by_n = tuple(int(v) for v in config.m_by_n.split(":")) if config.m_by_n else None

    def wrap(layer):
        if not is_pruned_layer(layer, config):
            return layer
        if m_by_n:
            return _sparsity.prune_low_magnitude(layer, sparsity_m_by_n=m_by_n)
        return _sparsity.prune_low_magnitude(layer, pruning_schedule=schedule)

    return keras.models.clone_model(model, clone_function=wrap)


def kernel_sparsity(model: keras.Model, config: PruneConfig) -> dict[str, dict[str, Any]]:
    """Zero fraction of each kernel, and whether the layer was pruned."""
    return {
        name: {
            "size": int(values.size),
            "zeros": int(np.sum(values == 0)),
            "sparsity": float(np.mean(values == 0)),
            "pruned": is_pruned_layer(model.get_layer(name), config),
        }
        for name, values in kernels(model).items()
    }


def check_sparsity(per_layer: dict[str, dict[str, Any]], target: float) -> list[str]:
    """Names of pruned layers whose sparsity misses `target` by more than the tolerance."""
    misses = []
    for name, entry in per_layer.items():
        # One weight more or less is the finest step a small kernel can take.
        tolerance = max(SPARSITY_TOLERANCE, 1.0 / entry["size"])
        if entry["pruned"] and abs(entry["sparsity"] - target) > tolerance:
            misses.append(f"{name} ({entry['sparsity']:.3f})")
    return misses


def run(model: keras.Model, data: Cifar, config: RunConfig, run_dir: RunDir) -> tuple[keras.Model, PruneMetrics]:
    """Prunes and fine-tunes the trained float model; returns the stripped model and metrics."""
    prune = config.prune
    recipe = with_teacher(fitting.Recipe.for_stage(config, NAME), run_dir, "train", prune.distill)
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
        callbacks=[_sparsity.UpdatePruningStep()],
        tensorboard=PruningCurves(str(paths.logs), every_steps=max(prune.frequency, steps // 10)),
    )
    stripped = _sparsity.strip_pruning(pruned)
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
