"""The qat stage: quantization-aware fine-tuning with TF-MOT (8-bit weights and activations).

The float model is wrapped for QAT (`tfdense.conversion.quantize`), its activation ranges seeded
from the float model and, with `qat.shared_concat_ranges`, tied per dense block; then it is
fine-tuned. When the prune stage ran, the model is quantized with the prune-preserving scheme
so that fine-tuning keeps its zeros. With `qat.per_channel=false` the BatchNorms are folded
into their convolutions first and each kernel gets one scale.
"""

from __future__ import annotations

import sys

import numpy as np

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
import tf_keras as keras

from tfdense import fitting
from tfdense.config import RunConfig
from tfdense.conversion import calibrate_ranges, fold_batchnorm, quantize, quantize_scope, scheme_name, share_concat_ranges
from tfdense.costs import model_costs, weight_zero_fraction
from tfdense.data import Cifar
from tfdense.metrics import QatMetrics
from tfdense.rundir import RunDir
from tfdense.stages import fit_paths, load_keras_model, with_teacher

NAME = "qat"


def run(model: keras.Model, data: Cifar, config: RunConfig, run_dir: RunDir) -> tuple[keras.Model, QatMetrics]:
    """Fine-tunes `model` with fake-quantized 8-bit weights and activations.

    When the prune stage ran, its zeros are kept (`Default8BitPrunePreserveQuantizeScheme`).
    """
    qat = config.qat
    source = run_dir.float_source()
    recipe = with_teacher(fitting.Recipe.for_stage(config, NAME), run_dir, source, qat.distill, qat.distill_from)
    preserve = source == "prune"
    sample = np.random.default_rng(recipe.seed).choice(len(data.x_train), size=min(qat.calibration_images, len(data.x_train)), replace=False)
    calibrated = []

    # Per tensor, QAT must see the kernels the file stores: BN folded in (fold_batchnorm).
    source_model = model if qat.per_channel else fold_batchnorm(model)

    def build() -> keras.Model:
        quantized = quantize(source_model, preserve_sparsity=preserve, per_channel=qat.per_channel)
        calibrated.append(calibrate_ranges(quantized, source_model, data.x_train[np.sort(sample)]))
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
        scheme=scheme_name(preserve, qat.per_channel),
        calibrated_ranges=calibrated[0],
        train_seconds=summary.train_seconds,
        shared_ranges=shared,
        per_channel=qat.per_channel,
    )
    run_dir.write_stage_metrics(NAME, metrics.to_dict())
    fitting.discard_backup(paths)
    return quantized, metrics


def load(run_dir: RunDir) -> keras.Model:
    return load_keras_model(run_dir.require(run_dir.model(NAME), NAME), quantize_scope)
