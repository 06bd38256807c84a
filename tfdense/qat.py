"""Quantization-aware training with TF-MOT (8-bit weights and activations).

`quantize(model)` wraps every layer for QAT. TF-MOT's default registry knows no `Rescaling`
layer, so the in-model pixel normalisation gets a config that quantizes only its output; every
Conv -> BN -> ReLU is folded by TF-MOT's own transforms. A pruned model is quantized with the
prune-preserving scheme so that fine-tuning keeps its zeros.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from tfdense import data as data_lib
from tfdense.config import RunConfig
from tfdense.model import model_costs, weight_zero_fraction
from tfdense.runio import write_json_atomic

_q = tfmot.quantization.keras


class OutputQuantizeConfig(_q.QuantizeConfig):
    """Quantizes a weightless layer's output only (used for `Rescaling`)."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [_q.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

    def get_config(self):
        return {}


def quantize_scope():
    """The custom objects a saved QAT model needs to load again."""
    return _q.quantize_scope({"OutputQuantizeConfig": OutputQuantizeConfig})


def _annotate(layer: keras.layers.Layer) -> keras.layers.Layer:
    if isinstance(layer, keras.layers.InputLayer):
        return layer
    if isinstance(layer, keras.layers.Rescaling):
        return _q.quantize_annotate_layer(layer, quantize_config=OutputQuantizeConfig())
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


def load_qat_model(path: Path) -> keras.Model:
    with quantize_scope():
        return keras.models.load_model(str(path), compile=False)


def qat_stage(model: keras.Model, data: data_lib.Cifar, config: RunConfig, workdir: Path) -> tuple[keras.Model, dict[str, Any]]:
    """Fine-tunes `model` with fake-quantized 8-bit weights and activations.

    A pruned input (zeros in its kernels) gets the prune-preserving scheme.
    """
    from tfdense.train import EpochLog, compile_for_training, evaluate_accuracy, make_optimizer

    qat, train = config.qat, config.train
    workdir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(train.seed + 2)
    sparsity_in = weight_zero_fraction(model)
    preserve = sparsity_in > 0.05  # a dense float model has (almost) no exact zeros
    quantized = quantize(model, preserve_sparsity=preserve)
    steps_per_epoch = len(data.x_train) // train.batch_size
    optimizer = make_optimizer(train, steps_per_epoch, learning_rate=qat.learning_rate, epochs=qat.epochs, warmup_epochs=0)
    compile_for_training(quantized, optimizer, dataclasses.replace(train, jit_compile=False))
    quantized.fit(
        data_lib.train_dataset(data.x_train, data.y_train, train.batch_size, config.data, seed=train.seed + 2),
        validation_data=data_lib.eval_dataset(data.x_val, data.y_val),
        epochs=qat.epochs,
        callbacks=[
            keras.callbacks.BackupAndRestore(str(workdir / "backup"), delete_checkpoint=False),
            EpochLog(workdir / "history.csv", steps_per_epoch * train.batch_size),
        ],
        verbose=train.verbose,
    )
    quantized.save(str(workdir / "model.h5"), include_optimizer=False)
    sparsity_out = weight_zero_fraction(quantized)
    metrics = {
        "val_accuracy": evaluate_accuracy(quantized, data.x_val, data.y_val),
        "test_accuracy": evaluate_accuracy(quantized, data.x_test, data.y_test),
        **model_costs(quantized),
        "scheme": "Default8BitPrunePreserveQuantizeScheme" if preserve else "Default8BitQuantizeScheme",
        "sparsity_before": sparsity_in,
        "sparsity": sparsity_out,
    }
    write_json_atomic(workdir / "metrics.json", metrics)
    shutil.rmtree(workdir / "backup", ignore_errors=True)
    return quantized, metrics
