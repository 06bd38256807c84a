"""Typed run configuration: one frozen dataclass per pipeline stage, named presets, overrides.

A run is `RunConfig(model, data, train, prune, qat, export)`. Presets name whole configs;
a JSON/YAML file and `--set section.field=value` overrides are applied on top with
`dataclasses.replace`, so a misspelt key is an error rather than a silently dead setting.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


class ConfigError(ValueError):
    """A configuration value or key that cannot be used; the message names the field."""


def _require(ok: bool, name: str, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{name} {rule}, got {value!r}")


TRANSITION_POOLS = ("max", "conv", "max_first")
FAMILIES = ("densenet", "plain")


@dataclass(frozen=True)
class DenseNetConfig:
    """Architecture of the DenseNet (see `tfdense.model.build_densenet`)."""

    section: ClassVar[str] = "model"
    name: str = "densenet"
    # "densenet": the dense blocks below. "plain": a wide airbench-shaped teacher, not for
    # shipping: per block `block_layers[b]` Conv -> BN -> ReLU of width `widths[b]`, the first
    # followed by a 2x2 max pool, then a global max pool (`tfdense.model.build_plain`).
    family: str = "densenet"
    widths: tuple[int, ...] = ()  # plain only: the conv width of each block
    stem_filters: int = 24
    stem_kernel: int = 3
    stem_stride: int = 1
    stem_pool: bool = True  # 2x2 max pool after the stem: 4x fewer MACs in the first block
    # "valid": the stem's map shrinks by stem_kernel - 1 (airbench's 2x2 stem: 31x31), which
    # cut the plain teacher's MACs from 146.6M to 118.1M (tfdense.costs).
    stem_padding: str = "same"
    block_layers: tuple[int, ...] = (4, 6, 8)
    growth_rate: int = 16
    bottleneck: int = 32  # width of the 1x1 conv before each 3x3; 0 = no bottleneck
    compression: float = 0.5  # transition output channels = compression * input channels
    # "max": 1x1 conv, then 2x2 max pool; "conv": the 1x1 conv strided 2; "max_first": 2x2 max
    # pool, then the 1x1 conv, which then costs 4x fewer MACs (a sixth of the rung-1 model's).
    transition_pool: str = "max"
    # Groups of the 3x3 convs (falls back to 1 where widths don't divide). Measured: TensorFlow
    # trains grouped convs ~6.5x slower on CPU than the same model ungrouped (56 against 364 img/s: python -m tfdense bench --config tuning/configs/rung1_dn71k.yaml --set model.groups=2).
    groups: int = 1
    # Each dense layer's new maps from a depthwise kernel_size conv over the bottleneck, then a
    # 1x1 conv to growth_rate (tfdense.model.dense_layer), instead of one kernel_size conv.
    depthwise: bool = False
    kernel_size: int = 3  # of the dense layers' spatial conv (odd)
    # One kernel size per dense block, in place of kernel_size (empty: kernel_size everywhere).
    # The 32x32 block is where a large depthwise kernel costs time: 5x5 depthwise convs ran at
    # 40 GMAC/s against 236 for the 1x1 convs, 61 % of model_int8_large.tflite's LiteRT time
    # (python -m tfdense latency exports/model_int8_large.tflite).
    block_kernels: tuple[int, ...] = ()
    dropout: float = 0.0  # before the classifier
    # Moving-average momentum of every BatchNorm's statistics: at 0.9 they average ~10 batches,
    # so validation accuracy can swing between epochs while the weights still move fast.
    bn_momentum: float = 0.9
    # "he_normal", or "whiten": the stem kernel is set from the training images' patch
    # covariance (stem_filters/2 top eigenvectors, both signs, scaled to unit variance) and
    # frozen, as in airbench; it stays an ordinary Conv2D, so it quantizes like the rest.
    stem_init: str = "he_normal"

    def __post_init__(self) -> None:
        s = self.section
        _require(self.stem_padding in ("same", "valid"), f"{s}.stem_padding", "must be 'same' or 'valid'", self.stem_padding)
        _require(self.family in FAMILIES, f"{s}.family", f"must be one of {', '.join(FAMILIES)}", self.family)
        if self.family == "plain":
            _require(len(self.widths) == len(self.block_layers) and all(w >= 1 for w in self.widths), f"{s}.widths",
                     "must give a width >= 1 for each of model.block_layers with family=plain", self.widths)
        else:
            _require(not self.widths, f"{s}.widths", "is for family=plain only", self.widths)
        _require(0 < self.bn_momentum < 1, f"{s}.bn_momentum", "must be in (0, 1)", self.bn_momentum)
        _require(self.stem_init in ("he_normal", "whiten"), f"{s}.stem_init", "must be 'he_normal' or 'whiten'", self.stem_init)
        if self.stem_init == "whiten":
            patch = self.stem_kernel * self.stem_kernel * 3
            _require(self.stem_filters % 2 == 0 and self.stem_filters <= 2 * patch, f"{s}.stem_filters",
                     f"must be even and <= {2 * patch} with stem_init=whiten (both signs of each of the {patch} patch directions)", self.stem_filters)
        for f in ("stem_filters", "stem_kernel", "stem_stride", "growth_rate", "groups"):
            _require(getattr(self, f) >= 1, f"{s}.{f}", "must be >= 1", getattr(self, f))
        _require(self.kernel_size % 2 == 1, f"{s}.kernel_size", "must be odd (3, 5, 7)", self.kernel_size)
        if self.block_kernels:
            _require(self.family == "densenet" and len(self.block_kernels) == len(self.block_layers), f"{s}.block_kernels",
                     "must give one kernel size per entry of model.block_layers (family=densenet)", self.block_kernels)
            _require(all(k >= 1 and k % 2 == 1 for k in self.block_kernels), f"{s}.block_kernels", "entries must be odd (3, 5, 7)", self.block_kernels)
        _require(not (self.depthwise and self.groups > 1), f"{s}.groups", "must be 1 with model.depthwise (a depthwise conv is fully grouped)", self.groups)
        _require(self.stem_stride <= 2, f"{s}.stem_stride", "must be 1 or 2", self.stem_stride)
        _require(self.bottleneck >= 0, f"{s}.bottleneck", "must be >= 0 (0 = none)", self.bottleneck)
        _require(len(self.block_layers) >= 1, f"{s}.block_layers", "needs at least one block", self.block_layers)
        _require(all(n >= 1 for n in self.block_layers), f"{s}.block_layers", "entries must be >= 1", self.block_layers)
        # Every transition (every plain block) halves the map; the stem may already have quartered it.
        side = 32 // self.stem_stride // (2 if self.stem_pool else 1)
        halvings = len(self.block_layers) - (0 if self.family == "plain" else 1)
        _require(
            side >> halvings >= 1,
            f"{s}.block_layers",
            f"has too many blocks for a {side}x{side} map after the stem",
            self.block_layers,
        )
        _require(0 < self.compression <= 1, f"{s}.compression", "must be in (0, 1]", self.compression)
        _require(self.transition_pool in TRANSITION_POOLS, f"{s}.transition_pool", f"must be one of {', '.join(TRANSITION_POOLS)}", self.transition_pool)
        _require(0 <= self.dropout < 1, f"{s}.dropout", "must be in [0, 1)", self.dropout)


@dataclass(frozen=True)
class DataConfig:
    """Where CIFAR-10 comes from, the validation split and the augmentation."""

    section: ClassVar[str] = "data"
    data_dir: str | None = None  # a cifar-10-batches-py folder or cifar-10-python.tar.gz
    val_size: int = 5000  # stratified, taken from the training set
    split_seed: int = 0
    train_subset: int = 0  # train on only this many images (stratified); 0 = all
    crop_padding: int = 4  # random translate by up to this many pixels (zero padding)
    flip: bool = True
    # Rotation by a random angle in [-rotation, rotation] degrees per image (bilinear, edges
    # reflected), after the crop and flip; 0 = off. With train.teacher_views each cached view
    # has its own angle, so the teacher's prediction holds for exactly what the student sees.
    rotation: float = 0.0
    cutout: int = 0  # side of the square erased per image; 0 = off
    mixup_alpha: float = 0.0  # Beta(alpha, alpha) mixing; 0 = off

    def __post_init__(self) -> None:
        s = self.section
        _require(0 < self.val_size < 50000 and self.val_size % 10 == 0, f"{s}.val_size", "must be a multiple of 10 in (0, 50000)", self.val_size)
        _require(self.train_subset >= 0, f"{s}.train_subset", "must be >= 0 (0 = all)", self.train_subset)
        _require(self.train_subset <= 50000 - self.val_size, f"{s}.train_subset", f"must be <= {50000 - self.val_size}", self.train_subset)
        _require(0 <= self.crop_padding <= 16, f"{s}.crop_padding", "must be in [0, 16]", self.crop_padding)
        _require(0 <= self.rotation <= 45, f"{s}.rotation", "must be in [0, 45] degrees", self.rotation)
        _require(0 <= self.cutout <= 32, f"{s}.cutout", "must be in [0, 32]", self.cutout)
        _require(self.mixup_alpha >= 0, f"{s}.mixup_alpha", "must be >= 0", self.mixup_alpha)

    def distinct_views(self, mirrored_alike: bool) -> int:
        """How many different images the crop and flip make of one image (`mirrored_alike`: an
        image and its mirror count as one, as they do for a teacher that averages both)."""
        return (2 * self.crop_padding + 1) ** 2 * (2 if self.flip and not mirrored_alike else 1)


@dataclass(frozen=True)
class TrainConfig:
    """The float training recipe: SGD + Nesterov, linear warm-up then cosine or linear decay to 0.

    The prune and QAT stages fine-tune with this same recipe (batch size, momentum, weight
    decay, label smoothing, seed, and the `data` augmentation); only their epochs and learning
    rate are their own.
    """

    section: ClassVar[str] = "train"
    epochs: int = 150
    batch_size: int = 128
    learning_rate: float = 0.1  # peak, for batch_size images per step
    momentum: float = 0.9
    nesterov: bool = True
    # Decoupled (lr * wd per step, as tf_keras' SGD applies it); 5e-3 shrinks like the
    # classic 5e-4 L2 penalty does through momentum 0.9. BN and biases are exempt.
    weight_decay: float = 5e-3
    warmup_epochs: float = 2.0
    schedule: str = "cosine"  # after the warm-up: "cosine" or "linear" decay to 0
    label_smoothing: float = 0.1
    # Exponential moving average of the weights, updated every step (e.g. 0.999); 0 = off.
    # Validation, the best checkpoint and the kept model use the average. Train stage only:
    # an average would revive pruned weights and blur QAT's ranges.
    ema_momentum: float = 0.0
    # Knowledge distillation (train stage): a trained Keras model file (e.g. another run's
    # train/model.h5) whose softened predictions on the same augmented batch the student also
    # fits; loss = (1 - alpha) * CE + alpha * T^2 * KL(teacher_T || student_T). Several files
    # form one teacher, the geometric mean of their predictions, more accurate than any of them
    # (python -m tfdense teacher tuning/teachers/dn111k_float.h5 tuning/teachers/dn71k_float.h5). Empty = off.
    teacher: tuple[str, ...] = ()
    # The teacher also predicts the mirrored batch and averages both views (test-time flip
    # augmentation): a more accurate teacher for twice its forward passes, same student inputs.
    teacher_flip: bool = False
    # 0: the teacher predicts every augmented batch the student sees (its forward pass paid every
    # step). N: it predicts N fixed augmented views of each training image once, cached under
    # ~/.cache/tfdense/teacher_views, and every batch shows one of them at random: the crop
    # offsets (mirroring, rotation) are drawn from those N, no cutout or mixup. In the loop the plain
    # teacher with its mirror took a 21M-MAC student from 292 to 177 img/s; 16 views cost ~27 min
    # once (python -m tfdense bench --preset full --config tuning/searches/ninety-bayes/best_config.yaml
    # --set "train.teacher=[tuning/teachers/plain_teacher_fp16.h5]" --set train.teacher_flip=true).
    teacher_views: int = 0
    distill_alpha: float = 0.5
    distill_temperature: float = 4.0
    # A Keras model file of this same architecture (e.g. a finished run's train/model.h5) whose
    # weights the train stage starts from instead of the initialisers: a warm restart, e.g. a
    # short schedule with `ema_momentum` over an already-trained student (weight averaging's
    # fine-tune). With `epochs: 0` the train stage keeps the file's weights as they are and only
    # the later stages run: a compression recipe compared on one trained model, without an epoch
    # that re-estimates BatchNorm's statistics (one epoch at lr 1e-5 from the shipped large
    # student's tuning/starts/ninety_long_train.h5 moved its validation from 90.54 to 90.32 %).
    # Empty = from scratch.
    init_from: str = ""
    seed: int = 0
    # XLA-compile the train and prune steps (QAT's fake-quant wrappers always run without):
    # measured 28 % slower than oneDNN on a 2-core CPU
    # (python -m tfdense bench --preset full --set train.batch_size=128 --set train.jit_compile=true).
    jit_compile: bool = False
    verbose: int = 1  # Keras progress: 1 = bar with ETA, 2 = one line per epoch

    def __post_init__(self) -> None:
        s = self.section
        _require(self.epochs >= 1 or (self.epochs == 0 and self.init_from), f"{s}.epochs", "must be >= 1 (0 only with train.init_from)", self.epochs)
        _require(self.batch_size >= 1, f"{s}.batch_size", "must be >= 1", self.batch_size)
        _require(self.learning_rate > 0, f"{s}.learning_rate", "must be > 0", self.learning_rate)
        _require(0 <= self.momentum < 1, f"{s}.momentum", "must be in [0, 1)", self.momentum)
        _require(self.weight_decay >= 0, f"{s}.weight_decay", "must be >= 0", self.weight_decay)
        _require(0 <= self.warmup_epochs < max(self.epochs, 1), f"{s}.warmup_epochs", "must be in [0, epochs)", self.warmup_epochs)
        _require(self.schedule in ("cosine", "linear"), f"{s}.schedule", "must be 'cosine' or 'linear'", self.schedule)
        _require(0 <= self.label_smoothing < 1, f"{s}.label_smoothing", "must be in [0, 1)", self.label_smoothing)
        _require(0 <= self.ema_momentum < 1, f"{s}.ema_momentum", "must be in [0, 1) (0 = off)", self.ema_momentum)
        _require(0 <= self.distill_alpha <= 1, f"{s}.distill_alpha", "must be in [0, 1]", self.distill_alpha)
        _require(self.teacher or not self.teacher_flip, f"{s}.teacher_flip", "needs train.teacher", self.teacher_flip)
        _require(all(self.teacher), f"{s}.teacher", "must not contain an empty file name", self.teacher)
        _require(self.teacher_views >= 0, f"{s}.teacher_views", "must be >= 0 (0 = the teacher runs on every batch)", self.teacher_views)
        _require(self.teacher or not self.teacher_views, f"{s}.teacher_views", "needs train.teacher", self.teacher_views)
        _require(self.distill_temperature > 0, f"{s}.distill_temperature", "must be > 0", self.distill_temperature)
        _require(self.verbose in (0, 1, 2), f"{s}.verbose", "must be 0, 1 or 2", self.verbose)


DISTILL_SOURCES = ("model", "teacher")


@dataclass(frozen=True)
class PruneConfig:
    """Magnitude pruning with TF-MOT (the `prune` stage).

    Unstructured: sparsity ramps from `initial_sparsity` to `target_sparsity` (`schedule`,
    `ramp_fraction`, masks updated every `frequency` steps). `m_by_n="2:4"` instead keeps the
    2 largest of every 4 weights from the first step: 50 % by construction, no ramp.
    `channel_fraction` first removes that fraction of the output channels of every pruned conv
    (structured, `tfdense.slimming`: a narrower model, fewer bytes and MACs); the fine-tune then
    applies TF-MOT's weight sparsity on top if `target_sparsity` > 0.
    """

    section: ClassVar[str] = "prune"
    target_sparsity: float = 0.5
    initial_sparsity: float = 0.0
    schedule: str = "polynomial"  # "polynomial" (PolynomialDecay) or "constant" (ConstantSparsity)
    epochs: int = 10  # fine-tuning epochs; sparsity ramps over the first `ramp_fraction` of them
    ramp_fraction: float = 0.7
    frequency: int = 50  # steps between mask updates (TF-MOT's default of 100 never fires in short runs)
    m_by_n: str = ""  # "2:4" for structured M:N sparsity; "" = unstructured
    skip_layers: tuple[str, ...] = ("stem", "predictions")  # layer-name prefixes left unpruned
    learning_rate: float = 0.01
    channel_fraction: float = 0.0  # structured: output channels removed per pruned conv; 0 = off
    # Fine-tune against this run's trained float model as teacher (train.distill_alpha and
    # temperature): what pruning removes is pulled back towards the model it came from.
    distill: bool = False
    # What `distill` distils from: "model", the float model this stage starts from, or
    # "teacher", the train stage's own teacher (train.teacher, its flip and cached views).
    distill_from: str = "model"

    def __post_init__(self) -> None:
        s = self.section
        _require(self.distill_from in DISTILL_SOURCES, f"{s}.distill_from", f"must be one of {', '.join(DISTILL_SOURCES)}", self.distill_from)
        _require(0 <= self.channel_fraction < 1, f"{s}.channel_fraction", "must be in [0, 1)", self.channel_fraction)
        _require(0 <= self.target_sparsity < 1, f"{s}.target_sparsity", "must be in [0, 1)", self.target_sparsity)
        _require(0 <= self.initial_sparsity <= self.target_sparsity, f"{s}.initial_sparsity", "must be in [0, target_sparsity]", self.initial_sparsity)
        _require(self.schedule in ("polynomial", "constant"), f"{s}.schedule", "must be 'polynomial' or 'constant'", self.schedule)
        _require(self.epochs >= 1, f"{s}.epochs", "must be >= 1", self.epochs)
        _require(0 < self.ramp_fraction <= 1, f"{s}.ramp_fraction", "must be in (0, 1]", self.ramp_fraction)
        _require(self.frequency >= 1, f"{s}.frequency", "must be >= 1", self.frequency)
        _require(self.m_by_n in ("", "2:4"), f"{s}.m_by_n", "must be '' or '2:4'", self.m_by_n)
        if self.m_by_n:
            _require(self.target_sparsity == 0.5, f"{s}.target_sparsity", "must be 0.5 with m_by_n=2:4 (2 of 4 kept)", self.target_sparsity)
            _require(self.initial_sparsity == 0, f"{s}.initial_sparsity", "must be 0 with m_by_n=2:4 (no ramp)", self.initial_sparsity)
        _require(self.learning_rate > 0, f"{s}.learning_rate", "must be > 0", self.learning_rate)


@dataclass(frozen=True)
class QatConfig:
    """Quantization-aware fine-tuning (the `qat` stage)."""

    section: ClassVar[str] = "qat"
    epochs: int = 5
    learning_rate: float = 0.005
    calibration_images: int = 2000  # training images that seed the activation ranges before QAT
    distill: bool = False  # fine-tune against the float model QAT starts from, as teacher
    distill_from: str = "model"  # or "teacher": as prune.distill_from
    # One activation range for each dense block's concatenations and the tensor that starts
    # the block, so the int8 graph appends in place instead of requantizing the whole running
    # tensor before each concatenation (tfdense.conversion.share_concat_ranges): on the shipped
    # rung-1 model 960 bytes and 6 QUANTIZE ops fewer, validation 87.06 -> 87.16 % int8.
    shared_concat_ranges: bool = True
    # One weight scale per output channel (TFLite's default) or one per kernel. Per kernel, the
    # file drops each channel's float32 scale and int64 zero point from weights and bias: the
    # shipped large model's pruned weights through the same 2-epoch QAT, 129,920 -> 93,464
    # bytes, 90.96 -> 90.70 % int8 validation, the same latency (tuning/README.md, "Per-tensor").
    per_channel: bool = True

    def __post_init__(self) -> None:
        s = self.section
        _require(self.distill_from in DISTILL_SOURCES, f"{s}.distill_from", f"must be one of {', '.join(DISTILL_SOURCES)}", self.distill_from)
        _require(self.epochs >= 1, f"{s}.epochs", "must be >= 1", self.epochs)
        _require(self.calibration_images >= 1, f"{s}.calibration_images", "must be >= 1", self.calibration_images)
        _require(self.learning_rate > 0, f"{s}.learning_rate", "must be > 0", self.learning_rate)


@dataclass(frozen=True)
class ExportConfig:
    """TFLite files written by the `export` stage (the full-int8 and float32 ones always)."""

    section: ClassVar[str] = "export"
    calibration_images: int = 500  # training images for the converter's representative dataset
    ptq: bool = False  # also post-training-quantize the float model, to measure what QAT gains
    dynamic_range: bool = False  # also an int8-weights / float-activations variant
    float16: bool = False  # also a float16-weights variant
    sparse_encoding: bool = True  # try TFLite's sparse weight format when pruned; kept only if it pays
    # Drop tensor names, signatures and activation min/max from the int8 files (outputs stay
    # bit-identical; see tfdense.footprint for what a user loses).
    strip: bool = True

    def __post_init__(self) -> None:
        _require(self.calibration_images >= 1, f"{self.section}.calibration_images", "must be >= 1", self.calibration_images)


@dataclass(frozen=True)
class EvaluateConfig:
    """The `evaluate` stage: LiteRT on the 10,000 test images."""

    section: ClassVar[str] = "evaluate"
    latency_images: int = 300  # single-image invocations timed for the median latency
    threads: int = 1

    def __post_init__(self) -> None:
        _require(self.latency_images >= 1, f"{self.section}.latency_images", "must be >= 1", self.latency_images)
        _require(self.threads >= 1, f"{self.section}.threads", "must be >= 1", self.threads)


@dataclass(frozen=True)
class RunConfig:
    """Everything one run of `python -m tfdense.train` needs."""

    model: DenseNetConfig = field(default_factory=DenseNetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    qat: QatConfig = field(default_factory=QatConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def __post_init__(self) -> None:
        for stage in (self.prune, self.qat):
            if stage.distill and stage.distill_from == "teacher":
                _require(bool(self.train.teacher), f"{stage.section}.distill_from", "'teacher' needs train.teacher", stage.distill_from)
        views = self.train.teacher_views
        if views:
            _require(not self.data.cutout and not self.data.mixup_alpha, "train.teacher_views",
                     "needs data.cutout 0 and data.mixup_alpha 0 (a cached prediction holds for a crop, flip and rotation only)", views)
            distinct = self.data.distinct_views(self.train.teacher_flip)
            _require(views <= distinct, "train.teacher_views", f"must be <= {distinct}, the distinct views data.crop_padding and data.flip make", views)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


SECTIONS = tuple(f.name for f in dataclasses.fields(RunConfig))

PRESETS: dict[str, RunConfig] = {
    # A tiny model on 2,000 images: for tests and first contact, 1-3 minutes on 2 cores.
    "smoke": RunConfig(
        model=DenseNetConfig(name="densenet_smoke", stem_filters=8, block_layers=(1, 1), growth_rate=4, bottleneck=8),
        data=DataConfig(train_subset=2000),
        train=TrainConfig(epochs=2, batch_size=64, warmup_epochs=0.5, verbose=2),
        prune=PruneConfig(epochs=1, frequency=5, target_sparsity=0.5),
        qat=QatConfig(epochs=1),
        export=ExportConfig(calibration_images=100, ptq=True),
        evaluate=EvaluateConfig(latency_images=50),
    ),
    # Real data in <= 15 minutes on 2 cores; accuracy stated in the README.
    "quick": RunConfig(
        model=DenseNetConfig(name="densenet_quick", stem_filters=16, block_layers=(3, 4, 6), growth_rate=12, bottleneck=24),
        # Batch 256 trains 21 % more img/s than 128 on 2 cores (python -m tfdense bench --preset quick
        # --set train.batch_size=128, then 256); lr scaled linearly.
        train=TrainConfig(epochs=15, batch_size=256, learning_rate=0.2, warmup_epochs=1),
        prune=PruneConfig(epochs=2, target_sparsity=0.5),
        qat=QatConfig(epochs=1),
        export=ExportConfig(ptq=True),  # so the report shows what QAT gains over PTQ
    ),
    # The real recipe: hours on 2 cores, resumable.
    "full": RunConfig(
        model=DenseNetConfig(name="densenet_full"),
        data=DataConfig(cutout=8),
        train=TrainConfig(epochs=150, batch_size=256, learning_rate=0.2, warmup_epochs=3),
        prune=PruneConfig(epochs=15, target_sparsity=0.5),
        qat=QatConfig(epochs=5),
    ),
}


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Converts a JSON/YAML value or a command-line string to the field's declared type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, name)
    if origin is tuple:
        inner = args[0]
        if isinstance(value, str):
            text = value.strip().strip("[]()")
            value = [v.strip().strip("'\"") for v in text.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        return tuple(_coerce(v, inner, name) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if hint in (int, float):
        return _number(value, hint, name)
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{name} must be a string, got {value!r}")
    raise ConfigError(f"{name} has unsupported type {hint}")


def _number(value: Any, kind: type, name: str) -> int | float:
    """An int (from an int or integer text) or a float (from any number or numeric text)."""
    noun = "an integer" if kind is int else "a number"
    accepted = (int,) if kind is int else (int, float)
    if isinstance(value, accepted) and not isinstance(value, bool):
        return kind(value)
    if isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            pass
    raise ConfigError(f"{name} must be {noun}, got {value!r}")


def _replace_section(section: Any, updates: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(type(section))
    names = {f.name for f in dataclasses.fields(section)}
    coerced = {}
    for key, value in updates.items():
        full = f"{section.section}.{key}"
        if key not in names:
            raise ConfigError(f"unknown config key {full!r}; known: {', '.join(sorted(names))}")
        coerced[key] = _coerce(value, hints[key], full)
    return dataclasses.replace(section, **coerced)


def apply_dict(config: RunConfig, updates: dict[str, Any]) -> RunConfig:
    """Applies nested `{section: {field: value}}` updates, refusing unknown keys."""
    if not isinstance(updates, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(updates).__name__}")
    replaced = {}
    for section, values in updates.items():
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section {section!r}; known: {', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"config section {section!r} must be a mapping, got {values!r}")
        replaced[section] = _replace_section(getattr(config, section), values)
    return dataclasses.replace(config, **replaced)


def apply_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    """Applies `section.field=value` strings, as given to `--set`."""
    updates: dict[str, dict[str, Any]] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"--set expects section.field=value, got {item!r}")
        updates.setdefault(section, {})[name] = value
    return apply_dict(config, updates)


# A comma starts a new override only where `section.field=` follows it, so that list values keep
# theirs: `deep=model.block_layers=[6,6],model.growth_rate=10` is two overrides.
_NEXT_OVERRIDE = re.compile(r",(?=\s*[A-Za-z_]\w*\.[A-Za-z_]\w*=)")


def parse_arm(text: str) -> tuple[str, list[str]]:
    """`name=sec.field=value,sec.field=value` -> (name, overrides); a bare `name` has none."""
    name, sep, rest = text.partition("=")
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ConfigError(f"--arm {text!r}: the name must be letters, digits, '-', '_' or '.'")
    return name, [item.strip() for item in _NEXT_OVERRIDE.split(rest) if item.strip()] if sep else []


def parse_arms(texts: list[str]) -> list[tuple[str, list[str]]]:
    """`parse_arm` of each `--arm`; ConfigError when two share a name."""
    arms = [parse_arm(text) for text in texts]
    if len({name for name, _ in arms}) != len(arms):
        raise ConfigError("--arm names must be distinct")
    return arms


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Reads a JSON or YAML config file into nested dicts (validated by `apply_dict`)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # yaml and json raise unrelated error types
        raise ConfigError(f"config file {path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {e}") from e
    return data or {}


DEFAULT_PRESET = "quick"  # of every CLI that takes a config: real data, about 15 minutes on 2 cores


def add_config_arguments(parser, config_file: bool = True, what: str = "the run") -> None:
    """Declares `--preset`, `--config` (unless `config_file` is False) and `--set` on an argparse parser,
    the same way for every CLI that takes a config; `config_from_args` reads them back."""
    parser.add_argument("--preset", default=DEFAULT_PRESET, help=f"{what}'s base config: one of {', '.join(PRESETS)} (default: {DEFAULT_PRESET})")
    if config_file:
        parser.add_argument("--config", help="JSON or YAML file of {section: {field: value}} applied over the preset")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="override one field; repeatable")


def config_from_args(args, extra_overrides: list[str] = ()) -> RunConfig:
    """The config `add_config_arguments` declared: preset, then file, then `--set`, then `extra_overrides`;
    ConfigError (one line, before any work) on a bad value or a file it names that does not exist."""
    config = resolve(args.preset, getattr(args, "config", None), list(args.set) + list(extra_overrides))
    check_paths(config)
    return config


def check_paths(config: RunConfig) -> None:
    """ConfigError naming the field when a file the config names does not exist.

    Called by the CLIs with the other argument checks, before TensorFlow loads, so a missing
    teacher costs one line instead of a traceback after the imports.
    """
    for teacher in config.train.teacher:
        if not Path(teacher).is_file():
            raise ConfigError(f"train.teacher names no such file: {teacher}")
    if config.train.init_from and not Path(config.train.init_from).is_file():
        raise ConfigError(f"train.init_from names no such file: {config.train.init_from}")
    if config.data.data_dir is not None and not Path(config.data.data_dir).exists():
        raise ConfigError(f"data.data_dir names no such file or folder: {config.data.data_dir}")


def resolve(preset: str, config_file: str | None = None, overrides: list[str] = ()) -> RunConfig:
    """Preset, then the config file, then `--set` overrides; raises ConfigError on any bad value."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    config = PRESETS[preset]
    if config_file:
        config = apply_dict(config, load_config_file(config_file))
    return apply_overrides(config, list(overrides))


def from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuilds a RunConfig saved with `to_dict` (e.g. a run directory's config.json)."""
    return apply_dict(RunConfig(), data)


# Fields that do not change what a run computes: a resumed run may differ in them.
NON_RESULT_FIELDS = (("train", "verbose"), ("data", "data_dir"), ("evaluate", "threads"), ("evaluate", "latency_images"))


def result_identity(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a config (as saved in config.json) that decides a run's results.

    Read through today's `RunConfig`, so a config saved before a field existed compares equal
    to one holding that field's default (whose behaviour is the old one).
    """
    try:
        config = from_dict(config).to_dict()
    except ConfigError:
        pass  # not loadable today: compared as saved, so it differs
    identity = json.loads(json.dumps(config))  # a deep copy, tuples as lists
    for section, name in NON_RESULT_FIELDS:
        identity.get(section, {}).pop(name, None)
    return identity
