"""The DenseNet builder, its analytical counts, and QAT + full-int8 conversion."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfdense.config import DenseNetConfig
from tfdense.costs import layer_costs, model_costs
from tfdense.model import build_densenet, build_for_training, whitening_kernel

TINY = DenseNetConfig(name="tiny", stem_filters=8, block_layers=(2, 1), growth_rate=4, bottleneck=8, compression=0.5)


def test_model_maps_raw_pixels_to_class_probabilities():
    model = build_densenet(TINY)
    x = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype(np.float32)
    probs = model.predict(x, verbose=0)
    assert probs.shape == (3, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert model.get_layer("normalize").scale == pytest.approx(1 / 255)


def test_layer_names_follow_their_block():
    names = [layer.name for layer in build_densenet(TINY).layers]
    for expected in ("stem_conv", "conv2_block1_1_conv", "conv2_block2_2_conv", "pool2_conv", "pool2_pool", "conv3_block1_concat", "predictions"):
        assert expected in names


def test_counts_match_a_hand_calculation():
    # stem 3x3x3->8 at 32x32; pool -> 16x16. Block 1 (16x16): layer 1 in=8: 1x1 8->8, 3x3 8->4;
    # layer 2 in=12: 1x1 12->8, 3x3 8->4; out 16. Transition 1x1 16->8, pool -> 8x8.
    # Block 2 (8x8): in=8: 1x1 8->8, 3x3 8->4; out 12. Dense 12->10.
    convs = [(27 * 8, 32 * 32), (8 * 8, 256), (72 * 4, 256), (12 * 8, 256), (72 * 4, 256), (16 * 8, 256), (8 * 8, 64), (72 * 4, 64)]
    weights = sum(w for w, _ in convs) + 120
    macs = sum(w * p for w, p in convs) + 120
    bn_channels = 8 + 8 + 4 + 8 + 4 + 8 + 8 + 4
    costs = model_costs(build_densenet(TINY))
    assert costs.weights == weights == 1552
    assert costs.macs == macs
    assert costs.params == weights + 4 * bn_channels + 10  # BN: gamma, beta, mean, var; dense bias
    assert costs.params == build_densenet(TINY).count_params()


def test_plain_teacher_counts_match_a_hand_calculation_and_pools_in_every_block():
    # airbench's shape: 2x2 stem 3->24 without padding (31x31); per block a conv at the block's
    # input resolution, a 2x2 max pool (31 -> 15 -> 7 -> 3), a second conv after it.
    config = DenseNetConfig(name="teacher", family="plain", stem_filters=24, stem_kernel=2, stem_padding="valid", stem_pool=False,
                            block_layers=(2, 2, 2), widths=(64, 256, 256))
    model = build_densenet(config)
    convs = [(12 * 24, 31 * 31), (9 * 24 * 64, 31 * 31), (9 * 64 * 64, 15 * 15), (9 * 64 * 256, 15 * 15),
             (9 * 256 * 256, 7 * 7), (9 * 256 * 256, 7 * 7), (9 * 256 * 256, 3 * 3)]
    costs = model_costs(model)
    assert costs.weights == sum(w for w, _ in convs) + 2560
    assert costs.macs == sum(w * p for w, p in convs) + 2560 == 118_147_360
    assert model.get_layer("conv4_pool").output_shape == (None, 3, 3, 256) and model.get_layer("max_pool").output_shape == (None, 256)


@pytest.mark.parametrize("fields, message", [
    ({"family": "plain", "block_layers": (2, 2), "widths": (64,)}, "model.widths must give a width"),
    ({"widths": (64, 128)}, "model.widths is for family=plain only"),
    ({"family": "resnet"}, "model.family must be one of densenet, plain"),
])
def test_plain_family_refuses_widths_that_do_not_fit(fields, message):
    with pytest.raises(ValueError, match=message):
        DenseNetConfig(**fields)


def test_depthwise_dense_layer_counts_match_a_hand_calculation():
    # stem 3x3x3->8 at 32x32, pool -> 16x16; one layer: 1x1 8->8, depthwise 3x3 over 8, 1x1 8->4; concat 12; dense 12->10.
    config = DenseNetConfig(name="dw", stem_filters=8, block_layers=(1,), growth_rate=4, bottleneck=8, depthwise=True)
    model = build_densenet(config)
    assert isinstance(model.get_layer("conv2_block1_2_dwconv"), keras.layers.DepthwiseConv2D)
    costs = model_costs(model)
    assert costs.weights == 216 + 64 + 72 + 32 + 120
    assert costs.macs == 216 * 1024 + (64 + 72 + 32) * 256 + 120
    # Each depthwise channel has its own bias, scale and zero point in the int8 file, like a conv's.
    from tfdense.costs import int8_size_features

    assert int8_size_features(model) == (costs.weights, 8 + 8 + 8 + 4 + 10, len(model.layers))
    with pytest.raises(ValueError, match="model.groups must be 1 with model.depthwise"):
        dataclasses.replace(config, groups=2)


def test_block_kernels_set_each_dense_blocks_depthwise_kernel():
    config = DenseNetConfig(name="dw", stem_filters=8, block_layers=(1, 2), growth_rate=4, bottleneck=8, depthwise=True,
                            kernel_size=3, block_kernels=(5, 3))
    model = build_densenet(config)
    kernels = {layer.name: layer.kernel_size for layer in model.layers if isinstance(layer, keras.layers.DepthwiseConv2D)}
    assert kernels == {"conv2_block1_2_dwconv": (5, 5), "conv3_block1_2_dwconv": (3, 3), "conv3_block2_2_dwconv": (3, 3)}
    # 8 channels of the first block's depthwise conv gain 25 - 9 weights each.
    uniform = dataclasses.replace(config, block_kernels=())
    assert model_costs(model).weights - model_costs(build_densenet(uniform)).weights == 8 * 16


def test_grouped_and_strided_variants_count_fewer_weights():
    base = model_costs(build_densenet(TINY))
    grouped = model_costs(build_densenet(dataclasses.replace(TINY, groups=2)))
    strided = build_densenet(dataclasses.replace(TINY, transition_pool="conv"))
    assert grouped.weights < base.weights
    assert not any(isinstance(layer, keras.layers.MaxPooling2D) and layer.name.startswith("pool") for layer in strided.layers)
    assert model_costs(strided).macs < base.macs
    by_name = {c.name: c for c in layer_costs(build_densenet(dataclasses.replace(TINY, groups=2)))}
    assert by_name["conv2_block1_2_conv"].weights == 3 * 3 * 4 * 4  # 8 in / 2 groups, 4 out


def test_pooling_before_the_transition_conv_quarters_its_macs_and_keeps_its_weights():
    after = {c.name: c for c in layer_costs(build_densenet(TINY))}
    first = build_densenet(dataclasses.replace(TINY, transition_pool="max_first"))
    before = {c.name: c for c in layer_costs(first)}
    assert before["pool2_conv"].weights == after["pool2_conv"].weights
    assert before["pool2_conv"].macs * 4 == after["pool2_conv"].macs
    assert first.get_layer("pool2_conv").input.shape[1] == first.get_layer("pool2_pool").input.shape[1] // 2


def _smooth_images(count: int, seed: int = 0) -> np.ndarray:
    # Neighbouring pixels correlate, as in photos: the patch covariance has distinct eigenvalues.
    coarse = np.random.default_rng(seed).uniform(0, 255, (count, 8, 8, 3))
    return np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2).astype(np.uint8)


def test_whitening_stem_outputs_uncorrelated_unit_variance_directions_in_both_signs():
    images = _smooth_images(64)
    kernel = whitening_kernel(images, 3, 16, eps=0.0)
    outputs = tf.nn.conv2d(images.astype(np.float32) / 255, kernel, 1, "VALID").numpy().reshape(-1, 16)
    np.testing.assert_allclose(outputs[:, 8:], -outputs[:, :8], atol=1e-4)
    np.testing.assert_allclose(np.cov(outputs[:, :8], rowvar=False), np.eye(8), atol=1e-3)


def test_whitened_stem_is_set_from_the_images_and_frozen():
    config = dataclasses.replace(TINY, stem_init="whiten")
    images = _smooth_images(32)
    model = build_for_training(config, images)
    stem = model.get_layer("stem_conv")
    assert not stem.trainable and not stem.trainable_weights
    np.testing.assert_array_equal(stem.get_weights()[0], whitening_kernel(images, 3, 8))
    assert build_for_training(TINY, images).get_layer("stem_conv").trainable


def test_bn_momentum_reaches_every_batchnorm():
    model = build_densenet(dataclasses.replace(TINY, bn_momentum=0.99))
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 8 and all(layer.momentum == 0.99 for layer in norms)


def test_qat_model_converts_to_full_int8_tflite():
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from tfdense.conversion import representative_images, to_tflite
    from tfdense.conversion import quantize

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 32, 32, 3)).astype(np.float32)
    x[0] = 0.0
    x[1] = 255.0
    y = tf.one_hot(rng.integers(0, 10, 64), 10)
    qat = quantize(build_densenet(TINY))
    qat.compile("sgd", "categorical_crossentropy")
    qat.fit(x, y, epochs=1, batch_size=32, verbose=0)
    content = to_tflite(qat, int8=True, representative=representative_images(x, count=8))
    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    assert inp["quantization"] == (1.0, -128)  # q = pixel - 128
    interpreter.set_tensor(inp["index"], (x[:1] - 128).astype(np.int8))
    interpreter.invoke()
    assert interpreter.get_tensor(out["index"]).shape == (1, 10)
    # The pixel scale converts to an exact int8 identity: its output has the input's codes.
    normalized = Interpreter(model_content=content, experimental_preserve_all_tensors=True,
                             experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    normalized.allocate_tensors()
    q = (x[:4] - 128).astype(np.int8)
    first = normalized._get_ops_details()[0]
    assert first["op_name"] == "MUL"
    for image in q:
        normalized.set_tensor(inp["index"], image[None])
        normalized.invoke()
        np.testing.assert_array_equal(normalized.get_tensor(first["outputs"][0]), image[None])


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_int8_file_size_is_predicted_within_one_percent_before_conversion(per_channel):
    from tfdense.cli.sizefit import measure

    # Two wide layers per block (42,480 weights): fast to convert, in the fit's range.
    fields = dict(stem_filters=16, block_layers=(2, 2), growth_rate=24, bottleneck=0, compression=0.75)
    images = np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3)).astype(np.uint8)
    row = measure("mid", fields, images, per_channel=per_channel)
    assert row["predicted"] == pytest.approx(row["bytes"], rel=0.01)
    model = build_densenet(DenseNetConfig(name="mid", **fields))
    assert model_costs(model, per_channel).int8_bytes == row["predicted"]


def test_sizefit_with_shared_ranges_measures_files_without_the_requantize_ops():
    from tfdense.cli.sizefit import measure

    fields = dict(stem_filters=16, block_layers=(2, 2), growth_rate=24, bottleneck=0, compression=0.75)
    images = np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3)).astype(np.uint8)
    # Seed 3 draws weights whose calibrated ranges need requantize ops before concatenations
    # (seed 1, the size test's, happens to need none: 51,856 bytes either way).
    unshared = measure("mid", fields, images, seed=3)
    shared = measure("mid", fields, images, seed=3, shared_ranges=True)
    assert shared["bytes"] < unshared["bytes"]
    assert shared["predicted"] == unshared["predicted"]


def test_optional_tflite_variants_convert_and_shrink():
    from tfdense.conversion import converter_variant, to_tflite

    model = build_densenet(dataclasses.replace(TINY, growth_rate=16, bottleneck=32))
    float32 = to_tflite(model, int8=False)
    float16 = converter_variant(model, "float16")
    dynamic = converter_variant(model, "dynamic_range")
    assert len(dynamic) < len(float16) < len(float32)
    with pytest.raises(ValueError, match="unknown variant"):
        converter_variant(model, "int4")


def test_two_to_four_pruning_keeps_two_of_every_four_weights():
    import tensorflow_model_optimization as tfmot

    from tfdense.config import PruneConfig
    from tfdense.costs import kernels
    from tfdense.sparsity import apply_pruning

    model = build_densenet(dataclasses.replace(TINY, growth_rate=8, bottleneck=16))
    pruned = apply_pruning(model, PruneConfig(m_by_n="2:4", skip_layers=("stem",)), steps_per_epoch=4)
    pruned.compile("sgd", "categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 32, 32, 3)).astype(np.float32)
    pruned.fit(x, tf.one_hot(rng.integers(0, 10, 32), 10), batch_size=8, epochs=1, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    kernel = kernels(stripped)["conv2_block1_2_conv"]  # 3x3x16x8: groups of 4 along the input channels
    groups = (kernel.transpose(0, 1, 3, 2).reshape(-1, 4) != 0).sum(axis=1)
    assert groups.max() <= 2
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.01)


def test_calibration_seeds_activation_ranges_from_the_float_model():
    from tfdense.conversion import calibrate_ranges, quantize

    model = build_densenet(TINY)
    qat = quantize(model)
    x = np.random.default_rng(2).integers(0, 256, (64, 32, 32, 3)).astype(np.float32)
    assert calibrate_ranges(qat, model, x, batch_size=32) > 5
    ranges = {w.name.split("/")[-1]: float(w.numpy()) for w in qat.get_layer("quant_stem_relu").weights if "output_m" in w.name}
    probe = keras.Model(model.input, model.get_layer("stem_relu").output)
    expected_max = np.mean([probe(x[:32]).numpy().max(), probe(x[32:]).numpy().max()])
    assert ranges["output_min:0"] == 0.0  # ReLU: TFLite needs 0 in range, and nothing is below it
    assert ranges["output_max:0"] == pytest.approx(expected_max, rel=1e-4)


def test_shared_concat_ranges_remove_every_requantization_from_the_int8_graph():
    from tfdense.cli.latency import graph_prefixes
    from tfdense.conversion import representative_images, to_tflite
    from tfdense.conversion import calibrate_ranges, quantize, share_concat_ranges

    config = dataclasses.replace(TINY, block_layers=(2, 1), bottleneck=0, transition_pool="max_first")
    x = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3)).astype(np.float32)
    keras.utils.set_random_seed(0)
    float_model = build_densenet(config)
    qat = quantize(float_model)
    calibrate_ranges(qat, float_model, x)

    def ranges(names: tuple[str, ...]) -> set[tuple[float, ...]]:
        return {tuple(float(w.numpy()) for w in qat.get_layer(n).weights if w.name.split("/")[-1][:10] in ("output_min", "output_max")) for n in names}

    expected = [("quant_stem_relu", "quant_conv2_block1_concat", "quant_conv2_block2_concat"), ("quant_pool2_relu", "quant_conv3_block1_concat")]
    # As calibrated, ranges differ within a block: converted so, it would need QUANTIZE ops.
    assert any(len(ranges(group)) > 1 for group in expected)
    assert share_concat_ranges(qat) == expected
    assert all(len(ranges(group)) == 1 for group in expected)
    content = to_tflite(qat, int8=True, representative=representative_images(x, count=8))
    ops = [p.op for p in graph_prefixes(content)]
    assert ops.count("CONCATENATION") == 3 and "QUANTIZE" not in ops, ops


def test_folding_the_batchnorms_keeps_the_outputs_and_fuses_each_relu_into_its_conv():
    from tfdense.conversion import fold_batchnorm, trained_looking_weights

    model = trained_looking_weights(build_densenet(dataclasses.replace(TINY, depthwise=True, kernel_size=5)), np.random.default_rng(0))
    folded = fold_batchnorm(model)
    x = np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    kinds = [type(layer).__name__ for layer in folded.layers]
    assert "BatchNormalization" not in kinds and "ReLU" not in kinds, kinds
    convs = [layer for layer in folded.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))]
    assert convs and all(layer.use_bias and layer.activation is keras.activations.relu for layer in convs)
    assert model_costs(folded).weights == model_costs(model).weights


def test_per_tensor_qat_refuses_batchnorms_that_are_not_folded():
    from tfdense.conversion import quantize

    with pytest.raises(ValueError, match="fold_batchnorm"):
        quantize(build_densenet(TINY), per_channel=False)


def test_a_per_tensor_int8_file_stores_one_scale_per_kernel_and_drops_each_channels_parameters():
    from tfdense.conversion import untrained_int8
    from tfdense.costs import int8_size_features
    from tfdense.litert import kernel_scale_counts

    config = dataclasses.replace(TINY, depthwise=True, stem_pool=False, transition_pool="max_first")
    x = np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3)).astype(np.uint8)
    keras.utils.set_random_seed(0)
    per_channel = untrained_int8(build_densenet(config), x, shared_ranges=True)
    keras.utils.set_random_seed(0)
    per_tensor = untrained_int8(build_densenet(config), x, shared_ranges=True, per_channel=False)
    assert max(kernel_scale_counts(per_channel)) > 1
    assert set(kernel_scale_counts(per_tensor)) == {1}
    _, channels, _ = int8_size_features(build_densenet(config))
    # Per conv channel the weights' float32 scale and int64 zero point, and the bias's: 24
    # bytes; `channels` also counts the classifier's, per tensor in both files.
    assert len(per_channel) - len(per_tensor) >= 16 * channels
