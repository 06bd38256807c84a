"""A functional, QAT-ready DenseNet for 32x32 images (and the plain teacher); costs are counted in `tfdense.costs`.

Every convolution is Conv -> BatchNorm -> ReLU (post-activation) so that TF-MOT folds each
BatchNorm into the convolution before it; the pre-activation BN -> ReLU -> Conv of the original
DenseNet leaves standalone BatchNorms that the default 8-bit QAT scheme rejects. Downsampling
uses max pooling or a strided convolution, never average pooling, which failed full-int8
conversion after QAT ("same scale constraint").
"""

from __future__ import annotations

import numpy as np

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
import tf_keras as keras
from tf_keras import layers

from tfdense.config import DenseNetConfig
from tfdense.data import NUM_CLASSES

# Raw RGB pixels 0..255 map to [0, 1] inside the model, so the exported .tflite takes camera
# pixels as they are (int8 q = pixel - 128 at scale 1). Scale only, no offset: on int8 grids
# pixel/255 keeps the input's integer codes, so the converted op is exact
# (`tfdense.conversion.PixelScaleQuantizeConfig`); the BN after the stem centres the activations anyway.
PIXEL_SCALE = 1.0 / 255.0


def conv_block(x, filters: int, kernel_size: int, name: str, strides: int = 1, groups: int = 1, bn_momentum: float = 0.9, padding: str = "same"):
    """Conv -> BN -> ReLU, the unit TF-MOT folds into one quantized convolution."""
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        groups=groups,
        use_bias=False,
        kernel_initializer="he_normal",
        name=name + "_conv",
    )(x)
    x = layers.BatchNormalization(momentum=bn_momentum, epsilon=1.001e-5, name=name + "_bn")(x)
    return layers.ReLU(name=name + "_relu")(x)


def depthwise_block(x, kernel_size: int, name: str, dilation: int = 1, bn_momentum: float = 0.9):
    """DepthwiseConv -> BN -> ReLU: a kxk filter per channel, which TF-MOT folds like a conv."""
    x = layers.DepthwiseConv2D(kernel_size, padding="same", dilation_rate=dilation, use_bias=False,
                               depthwise_initializer="he_normal", name=name + "_dwconv")(x)
    x = layers.BatchNormalization(momentum=bn_momentum, epsilon=1.001e-5, name=name + "_bn")(x)
    return layers.ReLU(name=name + "_relu")(x)


def dense_layer(x, growth_rate: int, bottleneck: int, groups: int, name: str, bn_momentum: float = 0.9,
                depthwise: bool = False, kernel_size: int = 3):
    """One DenseNet layer: optional 1x1 bottleneck, `growth_rate` new maps, concat.

    The new maps come from a kxk conv, or with `depthwise` from a kxk depthwise conv over the
    bottleneck followed by a 1x1 conv to `growth_rate` (MobileNet's separable pair): a wide
    bottleneck then costs 1x1 weights, not kxk ones.
    """
    y = x
    if bottleneck:
        y = conv_block(y, bottleneck, 1, name=name + "_1", bn_momentum=bn_momentum)
    if depthwise:
        y = depthwise_block(y, kernel_size, name=name + "_2", bn_momentum=bn_momentum)
        y = conv_block(y, growth_rate, 1, name=name + "_3", bn_momentum=bn_momentum)
    else:
        groups = _groups_for(y.shape[-1], growth_rate, groups)
        y = conv_block(y, growth_rate, kernel_size, name=name + "_2", groups=groups, bn_momentum=bn_momentum)
    return layers.Concatenate(name=name + "_concat")([x, y])


def dense_block(x, num_layers: int, growth_rate: int, bottleneck: int, groups: int, name: str, bn_momentum: float = 0.9,
                depthwise: bool = False, kernel_size: int = 3):
    for i in range(num_layers):
        x = dense_layer(x, growth_rate, bottleneck, groups, name=f"{name}_block{i + 1}", bn_momentum=bn_momentum,
                        depthwise=depthwise, kernel_size=kernel_size)
    return x


def transition_block(x, compression: float, pool: str, name: str, bn_momentum: float = 0.9):
    """1x1 compression and half the resolution: conv then max pool, the conv strided 2, or max
    pool then conv ("max_first")."""
    filters = max(1, int(round(x.shape[-1] * compression)))
    if pool == "conv":
        return conv_block(x, filters, 1, name=name, strides=2, bn_momentum=bn_momentum)
    if pool == "max_first":
        x = layers.MaxPooling2D(2, strides=2, name=name + "_pool")(x)
        return conv_block(x, filters, 1, name=name, bn_momentum=bn_momentum)
    x = conv_block(x, filters, 1, name=name, bn_momentum=bn_momentum)
    return layers.MaxPooling2D(2, strides=2, name=name + "_pool")(x)


