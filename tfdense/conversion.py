"""Conversion: a Keras model to the full-int8 TFLite file a device runs, and the steps between.

`quantize` wraps every layer for TF-MOT's quantization-aware training: each Conv -> BN -> ReLU
is folded by TF-MOT's own transforms, and the in-model pixel scale (a `Rescaling` TF-MOT's
registry does not know) gets a fixed [0, 1] output range on which its int8 form is exact.
`fold_batchnorm` folds the BatchNorms into their convolutions first, which per-tensor QAT
needs. `calibrate_ranges` seeds the activation ranges from the float model, `share_concat_ranges`
gives each dense block one range. `to_tflite` converts (full int8, or float32), `strip` drops
what a device does not need, `c_array` writes the TensorFlow Lite Micro source, and
`untrained_int8` runs the whole path on an untrained architecture, for size and speed before
any training. The qat and export stages orchestrate these; `bench`, `sizefit` and `ship` use
them directly.
"""

from __future__ import annotations

import copy
from typing import Callable, Iterator

import numpy as np
from ai_edge_litert.tools import flatbuffer_utils

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from tfdense.litert import TFLiteClassifier

# Not exported by tfmot's public modules; subclassed for `PerTensorPrunePreserveQuantizeScheme`.
from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve.prune_preserve_quantize_registry import (
    PrunePreserveDefault8BitWeightsQuantizer,
)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit.default_8bit_quantize_registry import (
    Default8BitQuantizeRegistry,
)

_q = tfmot.quantization.keras


class PixelScaleQuantizeConfig(_q.QuantizeConfig):
    """Quantizes the `normalize` output on the fixed range [0, 1]: scale 1/255, zero point -128.

    The int8 input is q = pixel - 128 at scale 1, so pixel/255 on that grid has the same integer
    codes: the converted MUL is an exact identity, adding no rounding QAT did not see. (A learned
    range would start at TF-MOT's [-6, 6] and barely move in a short fine-tune.)
    """

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [_q.quantizers.FixedQuantizer(num_bits=8, init_min=0.0, init_max=1.0, narrow_range=False)]

    def get_config(self):
        return {}


class _PerTensorPrunePreserveRegistry(Default8BitQuantizeRegistry):
    """TF-MOT's 8-bit registry per tensor, with its sparsity-preserving weight quantizer on the
    layers its prune-preserving registry keeps sparse (Conv2D, Dense; not DepthwiseConv2D)."""

    def __init__(self):
        super().__init__(disable_per_axis=True)

    def get_quantize_config(self, layer):
        config = super().get_quantize_config(layer)
        if type(layer) in (keras.layers.Conv2D, keras.layers.Dense):
            config.weight_quantizer = PrunePreserveDefault8BitWeightsQuantizer()
        return config


class PerTensorPrunePreserveQuantizeScheme(_q.default_8bit.Default8BitQuantizeScheme):
    """`Default8BitPrunePreserveQuantizeScheme`, one weight scale per kernel.

    TF-MOT 0.8.1's own scheme takes `disable_per_axis` and ignores it (its registry builds the
    per-axis one), and its registry refuses a Conv2D with a per-tensor config.
    """

    def __init__(self):
        super().__init__(disable_per_axis=True)

    def get_quantize_registry(self):
        return _PerTensorPrunePreserveRegistry()


def quantize_scope():
    """The custom objects a saved QAT model needs to load again."""
    return _q.quantize_scope({"PixelScaleQuantizeConfig": PixelScaleQuantizeConfig})


_FOLDABLE = ("Conv2D", "DepthwiseConv2D")


def _fold_plan(config: dict) -> tuple[dict[str, str], dict[str, str]]:
    """From a functional model's config: {BatchNorm: its conv} and {ReLU: the conv it fuses into}."""
    by_name = {layer["name"]: layer for layer in config["layers"]}
    consumers: dict[str, list[str]] = {}
    for layer in config["layers"]:
        for node in layer["inbound_nodes"]:
            for inbound in node:
                consumers.setdefault(inbound[0], []).append(layer["name"])
    conv_of_bn = {}
    for layer in config["layers"]:
        sources = [inbound[0] for node in layer["inbound_nodes"] for inbound in node]
        if layer["class_name"] == "BatchNormalization" and len(sources) == 1 and by_name[sources[0]]["class_name"] in _FOLDABLE \
                and consumers[sources[0]] == [layer["name"]] and by_name[sources[0]]["config"]["activation"] == "linear":
            conv_of_bn[layer["name"]] = sources[0]
    conv_of_relu = {}
    for bn, conv in conv_of_bn.items():
        after = consumers.get(bn, [])
        relu = by_name[after[0]]["config"] if len(after) == 1 and by_name[after[0]]["class_name"] == "ReLU" else None
        if relu is not None and relu.get("max_value") is None and not relu.get("negative_slope") and not relu.get("threshold"):
            conv_of_relu[after[0]] = conv
    return conv_of_bn, conv_of_relu


