"""Structured (channel) pruning: a narrower copy of a trained functional model.

TF-MOT prunes single weights (or 2:4 groups); it has no channel pruning, and its sparse
weights only shrink a .tflite above ~70 % sparsity. Removing whole output channels shrinks
every tensor that touches them, so bytes, MACs and latency all drop with the fraction.

Each prunable convolution keeps the `1 - fraction` of its output channels whose following
BatchNorm has the largest |gamma| (network slimming, Liu et al. 2017: gamma is the channel's
standard deviation after normalization, so a small one carries little signal). The narrower
model is rebuilt from the original's Keras config with fewer `filters`, and its weights are
copied by following the kept channel indices through BatchNorm, ReLU, pooling and the
DenseNet's Concatenates into every consumer.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
import tf_keras as keras
from tf_keras import layers

# Layers whose output channels are their input's channels, in the same order.
_CHANNEL_PRESERVING = (
    layers.BatchNormalization,
    layers.ReLU,
    layers.Activation,
    layers.Rescaling,
    layers.MaxPooling2D,
    layers.AveragePooling2D,
    layers.GlobalAveragePooling2D,
    layers.Dropout,
)


class SlimmingError(ValueError):
    """A model the channel pruner cannot narrow; the message names the layer."""


def _inbound_names(layer_config: dict[str, Any]) -> list[str]:
    nodes = layer_config["inbound_nodes"]
    if not nodes:
        return []
    if len(nodes) > 1:
        raise SlimmingError(f"layer {layer_config['name']!r} is used more than once; shared layers are not supported")
    return [entry[0] for entry in nodes[0]]


def _following_batchnorms(model: keras.Model) -> dict[str, layers.BatchNormalization]:
    """The BatchNormalization fed directly by each Conv2D, by conv name."""
    config = model.get_config()
    result = {}
    for entry in config["layers"]:
        inbound = _inbound_names(entry)
        layer = model.get_layer(entry["name"])
        if isinstance(layer, layers.BatchNormalization) and len(inbound) == 1:
            result[inbound[0]] = layer
    return result


def prunable_convs(model: keras.Model, skip_layers: tuple[str, ...]) -> list[str]:
    """Conv2D layers followed by a BatchNorm, unless their name starts with a `skip_layers` prefix."""
    norms = _following_batchnorms(model)
    return [
        layer.name
        for layer in model.layers
        if type(layer) is layers.Conv2D and layer.name in norms and not any(layer.name.startswith(p) for p in skip_layers)
    ]


def select_channels(model: keras.Model, fraction: float, skip_layers: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Kept output-channel indices (ascending) of every prunable conv: the largest |gamma|."""
    if not 0 <= fraction < 1:
        raise SlimmingError(f"channel fraction must be in [0, 1), got {fraction}")
    norms = _following_batchnorms(model)
    kept = {}
    for name in prunable_convs(model, skip_layers):
        gamma = np.abs(norms[name].gamma.numpy())
        keep = max(1, math.ceil(len(gamma) * (1 - fraction) - 1e-9))
        # Stable sort: among equal gammas the earlier channel stays, so selection is deterministic.
        order = np.argsort(-gamma, kind="stable")
        kept[name] = np.sort(order[:keep])
    return kept


def slim(model: keras.Model, kept: dict[str, np.ndarray]) -> keras.Model:
    """A copy of `model` whose convs in `kept` keep only those output channels, weights copied.

    Channels removed this way are gone from every consumer: a DenseNet's Concatenate passes each
    producer's kept channels on, so later layers lose the matching input rows.
    """
    config = model.get_config()
    for entry in config["layers"]:
        if entry["name"] in kept:
            if entry["config"].get("groups", 1) != 1:
                raise SlimmingError(f"layer {entry['name']!r} is a grouped convolution; channel pruning supports groups=1 only")
            entry["config"]["filters"] = int(len(kept[entry["name"]]))
    narrow = keras.Model.from_config(config)

    channels: dict[str, np.ndarray] = {}  # output layer name -> kept original channel indices
    for entry in config["layers"]:
        name = entry["name"]
        old, new = model.get_layer(name), narrow.get_layer(name)
        inputs = [channels[n] for n in _inbound_names(entry)]
        if isinstance(old, layers.InputLayer):
            channels[name] = np.arange(old.output.shape[-1])
        elif isinstance(old, layers.Concatenate):
            offsets = np.cumsum([0] + [model.get_layer(n).output.shape[-1] for n in _inbound_names(entry)])
            channels[name] = np.concatenate([idx + off for idx, off in zip(inputs, offsets)])
        elif isinstance(old, (layers.Conv2D, layers.Dense)) and not isinstance(old, layers.DepthwiseConv2D):
            (rows,) = inputs
            out = kept.get(name, np.arange(old.kernel.shape[-1]))
            weights = [old.kernel.numpy()[..., rows, :][..., out]]
            if old.use_bias:
                weights.append(old.bias.numpy()[out])
            new.set_weights(weights)
            channels[name] = out
        elif isinstance(old, _CHANNEL_PRESERVING):
            (rows,) = inputs
            if old.weights:  # BatchNorm: every per-channel vector follows its input's channels
                new.set_weights([w[rows] for w in old.get_weights()])
            channels[name] = rows
        else:
            raise SlimmingError(f"layer {name!r} ({type(old).__name__}) is not supported by channel pruning")
    return narrow


def slim_by_fraction(model: keras.Model, fraction: float, skip_layers: tuple[str, ...]) -> keras.Model:
    """`slim(model, select_channels(model, fraction, skip_layers))`."""
    return slim(model, select_channels(model, fraction, skip_layers))
