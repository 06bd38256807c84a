"""TFLite export: the deployable full-int8 model and a float32 reference.

Full int8 means int8 input and output and only int8 kernels inside. The input takes raw RGB
pixels as q = pixel - 128 (scale 1, zero point -128), the convention of the MLPerf Tiny models;
the converter derives it from the QAT input range, which is pinned to [0, 255] here rather than
learned, so the convention holds whatever pixels the calibration batches held.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras


def representative_images(x: np.ndarray, count: int = 200, seed: int = 0) -> Callable[[], Iterator[list[np.ndarray]]]:
    """Calibration batches of training images (never test images) for post-training quantization."""
    idx = np.random.default_rng(seed).choice(len(x), size=min(count, len(x)), replace=False)

    def generate():
        for i in idx:
            yield [x[i : i + 1].astype(np.float32)]

    return generate


def to_tflite(model: keras.Model, int8: bool, representative: Callable | None = None) -> bytes:
    """Converts a Keras (float or QAT) model to TFLite: full int8 when `int8`, else float32.

    Raises `ValueError` when an int8 conversion leaves float tensors at the input or output.
    """
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        if representative is not None:
            converter.representative_dataset = representative
    return converter.convert()


def write_bytes_atomic(path: Path, content: bytes) -> None:
    """Writes through a temp file + rename: an interrupted export leaves no half-written model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