def _folded_weights(conv: keras.layers.Layer, bn: keras.layers.BatchNormalization) -> list[np.ndarray]:
    """`conv`'s kernel and bias with `bn` applied to its outputs."""
    mean, variance = (np.asarray(v, np.float64) for v in (bn.moving_mean, bn.moving_variance))
    gamma = np.asarray(bn.gamma, np.float64) if bn.scale else np.ones_like(mean)
    beta = np.asarray(bn.beta, np.float64) if bn.center else np.zeros_like(mean)
    factor = gamma / np.sqrt(variance + bn.epsilon)
    kernel, *bias = conv.get_weights()
    bias = bias[0] if bias else np.zeros_like(mean)
    # Output channel c * multiplier + m of a depthwise kernel (k, k, channels, multiplier).
    shape = (1, 1, *kernel.shape[2:]) if isinstance(conv, keras.layers.DepthwiseConv2D) else (-1,)
    return [(kernel * factor.reshape(shape)).astype(kernel.dtype), ((bias - mean) * factor + beta).astype(kernel.dtype)]


def fold_batchnorm(model: keras.Model) -> keras.Model:
    """`model` with every Conv -> BN (-> ReLU) collapsed into one conv with a bias (and the ReLU fused).

    What the converter does anyway, done before QAT, so that the kernels QAT fake-quantizes are
    the ones the file stores. Per-channel QAT does not need it (the converter rescales each
    channel's range by its BN factor), per-tensor QAT does: quantized per tensor before its BN
    factors, the shipped large model converted to 47 % validation accuracy; folded first, 90.78 %
    against 91.04 % per channel, before any fine-tuning. The ReLU is fused because TF-MOT's
    Conv -> ReLU transform turns off the conv's weight quantization (`LayerReLUQuantize` gives
    the conv a no-op config), which a conv with its own activation keeps. A conv whose output
    feeds anything besides one BatchNorm is left as it is. Outputs match `model`'s to float
    round-off; the returned model shares no layers with it.
    """
    config = copy.deepcopy(model.get_config())
    conv_of_bn, conv_of_relu = _fold_plan(config)
    replaced = {**conv_of_bn, **conv_of_relu}
    kept = []
    for layer in config["layers"]:
        if layer["name"] in replaced:
            continue
        if layer["name"] in conv_of_bn.values():
            layer["config"]["use_bias"] = True
        if layer["name"] in conv_of_relu.values():
            layer["config"]["activation"] = "relu"
        for node in layer["inbound_nodes"]:
            for inbound in node:
                while inbound[0] in replaced:
                    inbound[0] = replaced[inbound[0]]
        kept.append(layer)
    config["layers"] = kept
    for output in config["output_layers"]:
        while output[0] in replaced:
            output[0] = replaced[output[0]]
    folded = keras.Model.from_config(config)
    bn_of_conv = {conv: bn for bn, conv in conv_of_bn.items()}
    for layer in folded.layers:
        source = model.get_layer(layer.name)
        if layer.name in bn_of_conv:
            layer.set_weights(_folded_weights(source, model.get_layer(bn_of_conv[layer.name])))
        else:
            layer.set_weights(source.get_weights())
    return folded


def _annotate(layer: keras.layers.Layer) -> keras.layers.Layer:
    if isinstance(layer, keras.layers.InputLayer):
        return layer
    if isinstance(layer, keras.layers.Rescaling):
        if np.any(np.asarray(layer.offset) != 0) or not np.isclose(float(np.asarray(layer.scale)), 1 / 255):
            raise ValueError(f"{layer.name}: only Rescaling(1/255) without offset has an exact int8 form")
        return _q.quantize_annotate_layer(layer, quantize_config=PixelScaleQuantizeConfig())
    return _q.quantize_annotate_layer(layer)


