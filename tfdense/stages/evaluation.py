"""The evaluate stage: every exported .tflite on the 10,000 test images, with LiteRT.

The only stage that reads the test set. Measures each `model_*.tflite` of the run (accuracy,
per-class accuracy, confusion matrix, latency, bytes, weights and MACs read from the graph,
scores) and how often the deployed int8 model agrees with the QAT Keras model it came from.
"""

from __future__ import annotations

import sys

import numpy as np

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
import tf_keras as keras

from tfdense import fitting
from tfdense.config import RunConfig
from tfdense.costs import model_costs
from tfdense.data import Cifar, load_test
from tfdense.litert import evaluate_tflite
from tfdense.metrics import EvaluateMetrics
from tfdense.rundir import RunDir

NAME = "evaluate"
DEPLOYED = "model_int8.tflite"


def run(model: keras.Model, data: Cifar, config: RunConfig, run_dir: RunDir) -> tuple[keras.Model, EvaluateMetrics]:
    """Evaluates every .tflite the export stage wrote; `model` is the QAT Keras model."""
    run_dir.require(run_dir.export_file(DEPLOYED), "export")
    x_test, y_test = load_test(config.data)
    ev = config.evaluate
    models = {}
    agreement = float("nan")
    for path in run_dir.tflite_files():
        print(f"[tfdense] evaluating {path.name} on {len(x_test):,} test images ...", file=sys.stderr, flush=True)
        # Channel pruning shows in the graph's own weights and MACs (the IMT score's p_s in effect);
        # 2:4 sparsity saves no MACs on these kernels.
        result, predictions = evaluate_tflite(path, x_test, y_test, ev.threads, ev.latency_images)
        models[path.name] = result
        if path.name == DEPLOYED:
            agreement = float(np.mean(fitting.predict_classes(model, x_test) == predictions))
    costs = model_costs(model)
    metrics = EvaluateMetrics(
        deployed=models[DEPLOYED],
        agreement_with_keras=agreement,
        keras_weights=costs.weights,
        keras_macs=costs.macs,
        models=models,
    )
    run_dir.write_stage_metrics(NAME, metrics.to_dict())
    return model, metrics
