"""Quantization-aware training with TF-MOT (8-bit weights and activations).

`quantize(model)` wraps every layer for QAT. TF-MOT's default registry knows no `Rescaling`
layer, so the in-model pixel normalisation gets a config that quantizes only its output; every
Conv -> BN -> ReLU is folded by TF-MOT's own transforms. A pruned model is quantized with the
prune-preserving scheme so that fine-tuning keeps its zeros.
"""

from __future__ import annotations

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
import tensorflow_model_optimization as tfmot
import tf_keras as keras

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
