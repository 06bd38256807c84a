"""A functional, QAT-ready DenseNet for 32x32 images, and its analytical cost counts.

Every convolution is Conv -> BatchNorm -> ReLU (post-activation) so that TF-MOT folds each
BatchNorm into the convolution before it; the pre-activation BN -> ReLU -> Conv of the original
DenseNet leaves standalone BatchNorms that the default 8-bit QAT scheme rejects. Downsampling
uses max pooling or a strided convolution, never average pooling, which failed full-int8
conversion after QAT ("same scale constraint").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
import tf_keras as keras
from tf_keras import layers

from tfdense.config import DenseNetConfig

# Raw RGB pixels 0..255 map to [0, 1] inside the model, so the exported .tflite takes camera
# pixels as they are (int8 q = pixel - 128 at scale 1). Scale only, no offset: on int8 grids
# pixel/255 keeps the input's integer codes, so the converted op is exact
# (`tfdense.qat.PixelScaleQuantizeConfig`); the BN after the stem centres the activations anyway.
PIXEL_SCALE = 1.0 / 255.0


def conv_block(x, filters: int, kernel_size: int, name: str, strides: int = 1, groups: int = 1):
    """Conv -> BN -> ReLU, the unit TF-MOT folds into one quantized convolution."""
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        groups=groups,
        use_bias=False,
        kernel_initializer="he_normal",
        name=name + "_conv",
    )(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1.001e-5, name=name + "_bn")(x)
    return layers.ReLU(name=name + "_relu")(x)


def dense_layer(x, growth_rate: int, bottleneck: int, groups: int, name: str):
    """One DenseNet layer: optional 1x1 bottleneck, a 3x3 conv of `growth_rate` maps, concat."""
    y = x
    if bottleneck:
        y = conv_block(y, bottleneck, 1, name=name + "_1")
    groups = _groups_for(y.shape[-1], growth_rate, groups)
    y = conv_block(y, growth_rate, 3, name=name + "_2", groups=groups)
    return layers.Concatenate(name=name + "_concat")([x, y])


def dense_block(x, num_layers: int, growth_rate: int, bottleneck: int, groups: int, name: str):
    for i in range(num_layers):
        x = dense_layer(x, growth_rate, bottleneck, groups, name=f"{name}_block{i + 1}")
    return x


def transition_block(x, compression: float, pool: str, name: str):
    """1x1 compression, then halve the resolution (max pool, or the 1x1 itself strided 2)."""
    filters = max(1, int(round(x.shape[-1] * compression)))
    if pool == "conv":
        return conv_block(x, filters, 1, name=name, strides=2)
    x = conv_block(x, filters, 1, name=name)
    return layers.MaxPooling2D(2, strides=2, name=name + "_pool")(x)


def _groups_for(channels_in: int, channels_out: int, groups: int) -> int:
    # Grouped 3x3s need both widths divisible; where they are not, the layer stays dense.
    return groups if channels_in % groups == 0 and channels_out % groups == 0 else 1


def build_densenet(config: DenseNetConfig) -> keras.Model:
    """Builds the DenseNet described by `config`; input is raw uint8-range RGB, output softmax."""
    inputs = keras.Input(shape=(32, 32, 3), name="pixels")
    x = layers.Rescaling(PIXEL_SCALE, name="normalize")(inputs)
    x = conv_block(x, config.stem_filters, config.stem_kernel, name="stem", strides=config.stem_stride)
    if config.stem_pool:
        x = layers.MaxPooling2D(2, strides=2, name="stem_pool")(x)
    for b, num_layers in enumerate(config.block_layers):
        x = dense_block(
            x, num_layers, config.growth_rate, config.bottleneck, config.groups, name=f"conv{b + 2}"
        )
        if b < len(config.block_layers) - 1:
            x = transition_block(x, config.compression, config.transition_pool, name=f"pool{b + 2}")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if config.dropout:
        x = layers.Dropout(config.dropout, name="dropout")(x)
    outputs = layers.Dense(config.num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=config.name)


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


def model_costs(model: keras.Model) -> dict[str, int]:
    """Totals of `layer_costs`: `weights`, `params` (weights + other parameters), `macs`."""
    costs = layer_costs(model)
    weights = sum(c.weights for c in costs)
    return {
        "weights": weights,
        "params": weights + sum(c.other_params for c in costs),
        "macs": sum(c.macs for c in costs),
    }


def format_costs(model: keras.Model) -> str:
    """A per-layer table of weights, other parameters and MACs, with totals."""
    rows = [f"{'layer':<28}{'kind':<20}{'weights':>10}{'other':>8}{'MACs':>12}"]
    for c in layer_costs(model):
        rows.append(f"{c.name:<28}{c.kind:<20}{c.weights:>10,}{c.other_params:>8,}{c.macs:>12,}")
    total = model_costs(model)
    rows.append(f"{'total':<48}{total['weights']:>10,}{total['params'] - total['weights']:>8,}{total['macs']:>12,}")
    return "\n".join(rows)
