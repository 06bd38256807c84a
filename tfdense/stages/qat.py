"""The qat stage: quantization-aware fine-tuning with TF-MOT (8-bit weights and activations).

`quantize(model)` wraps every layer for QAT; each Conv -> BN -> ReLU is folded by TF-MOT's own
transforms, and the in-model pixel scale (a `Rescaling` TF-MOT's registry does not know) gets a
fixed [0, 1] output range on which its int8 form is exact. When the prune stage ran, the model
is quantized with the prune-preserving scheme so that fine-tuning keeps its zeros.
`calibrate_ranges` seeds the activation ranges before fine-tuning.
"""

from __future__ import annotations

import sys

import numpy as np

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from tfdense import fitting
from tfdense.config import RunConfig
from tfdense.costs import model_costs, weight_zero_fraction
from tfdense.data import Cifar
from tfdense.metrics import QatMetrics
from tfdense.rundir import RunDir
from tfdense.stages import fit_paths, float_source, load_keras_model, with_teacher

NAME = "qat"
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


def quantize_scope():
    """The custom objects a saved QAT model needs to load again."""
    return _q.quantize_scope({"PixelScaleQuantizeConfig": PixelScaleQuantizeConfig})


def _annotate(layer: keras.layers.Layer) -> keras.layers.Layer:
    if isinstance(layer, keras.layers.InputLayer):
        return layer
    if isinstance(layer, keras.layers.Rescaling):
        if np.any(np.asarray(layer.offset) != 0) or not np.isclose(float(np.asarray(layer.scale)), 1 / 255):
            raise ValueError(f"{layer.name}: only Rescaling(1/255) without offset has an exact int8 form")
        return _q.quantize_annotate_layer(layer, quantize_config=PixelScaleQuantizeConfig())
    return _q.quantize_annotate_layer(layer)


def quantize(model: keras.Model, preserve_sparsity: bool = False) -> keras.Model:
    """Returns the QAT version of `model` (fake-quant 8-bit), weights carried over.

    `preserve_sparsity`: use `Default8BitPrunePreserveQuantizeScheme`, which keeps pruned
    zeros at zero through fine-tuning (plain QAT would regrow them).
    """
    annotated = keras.models.clone_model(model, clone_function=_annotate)
    annotated.set_weights(model.get_weights())
    scheme = (
        tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
        if preserve_sparsity
        else _q.default_8bit.Default8BitQuantizeScheme()
    )
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
    return (variables["output_min"], variables["output_max"]) if "output_min" in variables else None


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


def run(model: keras.Model, data: Cifar, config: RunConfig, run_dir: RunDir) -> tuple[keras.Model, QatMetrics]:
    """Fine-tunes `model` with fake-quantized 8-bit weights and activations.

    When the prune stage ran, its zeros are kept (`Default8BitPrunePreserveQuantizeScheme`).
    """
    qat = config.qat
    source = float_source(run_dir)
    recipe = with_teacher(fitting.Recipe.for_stage(config, NAME), run_dir, source, qat.distill)
    preserve = source == "prune"
    sample = np.random.default_rng(recipe.seed).choice(len(data.x_train), size=min(qat.calibration_images, len(data.x_train)), replace=False)
    calibrated = []

    def build() -> keras.Model:
        quantized = quantize(model, preserve_sparsity=preserve)
        calibrated.append(calibrate_ranges(quantized, model, data.x_train[np.sort(sample)]))
        if qat.shared_concat_ranges:
            # Tied before fine-tuning too, so QAT trains with ranges close to the final ones.
            share_concat_ranges(quantized)
        return quantized

    paths = fit_paths(run_dir, NAME)
    quantized, summary = fitting.fit(build, data, config.data, recipe, paths)
    # The moving averages drift apart again while fine-tuning.
    shared = sum(len(g) for g in share_concat_ranges(quantized)) if qat.shared_concat_ranges else 0
    quantized.save(str(run_dir.model(NAME)), include_optimizer=False)
    float_val = fitting.accuracy(model, data.x_val, data.y_val)
    val_accuracy = fitting.accuracy(quantized, data.x_val, data.y_val)
    if val_accuracy < float_val - 0.03:
        print(
            f"[tfdense] warning: QAT validation accuracy {val_accuracy:.4f} is {float_val - val_accuracy:.1%} below "
            f"the float model's {float_val:.4f}; try more qat.epochs or a lower qat.learning_rate",
            file=sys.stderr,
        )
    costs = model_costs(quantized)
    sparsity = weight_zero_fraction(quantized)
    metrics = QatMetrics(
        val_accuracy=val_accuracy,
        float_val_accuracy=float_val,
        weights=costs.weights,
        nonzero_weights=round(costs.weights * (1 - sparsity)),
        macs=costs.macs,
        sparsity=sparsity,
        scheme="Default8BitPrunePreserveQuantizeScheme" if preserve else "Default8BitQuantizeScheme",
        calibrated_ranges=calibrated[0],
        train_seconds=summary.train_seconds,
        shared_ranges=shared,
    )
    run_dir.write_stage_metrics(NAME, metrics.to_dict())
    fitting.discard_backup(paths)
    return quantized, metrics


def load(run_dir: RunDir) -> keras.Model:
    return load_keras_model(run_dir.require(run_dir.model(NAME), NAME), quantize_scope)