def scheme_name(preserve_sparsity: bool, per_channel: bool) -> str:
    """The name of the quantize scheme `quantize` applies."""
    if preserve_sparsity:
        return "Default8BitPrunePreserveQuantizeScheme" if per_channel else PerTensorPrunePreserveQuantizeScheme.__name__
    return "Default8BitQuantizeScheme" + ("" if per_channel else "(disable_per_axis=True)")


def quantize(model: keras.Model, preserve_sparsity: bool = False, per_channel: bool = True) -> keras.Model:
    """Returns the QAT version of `model` (fake-quant 8-bit), weights carried over.

    `preserve_sparsity`: use `Default8BitPrunePreserveQuantizeScheme`, which keeps pruned
    zeros at zero through fine-tuning (plain QAT would regrow them). `per_channel=False`
    quantizes each kernel with one scale instead of one per output channel, which needs the
    BatchNorms folded first (`fold_batchnorm`).
    """
    if not per_channel:
        unfolded = sorted(_fold_plan(model.get_config())[0])
        if unfolded:
            raise ValueError(f"per-tensor QAT needs its convolutions' BatchNorms folded first (fold_batchnorm): {', '.join(unfolded[:3])}")
    annotated = keras.models.clone_model(model, clone_function=_annotate)
    annotated.set_weights(model.get_weights())
    if preserve_sparsity:
        scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme() if per_channel else PerTensorPrunePreserveQuantizeScheme()
    else:
        scheme = _q.default_8bit.Default8BitQuantizeScheme(disable_per_axis=not per_channel)
    with quantize_scope():
        return _q.quantize_apply(annotated, scheme)


def _variables(layer: keras.layers.Layer) -> dict[str, tf.Variable]:
    """A wrapped layer's variables by their own name (`output_min`, not `quant_x/output_min:0`)."""
    return {w.name.split("/")[-1].split(":")[0]: w for w in layer.weights}


def calibrate_ranges(qat_model: keras.Model, float_model: keras.Model, images: np.ndarray, batch_size: int = 250) -> int:
    """Sets every activation quantizer's range from the float model's activations.

    TF-MOT starts each range at [-6, 6] and moves it by an EMA with decay 0.999, so a QAT
    fine-tune of a few hundred steps ends with ranges still mostly at their start: too wide
    (coarse steps) or too narrow (clipping). Measured here: after one epoch (175 steps) the
    input normalisation's [-1, 1] still had a range of about [-5.2, 5.2], and int8 agreed
    with the QAT Keras model on only 97.7 % of test images. Seeding each range with the mean
    per-batch min/max, which is where the EMA converges, removes that. Returns the number of
    ranges set.
    """
    targets = []  # (min variable, max variable, float layer name, pre-activation?)
    for layer in qat_model.layers:
        variables = _variables(layer)
        name = layer.name.removeprefix("quant_")
        if "output_min" in variables:
            targets.append((variables["output_min"], variables["output_max"], name, False))
        if "post_activation_min" in variables:  # a conv with its ReLU fused (`fold_batchnorm`)
            targets.append((variables["post_activation_min"], variables["post_activation_max"], name, False))
        if "pre_activation_min" in variables:
            targets.append((variables["pre_activation_min"], variables["pre_activation_max"], name, True))
    if not targets:
        return 0
    # A fresh copy: layers shared with earlier graphs (strip_pruning reuses them) have several
    # outputs, and only this graph's must be probed.
    fresh = keras.models.clone_model(float_model)
    fresh.set_weights(float_model.get_weights())
    float_model = fresh
    outputs = []
    for _, _, name, pre_activation in targets:
        layer = float_model.get_layer(name)
        outputs.append(layer.input if pre_activation else layer.output)
    probe = keras.Model(float_model.input, outputs)
    lows, highs = [], []
    for start in range(0, len(images), batch_size):
        values = probe(images[start : start + batch_size].astype(np.float32), training=False)
        values = values if isinstance(values, list) else [values]
        batch_low, batch_high = [], []
        for (_, _, name, pre_activation), v in zip(targets, values):
            if pre_activation:  # the quantizer sees the layer's output before its activation
                layer = float_model.get_layer(name)
                v = tf.matmul(v, layer.kernel) + (layer.bias if layer.use_bias else 0.0)
            batch_low.append(float(tf.reduce_min(v)))
            batch_high.append(float(tf.reduce_max(v)))
        lows.append(batch_low)
        highs.append(batch_high)
    for (min_var, max_var, _, _), low, high in zip(targets, np.mean(lows, axis=0), np.mean(highs, axis=0)):
        # TFLite needs 0 inside every range.
        min_var.assign(min(float(low), 0.0))
        max_var.assign(max(float(high), 0.0))
    return len(targets)


