"""Analytical costs of a Keras model: per-layer weights, other parameters and MACs.

Counted from the Keras graph, looking through pruning and QAT wrappers. `weights` are conv and
dense kernel entries (what pruning and the IMT score count); `params` are all parameters
(weights, biases, BatchNorm). The same counts read back from a .tflite graph are in
`tfdense.litert.graph_stats`; the pipeline checks that the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
import tf_keras as keras
from tf_keras import layers


@dataclass(frozen=True)
class LayerCost:
    """Analytical cost of one layer for a single 32x32 image."""

    name: str
    kind: str
    weights: int  # conv/dense kernel entries: what pruning and the IMT score count
    other_params: int  # biases and BatchNorm parameters
    macs: int


PARAMETER_NAMES = frozenset(
    n + ":0" for n in ("kernel", "depthwise_kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance")
)


def _unwrap(layer):
    # Pruning and QAT wrap layers; the cost is the wrapped layer's.
    while hasattr(layer, "layer") and isinstance(layer.layer, layers.Layer):
        layer = layer.layer
    return layer


def kernels(model: keras.Model) -> dict[str, np.ndarray]:
    """The conv/dense kernel values of every layer, by layer name (wrappers looked through).

    Read from the layer's variables: inside a QAT wrapper, `layer.kernel` is the fake-quantized
    tensor, not the stored weights.
    """
    result = {}
    for wrapper in model.layers:
        layer = _unwrap(wrapper)
        if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D, layers.Dense)):
            (kernel,) = [w for w in wrapper.weights if w.name.split("/")[-1] in ("kernel:0", "depthwise_kernel:0")]
            result[wrapper.name] = kernel.numpy()
    return result


def weight_zero_fraction(model: keras.Model) -> float:
    """Zero fraction over all conv/dense kernels."""
    values = list(kernels(model).values())
    return sum(int((v == 0).sum()) for v in values) / max(sum(v.size for v in values), 1)


def layer_costs(model: keras.Model) -> list[LayerCost]:
    """Per-layer weights, other parameters and MACs of every layer that has any."""
    costs = []
    for wrapper in model.layers:
        layer = _unwrap(wrapper)
        # Model parameters only: not the masks, thresholds and ranges that wrappers add.
        params = sum(int(w.shape.num_elements()) for w in wrapper.weights if w.name.split("/")[-1] in PARAMETER_NAMES)
        if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D, layers.Dense)):
            kernel = layer.depthwise_kernel if isinstance(layer, layers.DepthwiseConv2D) else layer.kernel
            weights = int(kernel.shape.num_elements())
            out_shape = wrapper.output_shape
            # Each kernel entry is used once per output position (per image).
            positions = out_shape[1] * out_shape[2] if len(out_shape) == 4 else 1
            costs.append(LayerCost(wrapper.name, type(layer).__name__, weights, params - weights, weights * positions))
        elif params:
            costs.append(LayerCost(wrapper.name, type(layer).__name__, 0, params, 0))
    return costs


@dataclass(frozen=True)
class ModelCosts:
    """Totals of `layer_costs` for one 32x32 image."""

    weights: int  # conv/dense kernel entries
    params: int  # all parameters: weights, biases, BatchNorm
    macs: int
    int8_bytes: int  # predicted size of the stripped full-int8 .tflite (`predicted_int8_bytes`)


# A stripped full-int8 file holds each weight in one byte, then per output channel an int32 bias
# and a per-channel scale and zero point, per layer its tensors, op and activation quantization
# (BatchNorm and ReLU fold away but concatenations gain a requantize op), and a fixed header.
# Least-squares fit on 8 DenseNets of 1k-173k weights through QAT with calibrated ranges and
# conversion (python -m tfdense sizefit): within 1 % from 42k weights up; files of
# trained models ran 1-2 % larger. Of the ~27 bytes per channel, 24 are quantization parameters
# (the weights' and the bias's float32 scale and int64 zero point) that a file cannot drop:
# LiteRT refuses a tensor with fewer zero points than scales ("QuantizationParam has 1
# zero_point values and 24 scale values"), and without the bias's parameters its reference
# kernels still score identically but the default XNNPACK delegate does not (checked on the
# ninety search's choice, its converted file edited with tensorflow.lite.tools.flatbuffer_utils).
INT8_BYTES_PER_CHANNEL = 27.07
INT8_BYTES_PER_LAYER = 135.16
INT8_BYTES_FIXED = 1098
# Quantized per tensor (`qat.per_channel=false`), a channel keeps its int32 bias and loses the
# four per-channel parameters; the graph, and so the per-layer and fixed bytes, stay the same
# (python -m tfdense sizefit --per-tensor --out tuning/int8_size_fit_per_tensor.json refits this one
# coefficient with the other two fixed: within 1.4 % on its nine models; the shipped large model,
# per tensor, predicted 93,882 against 93,464 bytes converted).
INT8_BYTES_PER_CHANNEL_PER_TENSOR = 3.89


def int8_size_features(model: keras.Model) -> tuple[int, int, int]:
    """What the file size is predicted from: (weights, conv/dense output channels, Keras layers).

    A depthwise kernel `(k, k, channels, multiplier)` has channels x multiplier outputs, each
    with its own bias, scale and zero point, like a conv's output channel.
    """
    values = list(kernels(model).values())
    depthwise = {w.name for w in model.layers if isinstance(_unwrap(w), layers.DepthwiseConv2D)}
    channels = sum(int(np.prod(v.shape[-2:])) if name in depthwise else int(v.shape[-1]) for name, v in kernels(model).items())
    return sum(int(v.size) for v in values), channels, len(model.layers)


def predicted_int8_bytes(model: keras.Model, per_channel: bool = True) -> int:
    """Predicted bytes of `model` exported as a stripped full-int8 .tflite, without converting it.

    `per_channel`: as `qat.per_channel`, one weight scale per output channel or per kernel.
    """
    weights, channels, num_layers = int8_size_features(model)
    per_output = INT8_BYTES_PER_CHANNEL if per_channel else INT8_BYTES_PER_CHANNEL_PER_TENSOR
    return int(round(weights + per_output * channels + INT8_BYTES_PER_LAYER * num_layers + INT8_BYTES_FIXED))


def model_costs(model: keras.Model, per_channel: bool = True) -> ModelCosts:
    """Counts of `model`; `per_channel` only changes the predicted int8 bytes (`predicted_int8_bytes`)."""
    costs = layer_costs(model)
    weights = sum(c.weights for c in costs)
    return ModelCosts(weights=weights, params=weights + sum(c.other_params for c in costs), macs=sum(c.macs for c in costs),
                      int8_bytes=predicted_int8_bytes(model, per_channel))


def format_costs(model: keras.Model) -> str:
    """A per-layer table of weights, other parameters and MACs, with totals."""
    rows = [f"{'layer':<28}{'kind':<20}{'weights':>10}{'other':>8}{'MACs':>12}"]
    for c in layer_costs(model):
        rows.append(f"{c.name:<28}{c.kind:<20}{c.weights:>10,}{c.other_params:>8,}{c.macs:>12,}")
    total = model_costs(model)
    rows.append(f"{'total':<48}{total.weights:>10,}{total.params - total.weights:>8,}{total.macs:>12,}")
    return "\n".join(rows)
