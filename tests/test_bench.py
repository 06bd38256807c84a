"""The speed tools: per-layer training-step times."""

from __future__ import annotations

import dataclasses

from tfdense.bench import format_layer_times, layer_step_times
from tfdense.config import DenseNetConfig
from tfdense.costs import model_costs
from tfdense.model import build_densenet

TINY = DenseNetConfig(name="tiny", stem_filters=8, block_layers=(1, 1), growth_rate=4, bottleneck=0)


def test_layer_times_cover_every_layer_once_with_its_macs():
    model = build_densenet(TINY)
    rows = layer_step_times(model, batch_size=4, steps=1)
    assert [r.name for r in rows] == [layer.name for layer in model.layers[1:]]
    assert all(r.ms > 0 for r in rows)
    assert sum(r.macs for r in rows) == model_costs(model).macs
    table = format_layer_times(rows)
    assert table.count("\n") == len(rows) + 2 and "| stem_conv | Conv2D | 32x32x8 | 221,184 |" in table


def test_a_frozen_stem_still_times_its_forward_pass():
    model = build_densenet(dataclasses.replace(TINY, stem_init="whiten"))
    model.get_layer("stem_conv").trainable = False
    (stem,) = [r for r in layer_step_times(model, batch_size=4, steps=1) if r.name == "stem_conv"]
    assert stem.ms > 0