def _range(layer: keras.layers.Layer) -> tuple[tf.Variable, tf.Variable] | None:
    variables = _variables(layer)
    for prefix in ("output", "post_activation"):
        if prefix + "_min" in variables:
            return variables[prefix + "_min"], variables[prefix + "_max"]
    return None


def _range_source(layer: keras.layers.Layer) -> keras.layers.Layer | None:
    """The layer whose output range `layer`'s output carries: itself, or back through max pools."""
    while _range(layer) is None:
        if not isinstance(getattr(layer, "layer", layer), keras.layers.MaxPooling2D):
            return None
        layer = layer.inbound_nodes[0].inbound_layers
    return layer


def share_concat_ranges(qat_model: keras.Model) -> list[tuple[str, ...]]:
    """Gives each dense block one activation range: its concatenations' and its input's.

    LiteRT concatenates int8 tensors only when inputs and output share one scale. With a range
    per concatenation, the converter puts a QUANTIZE before each one that rewrites the whole
    running tensor (6 of the rung-1 model's 26 ops); with the block's widest range (the union
    of its ranges) everywhere, those ops are gone. Measured on `runs/rung1-v3` applied after
    QAT: validation accuracy 87.06 % -> 87.16 %, 960 bytes fewer, and no QUANTIZE left.
    Returns the layer names of each group whose ranges were tied.
    """
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        while parent.setdefault(name, name) != name:
            name = parent[name]
        return name

    for layer in qat_model.layers:
        if isinstance(getattr(layer, "layer", None), keras.layers.Concatenate) and _range(layer) is not None:
            # The first input is the block's running tensor (tfdense.model.dense_layer).
            source = _range_source(layer.inbound_nodes[0].inbound_layers[0])
            if source is not None:
                parent[root(layer.name)] = root(source.name)
    groups: dict[str, list[str]] = {}
    for name in parent:
        groups.setdefault(root(name), []).append(name)
    order = {layer.name: i for i, layer in enumerate(qat_model.layers)}
    tied = []
    for names in groups.values():
        if len(names) < 2:
            continue
        ranges = [_range(qat_model.get_layer(n)) for n in names]
        low = min(float(lo.numpy()) for lo, _ in ranges)
        high = max(float(hi.numpy()) for _, hi in ranges)
        for lo, hi in ranges:
            lo.assign(low)
            hi.assign(high)
        tied.append(tuple(sorted(names, key=order.__getitem__)))
    return tied


def representative_images(x: np.ndarray, count: int = 200, seed: int = 0) -> Callable[[], Iterator[list[np.ndarray]]]:
    """Calibration batches of training images (never test images) for post-training quantization."""
    idx = np.random.default_rng(seed).choice(len(x), size=min(count, len(x)), replace=False)

    def generate():
        for i in idx:
            yield [x[i : i + 1].astype(np.float32)]

    return generate


def to_tflite(model: keras.Model, int8: bool, representative: Callable | None = None, sparse: bool = False, io_type: str = "int8") -> bytes:
    """Converts a Keras (float or QAT) model to TFLite: full int8 when `int8`, else float32.

    `sparse` (int8 only) stores pruned kernels in TFLite's sparse format (adds DENSIFY ops).
    `io_type="uint8"` (int8 only) gives the model uint8 input and output around the same int8
    graph, as MediaPipe's ImageClassifier expects: the converter adds one QUANTIZE at each end,
    an exact shift by 128 at the same scale.
    """
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if sparse:
            converter.optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = {"int8": tf.int8, "uint8": tf.uint8}[io_type]
        if representative is not None:
            converter.representative_dataset = representative
    return converter.convert()