def _groups_for(channels_in: int, channels_out: int, groups: int) -> int:
    # Grouped 3x3s need both widths divisible; where they are not, the layer stays dense.
    return groups if channels_in % groups == 0 and channels_out % groups == 0 else 1


def _stem(config: DenseNetConfig):
    inputs = keras.Input(shape=(32, 32, 3), name="pixels")
    x = layers.Rescaling(PIXEL_SCALE, name="normalize")(inputs)
    x = conv_block(x, config.stem_filters, config.stem_kernel, name="stem", strides=config.stem_stride,
                   bn_momentum=config.bn_momentum, padding=config.stem_padding)
    if config.stem_pool:
        x = layers.MaxPooling2D(2, strides=2, name="stem_pool")(x)
    return inputs, x


def plain_block(x, num_layers: int, width: int, name: str, bn_momentum: float = 0.9):
    """airbench's block: Conv -> 2x2 max pool -> BN -> ReLU, then Conv -> BN -> ReLU (num_layers convs in all)."""
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer="he_normal", name=name + "_1_conv")(x)
    x = layers.MaxPooling2D(2, strides=2, name=name + "_pool")(x)
    x = layers.BatchNormalization(momentum=bn_momentum, epsilon=1.001e-5, name=name + "_1_bn")(x)
    x = layers.ReLU(name=name + "_1_relu")(x)
    for i in range(2, num_layers + 1):
        x = conv_block(x, width, 3, name=f"{name}_{i}", bn_momentum=bn_momentum)
    return x


def build_plain(config: DenseNetConfig) -> keras.Model:
    """The wide plain teacher of `family="plain"`: stem, pooled blocks, global max pool, softmax."""
    inputs, x = _stem(config)
    for b, (num_layers, width) in enumerate(zip(config.block_layers, config.widths)):
        x = plain_block(x, num_layers, width, name=f"conv{b + 2}", bn_momentum=config.bn_momentum)
    x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=config.name)


def build_densenet(config: DenseNetConfig) -> keras.Model:
    """Builds the DenseNet described by `config`; input is raw uint8-range RGB, output softmax."""
    if config.family == "plain":
        return build_plain(config)
    inputs, x = _stem(config)
    momentum = config.bn_momentum
    kernels = config.block_kernels or (config.kernel_size,) * len(config.block_layers)
    for b, (num_layers, kernel_size) in enumerate(zip(config.block_layers, kernels)):
        x = dense_block(x, num_layers, config.growth_rate, config.bottleneck, config.groups, name=f"conv{b + 2}",
                        bn_momentum=momentum, depthwise=config.depthwise, kernel_size=kernel_size)
        if b < len(config.block_layers) - 1:
            x = transition_block(x, config.compression, config.transition_pool, name=f"pool{b + 2}", bn_momentum=momentum)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if config.dropout:
        x = layers.Dropout(config.dropout, name="dropout")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=config.name)


def whitening_kernel(images: np.ndarray, kernel_size: int, filters: int, eps: float = 5e-4) -> np.ndarray:
    """A `(k, k, 3, filters)` kernel that projects k x k patches onto their principal directions.

    The `filters // 2` leading eigenvectors of the patch covariance (pixels scaled as the model
    scales them), each divided by sqrt(eigenvalue + eps) so every output has unit variance, then
    the same filters negated: after the ReLU neither sign of a direction is lost (airbench).
    """
    x = images.astype(np.float32) * PIXEL_SCALE
    dims = kernel_size * kernel_size * 3
    total, outer, count = np.zeros(dims), np.zeros((dims, dims)), 0
    for start in range(0, len(x), 256):  # chunks: all patches of 5,000 images would need ~0.5 GB
        windows = np.lib.stride_tricks.sliding_window_view(x[start : start + 256], (kernel_size, kernel_size), axis=(1, 2))
        patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, dims).astype(np.float64)  # (k, k, channel) order of a Conv2D kernel
        total += patches.sum(axis=0)
        outer += patches.T @ patches
        count += len(patches)
    mean = total / count
    eigenvalues, eigenvectors = np.linalg.eigh(outer / count - np.outer(mean, mean))
    order = np.argsort(eigenvalues)[::-1][: filters // 2]
    scaled = eigenvectors[:, order] / np.sqrt(eigenvalues[order] + eps)
    return np.concatenate([scaled, -scaled], axis=1).reshape(kernel_size, kernel_size, 3, filters).astype(np.float32)


def build_for_training(config: DenseNetConfig, x_train: np.ndarray, whitening_images: int = 5000) -> keras.Model:
    """`build_densenet`, with the stem whitened from `x_train` and frozen when `stem_init="whiten"`."""
    model = build_densenet(config)
    if config.stem_init == "whiten":
        stem = model.get_layer("stem_conv")
        stem.set_weights([whitening_kernel(x_train[:whitening_images], config.stem_kernel, config.stem_filters)])
        stem.trainable = False
    return model
