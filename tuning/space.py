"""The search space: keras-tuner hyperparameters -> a `tfdense` RunConfig, and the budgets.

The tuner only maps hyperparameters to configs; the model, data and fit loop are tfdense's own.
Weights and MACs are counted analytically (the Keras graph, before any training), so a
candidate over budget is rejected at no training cost.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import keras_tuner as kt

from tfdense.config import DenseNetConfig, RunConfig
from tfdense.costs import ModelCosts, model_costs
from tfdense.model import build_densenet


@dataclass(frozen=True)
class Budget:
    """Upper limits a candidate must meet before it is trained."""

    max_weights: int
    max_macs: int
    max_bytes: int | None = None  # predicted stripped int8 .tflite bytes (`tfdense.costs.predicted_int8_bytes`)
    # Single-thread LiteRT latency of the untrained int8 file over the MLPerf Tiny large ResNet's,
    # timed in the same interleaved rounds (`latency_ratio`). Milliseconds differ 4x between
    # machines of one kind; the ratio moved less (1.29-1.31x for model_int8_large.tflite, the
    # trained file and its untrained architecture: python -m tfdense ship, python -m tfdense bench --device).
    max_latency_ratio: float | None = None

    def violations(self, costs: ModelCosts, latency_ratio: float | None = None) -> list[str]:
        """What `costs` (and a measured `latency_ratio`, when there is one) break."""
        problems = []
        if self.max_latency_ratio is not None and latency_ratio is not None and latency_ratio > self.max_latency_ratio:
            problems.append(f"latency {latency_ratio:.2f}x the large ResNet's > {self.max_latency_ratio:.2f}x")
        if self.max_bytes is not None and costs.int8_bytes > self.max_bytes:
            problems.append(f"{costs.int8_bytes:,} predicted int8 bytes > {self.max_bytes:,}")
        if costs.weights > self.max_weights:
            problems.append(f"{costs.weights:,} weights > {self.max_weights:,}")
        if costs.macs > self.max_macs:
            problems.append(f"{costs.macs:,} MACs > {self.max_macs:,}")
        return problems


# Default budgets: the shipped model's (a .tflite under ResNet-8's 98,496 bytes at <= its MACs),
# and a tighter profile for the 64 KiB target.
# Weights alone do not bound the file: 43k weights in 20 thin layers export to ~68 KB
# (python -m tfdense sizefit, row search-trial09).
PROFILES = {
    "rung1": Budget(max_weights=70_000, max_macs=12_500_000, max_bytes=98_496),
    "64k": Budget(max_weights=45_000, max_macs=12_500_000, max_bytes=65_536),
    # The seed challenge's bar: fewer weights than its 112k-parameter DenseNet, a quarter of the
    # MLPerf Tiny large ResNet's bytes, at most its 76.5M MACs and its single-thread latency.
    "ninety": Budget(max_weights=112_000, max_macs=76_500_000, max_bytes=131_072, max_latency_ratio=1.0),
}


def declare(hp: kt.HyperParameters, space: str = "full") -> None:
    """Declares the space's hyperparameters on `hp` (keras-tuner samples them).

    `space="tiny"` is a four-point space of smoke-sized models, for tests; `space="ninety"` the
    depthwise DenseNets with their first block at the full 32x32 (the `ninety` profile's family).
    """
    if space == "tiny":
        hp.Choice("growth_rate", [2, 4])
        hp.Fixed("stem_filters", 8)
        hp.Fixed("blocks", 2)
        hp.Int("layers_1", 1, 1)
        hp.Int("layers_2", 1, 1)
        hp.Fixed("bottleneck_factor", 2)
        hp.Fixed("compression", 0.5)
        hp.Fixed("stem", "pool")
        hp.Fixed("groups", 1)
        hp.Choice("learning_rate", [0.05, 0.1])
        hp.Fixed("weight_decay", 5e-3)
        hp.Fixed("label_smoothing", 0.1)
        hp.Fixed("cutout", 0)
        return
    if space == "ninety":
        # Resolution, not width, is what the rung-1 models lacked (the pooled stem: +3.84 points at
        # 12 epochs, tuning/ablations/rung1-arch-12ep): the stem keeps 32x32. Depthwise layers buy
        # width there at 1x1 prices in weights, but not in bytes: every output channel costs about
        # 27 bytes of bias and quantization parameters (tfdense.costs), so under 131,072 bytes a
        # depthwise DenseNet holds at most ~75k weights, a 3x3 one ~110k; the search weighs both.
        hp.Choice("stem_filters", [24, 32])
        hp.Fixed("stem", "full")
        hp.Fixed("stem_init", "whiten")
        hp.Fixed("transition_pool", "max_first")
        hp.Choice("depthwise", [True, False])
        hp.Choice("kernel_size", [3, 5])
        # A 3x3 first block whatever kernel_size: at 32x32 a 5x5 depthwise conv is most of the
        # latency. False, its default, is what trials that predate it built.
        hp.Boolean("first_kernel_3", default=False)
        hp.Choice("growth_rate", [16, 24, 32])
        hp.Fixed("blocks", 3)
        hp.Int("layers_1", 2, 4)
        hp.Int("layers_2", 2, 4)
        hp.Int("layers_3", 1, 4)
        hp.Choice("bottleneck_factor", [0, 2, 3, 4])
        hp.Choice("compression", [0.5, 0.75])
        hp.Fixed("groups", 1)
        hp.Float("learning_rate", 0.1, 0.4, sampling="log")
        hp.Fixed("weight_decay", 5e-3)
        hp.Choice("label_smoothing", [0.1, 0.2])
        hp.Fixed("cutout", 0)
        return
    # Ranges chosen so about half of the candidates fit the rung-1 budget (estimated on 4,000
    # random draws with the analytic counts); a 32x32 first block almost never fits 12.5M MACs,
    # so the stem always halves the map, by a 2x2 max pool or by striding.
    hp.Choice("stem_filters", [16, 24, 32])
    hp.Choice("stem", ["pool", "stride2"])
    hp.Choice("growth_rate", [8, 12, 16, 20, 24])
    hp.Choice("blocks", [2, 3])
    hp.Int("layers_1", 1, 5)
    hp.Int("layers_2", 1, 5)
    with hp.conditional_scope("blocks", [3]):
        hp.Int("layers_3", 1, 5)
    hp.Choice("bottleneck_factor", [0, 2, 4])  # bottleneck width = factor x growth; 0 = none
    hp.Choice("compression", [0.5, 0.75, 1.0])
    # No grouped convolutions: on this project's CPU, TensorFlow trains groups=2 at 56 img/s
    # against 364 for the same model ungrouped (python -m tfdense bench), 6.5x slower for 38 %
    # fewer MACs; a search would spend its budget waiting on them.
    hp.Fixed("groups", 1)
    hp.Float("learning_rate", 0.05, 0.4, sampling="log")
    hp.Float("weight_decay", 1e-3, 1e-2, sampling="log")
    hp.Choice("label_smoothing", [0.0, 0.1, 0.2])
    hp.Choice("cutout", [0, 8])


def declared_names(space: str) -> list[str]:
    """The hyperparameters `space` declares."""
    return [h.name for h in _declared(space)]


def narrowed(space: str, name: str, values: tuple[Any, ...]) -> tuple[Any, ...]:
    """`values` as hyperparameter `name` of `space` could draw them (an Int's as int, a Float's as
    float); raises ValueError for a value outside its range or choices."""
    declared = {h.name: h for h in _declared(space)}[name]
    kept = []
    for value in values:
        if isinstance(declared, kt.engine.hyperparameters.Int):
            ok = isinstance(value, int) and not isinstance(value, bool) and declared.min_value <= value <= declared.max_value
        elif isinstance(declared, kt.engine.hyperparameters.Float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and declared.min_value <= value <= declared.max_value
            value = float(value) if ok else value
        else:  # Choice, Boolean, Fixed: a finite set
            # Equality, not type: keras-tuner keeps a Choice of booleans as 1 and 0.
            ok = value in tuple(declared.values)
            value = next((v for v in declared.values if v == value), value)
        if not ok:
            raise ValueError(f"{value!r} is not a value of {name} in --space {space} ({_describe(declared)})")
        kept.append(value)
    return tuple(dict.fromkeys(kept))


def _declared(space: str) -> list[Any]:
    hp = kt.HyperParameters()
    declare(hp, space)
    return hp.space


def _describe(declared: Any) -> str:
    if isinstance(declared, (kt.engine.hyperparameters.Int, kt.engine.hyperparameters.Float)):
        return f"{declared.min_value} to {declared.max_value}"
    return "one of " + ", ".join(map(repr, declared.values))


def to_config(hp: kt.HyperParameters, base: RunConfig) -> RunConfig:
    """The RunConfig a trial trains: `base` with the sampled architecture and recipe.

    Raises tfdense's ConfigError when the values make no valid DenseNet.
    """
    v = hp.values
    blocks = [v["layers_1"], v["layers_2"]] + ([v["layers_3"]] if v["blocks"] == 3 else [])
    kernel_size = v.get("kernel_size", 3)
    kernels = (3 if v.get("first_kernel_3") else kernel_size,) + (kernel_size,) * (len(blocks) - 1)
    model = DenseNetConfig(
        name="densenet_tuned",
        stem_filters=v["stem_filters"],
        stem_pool=v["stem"] == "pool",
        stem_stride=2 if v["stem"] == "stride2" else 1,
        block_layers=tuple(blocks),
        growth_rate=v["growth_rate"],
        bottleneck=v["bottleneck_factor"] * v["growth_rate"],
        compression=v["compression"],
        groups=v["groups"],
        # The Bayesian oracle hands a Choice of booleans back as 0 or 1.
        depthwise=bool(v.get("depthwise", False)),
        kernel_size=kernel_size,
        block_kernels=kernels if len(set(kernels)) > 1 else (),
        stem_init=v.get("stem_init", "he_normal"),
        transition_pool=v.get("transition_pool", "max"),
    )
    train = dataclasses.replace(
        base.train, learning_rate=v["learning_rate"], weight_decay=v["weight_decay"], label_smoothing=v["label_smoothing"]
    )
    data = dataclasses.replace(base.data, cutout=v["cutout"])
    return dataclasses.replace(base, model=model, train=train, data=data)


class DenseNetHyperModel(kt.HyperModel):
    """keras-tuner's view of the space: `build(hp)` declares the hyperparameters and returns the
    RunConfig (not a model: trials build and train it through tfdense in `run_trial`)."""

    def __init__(self, base: RunConfig, space: str = "full"):
        super().__init__(name="densenet")
        self.base = base
        self.space = space

    def build(self, hp: kt.HyperParameters) -> RunConfig:
        declare(hp, self.space)
        return to_config(hp, self.base)


def costs_of(model: DenseNetConfig, per_channel: bool = True) -> ModelCosts:
    """Weights, params, MACs and predicted int8 bytes of the model, counted on its Keras graph
    (no training); `per_channel` as `qat.per_channel`."""
    return model_costs(build_densenet(model), per_channel)


def latency_ratio(config: RunConfig, rounds: int = 5) -> float:
    """The untrained int8 file's single-thread LiteRT latency over the large ResNet's, timed in
    the same interleaved rounds (about half a minute: conversion, then 7 x 300 invocations)."""
    from tfdense.conversion import untrained_int8
    from tfdense.litert import latencies_beside_peers

    content = untrained_int8(build_densenet(config.model), shared_ranges=config.qat.shared_concat_ranges,
                             per_channel=config.qat.per_channel)
    (ms,), (_, large_resnet_ms) = latencies_beside_peers([content], rounds)
    return ms / large_resnet_ms


