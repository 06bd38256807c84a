"""Typed metrics of each stage, one name per concept.

- `weights`: conv and dense kernel entries (what pruning and the IMT score count), everywhere.
- `params`: all parameters (weights, biases, BatchNorm); only where it means that.
- `nonzero_weights`, `sparsity` (zero fraction of `weights`), `macs` (for one 32x32 image).
- `arena_bytes`: activation RAM of the tensor arena (flash is `tflite_bytes`).
- `val_accuracy` on the fixed validation split; `test_accuracy` only from the evaluate stage.

Each dataclass is written as its stage's `metrics.json` by the run directory and read back
with `from_dict`, which ignores keys it does not know (older runs) and fails on missing ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


class _Metrics:
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class TrainMetrics(_Metrics):
    val_accuracy: float  # of the kept (best-on-validation) weights
    weights: int
    params: int
    macs: int
    epochs: int
    best_epoch: int
    seconds_per_epoch: float  # median, epoch 1 left out
    train_img_per_s: float
    train_seconds: float


@dataclass(frozen=True)
class PruneMetrics(_Metrics):
    val_accuracy: float
    weights: int
    nonzero_weights: int
    macs: int
    sparsity: float  # over all kernels, the unpruned stem and classifier included
    target_sparsity: float  # per pruned layer
    sparsity_within_tolerance: bool
    sparsity_misses: list[str]
    per_layer_sparsity: dict[str, float]
    train_seconds: float
    # Structured pruning (prune.channel_fraction > 0): the trained model's weights and the
    # narrowed model's validation accuracy before its fine-tune.
    channel_fraction: float = 0.0
    weights_before_slimming: int | None = None
    slimmed_val_accuracy: float | None = None


@dataclass(frozen=True)
class QatMetrics(_Metrics):
    val_accuracy: float
    float_val_accuracy: float  # the model QAT started from
    weights: int
    nonzero_weights: int
    macs: int
    sparsity: float
    scheme: str
    calibrated_ranges: int
    train_seconds: float
    shared_ranges: int = 0  # activation ranges tied to their dense block's one range
    per_channel: bool = True  # one weight scale per output channel, else one per kernel


@dataclass(frozen=True)
class ExportMetrics(_Metrics):
    files: dict[str, int]  # file name -> bytes
    int8_sparsity: float  # zero fraction of the int8 kernels
    input_dtype: str
    input_quantization: list[float]  # (scale, zero point), read from the model
    output_dtype: str
    output_quantization: list[float]
    sparse_encoding: str = ""  # what happened to the sparse-encoded variant, if tried


@dataclass(frozen=True)
class ModelMetrics(_Metrics):
    """One .tflite file measured with LiteRT on the 10,000 test images."""

    model: str
    test_accuracy: float
    tflite_bytes: int
    gzip_bytes: int
    weights: int  # read from the .tflite graph
    nonzero_weights: int
    params: int  # weights + biases stored in the file
    macs: int
    weight_bits: int
    imt_score: float
    micronet_score: float
    latency_ms: float  # median single-image invoke, `threads` threads
    threads: int
    input_dtype: str
    input_quantization: list[float]
    ops: list[str]
    # Peak activation RAM of TFLM's greedy arena plan, and the operator at the peak (tfdense.device).
    arena_bytes: int = 0
    arena_peak_op: str = ""
    # Vela's compile for each Ethos-U NPU (`tfdense.device.VelaFigures` fields); empty for float files.
    npu: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_class_accuracy: dict[str, float] = field(default_factory=dict)
    confusion_matrix: list[list[int]] = field(default_factory=list)


@dataclass(frozen=True)
class EvaluateMetrics(_Metrics):
    """The deployed model (`model_int8.tflite`) plus every exported variant."""

    deployed: ModelMetrics
    agreement_with_keras: float  # same top-1 as the QAT Keras model, test images
    keras_weights: int  # the Keras graph's count: must equal deployed.weights
    keras_macs: int
    models: dict[str, ModelMetrics]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluateMetrics:
        return cls(
            deployed=ModelMetrics.from_dict(data["deployed"]),
            agreement_with_keras=data["agreement_with_keras"],
            keras_weights=data["keras_weights"],
            keras_macs=data["keras_macs"],
            models={k: ModelMetrics.from_dict(v) for k, v in data["models"].items()},
        )


STAGE_METRICS = {"train": TrainMetrics, "prune": PruneMetrics, "qat": QatMetrics, "export": ExportMetrics, "evaluate": EvaluateMetrics}

# The deployed model's figures at the top of RUN/metrics.json.
HEADLINE = ("test_accuracy", "tflite_bytes", "gzip_bytes", "weights", "nonzero_weights", "macs", "imt_score", "latency_ms")
