"""Channel pruning (`tfdense.slimming`): the narrow model computes what the wide one did."""

from __future__ import annotations

import numpy as np
import pytest

from tfdense.config import DenseNetConfig
from tfdense.costs import model_costs
from tfdense.model import build_densenet
from tfdense.slimming import SlimmingError, prunable_convs, select_channels, slim, slim_by_fraction

CONFIG = DenseNetConfig(name="tiny", stem_filters=8, block_layers=(2, 2), growth_rate=6, bottleneck=8)
SKIP = ("stem", "predictions")


def _silence_half_the_channels(model):
    """Zeroes gamma and beta of every second channel of each prunable conv's BatchNorm.

    Those channels then output relu(0) = 0 whatever their input, so removing them (and the
    weights that read them) must leave the model's function unchanged.
    """
    rng = np.random.default_rng(0)
    for name in prunable_convs(model, SKIP):
        bn = model.get_layer(name.removesuffix("_conv") + "_bn")
        gamma, beta, mean, var = bn.get_weights()
        gamma = rng.uniform(0.5, 1.5, gamma.shape).astype(np.float32)
        beta = rng.normal(0, 0.2, beta.shape).astype(np.float32)
        mean = rng.normal(0, 0.5, mean.shape).astype(np.float32)
        var = rng.uniform(0.5, 2.0, var.shape).astype(np.float32)
        gamma[1::2] = 0
        beta[1::2] = 0
        bn.set_weights([gamma, beta, mean, var])


@pytest.fixture(scope="module")
def wide():
    model = build_densenet(CONFIG)
    _silence_half_the_channels(model)
    return model


def test_selection_keeps_the_channels_with_the_largest_gamma(wide):
    kept = select_channels(wide, 0.5, SKIP)
    assert set(kept) == set(prunable_convs(wide, SKIP))
    for name, channels in kept.items():
        width = wide.get_layer(name).filters
        np.testing.assert_array_equal(channels, np.arange(0, width, 2))


def test_slimmed_model_predicts_exactly_what_the_silenced_wide_model_did(wide):
    narrow = slim_by_fraction(wide, 0.5, SKIP)
    images = np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(narrow.predict(images, verbose=0), wide.predict(images, verbose=0), atol=1e-5)


def test_slimming_removes_weights_and_macs_but_never_the_skipped_layers(wide):
    narrow = slim_by_fraction(wide, 0.5, SKIP)
    before, after = model_costs(wide), model_costs(narrow)
    # Halving both the producers and their readers leaves under half the kernels; the unpruned
    # stem at full resolution keeps a fixed share of the MACs.
    assert after.weights < 0.5 * before.weights and after.macs < before.macs
    assert narrow.get_layer("stem_conv").filters == wide.get_layer("stem_conv").filters
    assert narrow.get_layer("predictions").units == 10
    for name in prunable_convs(wide, SKIP):
        assert narrow.get_layer(name).filters == wide.get_layer(name).filters // 2


def test_fraction_zero_is_a_faithful_copy(wide):
    narrow = slim_by_fraction(wide, 0.0, SKIP)
    for a, b in zip(wide.get_weights(), narrow.get_weights(), strict=True):  # a missing array fails too
        np.testing.assert_array_equal(a, b)


def test_grouped_convolutions_are_refused():
    model = build_densenet(DenseNetConfig(name="g", stem_filters=8, block_layers=(1,), growth_rate=8, bottleneck=8, groups=2))
    with pytest.raises(SlimmingError, match="grouped"):
        slim(model, select_channels(model, 0.5, SKIP))