def c_array(content: bytes, name: str) -> tuple[str, str]:
    """A TensorFlow Lite Micro C source and header holding `content` as an aligned byte array."""
    header = (
        f"// Generated by tfdense: the int8 CIFAR-10 model for TensorFlow Lite Micro.\n"
        f"#ifndef {name.upper()}_H_\n#define {name.upper()}_H_\n\n"
        f"extern const unsigned char {name}[];\nextern const unsigned int {name}_len;\n\n#endif\n"
    )
    lines = [", ".join(f"0x{b:02x}" for b in content[i : i + 12]) for i in range(0, len(content), 12)]
    source = (
        f'#include "{name}.h"\n\n'
        f"// 16-byte alignment: TFLM reads the FlatBuffer in place.\n"
        f"alignas(16) const unsigned char {name}[] = {{\n  " + ",\n  ".join(lines) + "\n};\n"
        f"const unsigned int {name}_len = {len(content)};\n"
    )
    return source, header


def converter_variant(model: keras.Model, kind: str) -> bytes:
    """The optional float-activation variants: int8 weights (`dynamic_range`) or `float16` weights."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if kind == "dynamic_range":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif kind == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    else:
        raise ValueError(f"unknown variant {kind!r}")
    return converter.convert()


def strip(content: bytes) -> bytes:
    """`content` without the strings and min/max a device does not need (see the module doc)."""
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    flatbuffer_utils.strip_strings(model)
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            q = tensor.quantization
            # int8 kernels read scale and zero point only; min/max are the converter's notes.
            if q is not None and q.scale is not None and len(q.scale):
                q.min = None
                q.max = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def stripped_if_identical(content: bytes, images: np.ndarray) -> bytes:
    """`strip(content)`, after checking it scores `images` bit-identically."""
    stripped = strip(content)
    if not np.array_equal(TFLiteClassifier(content).scores(images), TFLiteClassifier(stripped).scores(images)):
        raise ValueError("the stripped int8 model's outputs differ from the converter's; set export.strip=false")
    return stripped



def trained_looking_weights(model: keras.Model, rng: np.random.Generator) -> keras.Model:
    """Sets every weight of `model` (in place) from `rng`: BatchNorms to random, trained-looking
    scale, shift and statistics, kernels and biases to fan-in-scaled normal draws.

    Drawn from `rng` rather than left at Keras' unseeded initial values, so that a file
    converted from them has one size: a concatenation needs a requantize op for each input
    whose calibrated range is not the widest, and which one is widest depends on the weights
    (`python -m tfdense sizefit --per-tensor`'s wide-2x2 model converted to 48,384, 48,536 or
    48,688 bytes from Keras' initial weights).
    """
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.3, n), rng.normal(0, 0.3, n), rng.uniform(0.5, 2, n)])
        elif layer.get_weights():
            layer.set_weights([rng.normal(0, 1 / np.sqrt(np.prod(w.shape[:-1])) if len(w.shape) > 1 else 0.1, w.shape)
                               for w in layer.get_weights()])
    return model


def untrained_int8(model: keras.Model, images: np.ndarray | None = None, shared_ranges: bool = False, seed: int = 1,
                   per_channel: bool = True) -> bytes:
    """The stripped full-int8 file of an untrained float `model`, converted as the pipeline converts a trained one.

    A file's size and speed depend on its architecture, hardly on trained values, so this answers
    both before any training. The model's weights are drawn from `seed`, in place
    (`trained_looking_weights`), and activation ranges are calibrated on `images` (distinct
    ranges make each concatenation need a requantize op, as after real QAT, unless
    `shared_ranges` ties them as `qat.shared_concat_ranges` does). Without
    `images`, random pixels calibrate: the ranges fix only activation scales, which change
    neither size nor speed.
    """
    rng = np.random.default_rng(seed)
    if images is None:
        images = rng.integers(0, 256, (64, 32, 32, 3)).astype(np.uint8)
    trained_looking_weights(model, rng)
    if not per_channel:
        model = fold_batchnorm(model)
    qat_model = quantize(model, per_channel=per_channel)
    calibrate_ranges(qat_model, model, images)
    if shared_ranges:
        share_concat_ranges(qat_model)
    return strip(to_tflite(qat_model, int8=True, representative=representative_images(images, count=32)))
