"""TF-MOT magnitude pruning: which layers are pruned, the sparsity schedule, the wrappers, and checks.

Shared by the prune stage and anything else that prunes (the stage only orchestrates). Pruning
wraps every convolution and Dense kernel except the layers named in `prune.skip_layers` and
the depthwise ones: TF-MOT registers DepthwiseConv2D with no prunable weights (its
`prune_registry`), so depthwise models get their sparsity from their 1x1 convolutions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from tf_keras import layers

from tfdense.config import PruneConfig
from tfdense.costs import kernels

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
    """Convolutions (not depthwise) and Dense layers, unless their name starts with a `skip_layers` prefix."""
    if isinstance(layer, layers.DepthwiseConv2D) or not isinstance(layer, (layers.Conv2D, layers.Dense)):
        return False
    return not any(layer.name.startswith(p) for p in config.skip_layers)


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


def update_pruning_step() -> keras.callbacks.Callback:
    """The callback that advances the pruning schedule; `fit` needs it on every pruning run."""
    return _sparsity.UpdatePruningStep()


def strip_pruning(model: keras.Model) -> keras.Model:
    """`model` without its pruning wrappers (the zeros stay in the kernels)."""
    return _sparsity.strip_pruning(model)
