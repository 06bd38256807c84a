"""The speed tools: per-layer training-step times and device latency of untrained architectures."""

from __future__ import annotations

import dataclasses

from tfdense.cli.bench import format_layer_times, layer_step_times
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


def test_device_mode_converts_an_arm_untrained_and_times_it_beside_the_peers():
    from tfdense.cli.bench import device_times
    from tfdense.config import PRESETS, apply_overrides

    config = apply_overrides(PRESETS["smoke"], ["model.growth_rate=8", "qat.shared_concat_ranges=true"])
    rows = device_times([("wide", config)], rounds=3)
    assert [r.name for r in rows] == ["wide", "pretrainedResnet_quant.tflite", "pretrainedResnet_large_int8.tflite"]
    wide, resnet8, large = rows
    costs = model_costs(build_densenet(config.model))
    assert (wide.weights, wide.macs) == (costs.weights, costs.macs)
    # Shared ranges drop the requantize op the size predictor counts for each concatenation.
    assert 0.9 * costs.int8_bytes < wide.tflite_bytes < costs.int8_bytes
    assert (resnet8.tflite_bytes, resnet8.macs, resnet8.vs_reference) == (98_496, 12_501_632, 1.0)
    # No order of the latencies is asserted: wall-clock times of 0.1-0.6 ms on 2 shared cores are
    # the machine's, not the code's (under a concurrent training the large ResNet, 1.9x ResNet-8's
    # time when idle, timed 0.334 against 0.334 ms in three interleaved rounds).
    assert all(r.latency_ms > 0 for r in rows) and resnet8.vs_reference == 1.0
    assert large.vs_reference == large.latency_ms / resnet8.latency_ms


def test_arms_without_device_mode_are_refused(capsys):
    from tfdense.cli.bench import main

    assert main(["--preset", "smoke", "--arm", "a=model.growth_rate=8"]) == 2
    assert "--arm only applies with --device" in capsys.readouterr().err


def test_with_a_teacher_the_bench_also_times_distillation_and_the_teachers_rate(tmp_path, cifar10):
    from tfdense.cli.bench import benchmark
    from tfdense.config import PRESETS, apply_overrides

    teacher = tmp_path / "teacher.h5"
    build_densenet(TINY).save(str(teacher), include_optimizer=False)
    config = apply_overrides(PRESETS["smoke"], [f"train.teacher={teacher}", "train.teacher_flip=true", "data.train_subset=500"])
    result = benchmark(config, steps=2, warmup_steps=1)
    assert result["train_img_per_s_teacher_every_batch"] > 0 and result["teacher_views_per_s"] > 0
    assert result["seconds_to_cache_one_view_per_image"] == 500 / result["teacher_views_per_s"]
    assert "teacher_views_per_s" not in benchmark(PRESETS["smoke"], steps=2, warmup_steps=1)
