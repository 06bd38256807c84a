"""The export stage: the deployable full-int8 TFLite model and its companions.

Full int8 means int8 input and output and only int8 kernels inside. The input takes raw RGB
pixels as q = pixel - 128 (scale 1, zero point -128), the convention of the MLPerf Tiny models.
The converter derives it from the QAT model's input quantizer, which sits on the [0, 1] output
of the in-model pixel scale (`conversion.PixelScaleQuantizeConfig`); it is checked before any file is
written, so a wrong convention never reaches disk.
"""

from __future__ import annotations

import numpy as np

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
import tf_keras as keras

from tfdense.config import RunConfig
from tfdense.conversion import c_array, converter_variant, representative_images, stripped_if_identical, to_tflite
from tfdense.costs import weight_zero_fraction
from tfdense.data import CLASS_NAMES, Cifar
from tfdense.litert import TFLiteClassifier, graph_stats
from tfdense.metrics import ExportMetrics
from tfdense.files import write_atomic
from tfdense.rundir import RunDir
from tfdense.stages import load_keras_model

NAME = "export"
PIXEL_INPUT_QUANTIZATION = (1.0, -128.0)  # q = pixel - 128
UINT8_INPUT_QUANTIZATION = (1.0, 0.0)  # q = pixel


def _input_output_quantization(content: bytes) -> tuple[TFLiteClassifier, list[float], list[float]]:
    model = TFLiteClassifier(content)
    return model, [float(v) for v in model.input["quantization"]], [float(v) for v in model.output["quantization"]]


def run(model: keras.Model, data: Cifar, config: RunConfig, run_dir: RunDir) -> tuple[keras.Model, ExportMetrics]:
    """Writes the deployable `model_int8.tflite` (from the QAT model) and its companions.

    Into the run directory: `model_int8.tflite`, `model_uint8.tflite` (the same graph with
    uint8 input and output, for MediaPipe and other uint8 runtimes), `model_float.tflite` (the float model QAT
    started from), `model_unpruned_float.tflite` (when pruned), `labels.txt`,
    `model_int8.cc/.h`; on request `model_ptq_int8.tflite`, `model_dynamic_range.tflite`,
    `model_float16.tflite`; `model_int8_sparse.tflite` when the run pruned and sparse encoding
    pays off.
    """
    export = config.export
    representative = representative_images(data.x_train, export.calibration_images, seed=config.train.seed)
    int8 = to_tflite(model, int8=True, representative=representative)
    if export.strip:
        int8 = stripped_if_identical(int8, data.x_val[:500])
    deployed, input_q, output_q = _input_output_quantization(int8)
    if tuple(input_q) != PIXEL_INPUT_QUANTIZATION:
        raise ValueError(f"int8 input quantization is {input_q}, expected scale 1, zero point -128 (q = pixel - 128); nothing written")
    written = {"model_int8.tflite": int8}
    uint8 = to_tflite(model, int8=True, representative=representative, io_type="uint8")
    if export.strip:
        uint8 = stripped_if_identical(uint8, data.x_val[:500])
    _check_uint8_twin(uint8, int8, data.x_val[:500])
    written["model_uint8.tflite"] = uint8
    source = run_dir.float_source()
    float_model = load_keras_model(run_dir.require(run_dir.model(source), source))
    written["model_float.tflite"] = to_tflite(float_model, int8=False)
    if source == "prune":
        # The unpruned float model too, so the report can show what pruning did.
        trained = load_keras_model(run_dir.require(run_dir.model("train"), "train"))
        written["model_unpruned_float.tflite"] = to_tflite(trained, int8=False)
    if export.ptq:
        ptq = to_tflite(float_model, int8=True, representative=representative)
        written["model_ptq_int8.tflite"] = stripped_if_identical(ptq, data.x_val[:500]) if export.strip else ptq
    if export.dynamic_range:
        written["model_dynamic_range.tflite"] = converter_variant(float_model, "dynamic_range")
    if export.float16:
        written["model_float16.tflite"] = converter_variant(float_model, "float16")

    note = ""
    if export.sparse_encoding and source == "prune" and config.prune.target_sparsity == 0:
        note = "not tried: prune.target_sparsity is 0 (no weights were pruned to zero)"
    elif export.sparse_encoding and source == "prune":
        sparsity = weight_zero_fraction(model)
        sparse = to_tflite(model, int8=True, representative=representative, sparse=True)
        if export.strip:
            sparse = stripped_if_identical(sparse, data.x_val[:500])
        if len(sparse) >= len(int8):
            note = f"not kept: {len(sparse):,} bytes >= dense {len(int8):,} at {sparsity:.0%} sparsity"
        else:
            agreement = float(np.mean(_predict(int8, data.x_val) == _predict(sparse, data.x_val)))
            if agreement < 0.999:
                note = f"not kept: smaller ({len(sparse):,} bytes) but agrees with dense on only {agreement:.2%} of val"
            else:
                written["model_int8_sparse.tflite"] = sparse
                note = f"kept: {len(sparse):,} vs {len(int8):,} bytes, {agreement:.2%} val agreement"

    for name, content in written.items():
        write_atomic(run_dir.export_file(name), content)
    source_c, header = c_array(int8, "model_int8")
    write_atomic(run_dir.export_file("model_int8.cc"), source_c)
    write_atomic(run_dir.export_file("model_int8.h"), header)
    write_atomic(run_dir.export_file("labels.txt"), "\n".join(CLASS_NAMES) + "\n")

    stats = graph_stats(int8)
    metrics = ExportMetrics(
        files={name: len(content) for name, content in written.items()},
        int8_sparsity=1 - stats.nonzero_weights / stats.weights,
        input_dtype=np.dtype(deployed.input["dtype"]).name,
        input_quantization=input_q,
        output_dtype=np.dtype(deployed.output["dtype"]).name,
        output_quantization=output_q,
        sparse_encoding=note,
    )
    run_dir.write_stage_metrics(NAME, metrics.to_dict())
    return model, metrics


def _check_uint8_twin(uint8: bytes, int8: bytes, images: np.ndarray) -> None:
    """The uint8-in/out model must take raw pixels and score exactly as the int8 one does."""
    twin = TFLiteClassifier(uint8)
    if tuple(float(v) for v in twin.input["quantization"]) != UINT8_INPUT_QUANTIZATION:
        raise ValueError(f"uint8 input quantization is {twin.input['quantization']}, expected scale 1, zero point 0 (q = pixel)")
    if not np.allclose(twin.scores(images), TFLiteClassifier(int8).scores(images), atol=1e-6):
        raise ValueError("the uint8 model's scores differ from the int8 model's")


def _predict(content: bytes, x: np.ndarray) -> np.ndarray:
    return TFLiteClassifier(content).scores(x).argmax(axis=1)
