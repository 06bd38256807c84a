"""LiteRT evaluation of CIFAR-10 .tflite models, and the pipeline's `evaluate` stage.

    python -m tfdense.evaluate MODEL.tflite [MODEL.tflite ...] [--json out.json]

Runs each model with the ai-edge-litert interpreter on all 10,000 test images: accuracy,
per-class accuracy, confusion matrix, median single-thread latency, file and gzip bytes, the
TFLite ops used, and weights/MACs read from the graph. Several models are measured in the same
run and printed side by side. The input's quantization parameters are read from the model,
never assumed, so any raw-pixel CIFAR-10 model works (the MLPerf Tiny ones included).
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
from tfdense.data import CLASS_NAMES


class ModelError(ValueError):
    """A file that is not a usable CIFAR-10 TFLite classifier; the message says why."""


class TFLiteClassifier:
    """A LiteRT interpreter over one model (a path or its bytes), fed raw pixels (N, 32, 32, 3)."""

    def __init__(self, model: str | Path | bytes, threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        if isinstance(model, bytes):
            self.path, content = Path("<in memory>"), model
        else:
            self.path = Path(model)
            if not self.path.is_file():
                raise ModelError(f"{self.path}: no such file")
            content = self.path.read_bytes()
        # A FlatBuffer TFLite model carries the identifier "TFL3" at byte 4.
        if len(content) < 8 or content[4:8] != b"TFL3":
            raise ModelError(f"{self.path}: not a TFLite model (no TFL3 identifier)")
        try:
            self.interpreter = Interpreter(model_content=content, num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            if "DENSIFY" not in _op_names(content):
                raise ModelError(f"{self.path}: LiteRT cannot load it: {e}") from e
            # The default XNNPACK delegate fails to prepare sparse-encoded (DENSIFY) graphs;
            # the builtin kernels run them.
            self.interpreter = Interpreter(
                model_content=content, num_threads=threads, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            )
            self.interpreter.allocate_tensors()
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{self.path}: expected one input and one output, found {len(inputs)} and {len(outputs)}")
        self.input, self.output = inputs[0], outputs[0]
        if tuple(self.input["shape"][1:]) != (32, 32, 3):
            raise ModelError(f"{self.path}: input shape {tuple(int(d) for d in self.input['shape'])}, expected (1, 32, 32, 3)")
        if int(np.prod(self.output["shape"][1:])) != 10:
            raise ModelError(f"{self.path}: output shape {tuple(int(d) for d in self.output['shape'])}, expected 10 class scores")
        self.content = content

    def _quantize_input(self, pixels: np.ndarray) -> np.ndarray:
        dtype = self.input["dtype"]
        if dtype == np.float32:
            return pixels.astype(np.float32)
        scale, zero_point = self.input["quantization"]
        q = np.round(pixels.astype(np.float32) / scale + zero_point)
        info = np.iinfo(dtype)
        return np.clip(q, info.min, info.max).astype(dtype)

    def scores(self, pixels: np.ndarray, progress: bool = False) -> np.ndarray:
        """Raw output scores (dequantized) for each image, one invocation per image."""
        out = np.empty((len(pixels), 10), np.float32)
        scale, zero_point = self.output["quantization"]
        bar = None
        if progress and sys.stderr.isatty():
            from tf_keras.utils import Progbar

            bar = Progbar(len(pixels), unit_name="image")
        for i in range(len(pixels)):
            if bar is not None and i % 500 == 0:
                bar.update(i)
            self.interpreter.set_tensor(self.input["index"], self._quantize_input(pixels[i : i + 1]))
            self.interpreter.invoke()
            raw = self.interpreter.get_tensor(self.output["index"]).reshape(-1).astype(np.float32)
            out[i] = (raw - zero_point) * scale if scale else raw
        if bar is not None:
            bar.update(len(pixels))
        return out

    def latency_ms(self, pixels: np.ndarray) -> float:
        """Median wall time of one invocation (set input, invoke, read output), in ms."""
        times = []
        for i in range(len(pixels)):
            start = time.perf_counter()
            self.interpreter.set_tensor(self.input["index"], self._quantize_input(pixels[i : i + 1]))
            self.interpreter.invoke()
            self.interpreter.get_tensor(self.output["index"])
            times.append(time.perf_counter() - start)
        return float(np.median(times) * 1000)


def _op_names(content: bytes) -> set[str]:
    from tfdense.scores import tflite_graph_stats

    try:
        return set(tflite_graph_stats(content).ops)
    except Exception:  # an unloadable file has no op list to offer
        return set()


def evaluate_tflite(path: str | Path | bytes, x_test: np.ndarray, y_test: np.ndarray, threads: int = 1, latency_images: int = 300) -> dict[str, Any]:
    """All figures of the module docstring for one model; raises ModelError for a bad file."""
    from tfdense.scores import tflite_graph_stats

    model = TFLiteClassifier(path, threads=threads)
    predictions = model.scores(x_test, progress=True).argmax(axis=1)
    confusion = np.zeros((10, 10), np.int64)
    np.add.at(confusion, (y_test.astype(np.int64), predictions), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    stats = tflite_graph_stats(model.content)
    return {
        "model": str(model.path),
        "test_accuracy": float(np.mean(predictions == y_test)),
        "per_class_accuracy": {name: float(a) for name, a in zip(CLASS_NAMES, per_class)},
        "confusion_matrix": confusion.tolist(),
        "latency_ms": model.latency_ms(x_test[:latency_images]),
        "threads": threads,
        "tflite_bytes": len(model.content),
        "gzip_bytes": len(gzip.compress(model.content, compresslevel=9, mtime=0)),
        "ops": list(stats.ops),
        "input_dtype": np.dtype(model.input["dtype"]).name,
        "input_quantization": [float(v) for v in model.input["quantization"]],
        "weights": stats.weights,
        "nonzero_weights": stats.nonzero_weights,
        "macs": stats.macs,
        "weight_bits": stats.weight_bits,
        "predictions": predictions,
    }


def format_table(rows: list[dict[str, Any]], first: str = "model") -> str:
    """A Markdown table of models side by side, labelled by `label` or the model's file name."""
    head = f"| {first} | accuracy | .tflite bytes | gzip bytes | weights | nonzero | MACs | IMT score | latency ms |"
    lines = [head, "|" + " --- |" * 9]
    for r in rows:
        lines.append(
            f"| {r.get('label') or Path(r['model']).name} | {100 * r['test_accuracy']:.2f} % | {r['tflite_bytes']:,} | "
            f"{r['gzip_bytes']:,} | {r['weights']:,} | {r['nonzero_weights']:,} | {r['macs']:,} | "
            f"{r.get('imt_score', float('nan')):.4f} | {r['latency_ms']:.3f} |"
        )
    return "\n".join(lines)


def with_scores(result: dict[str, Any], structured_fraction: float = 0.0) -> dict[str, Any]:
    """Adds the IMT and MicroNet scores; unstructured pruning is the file's zero fraction."""
    from tfdense.scores import imt_score, micronet_score

    bits = result["weight_bits"]
    q_a = 8 if result["input_dtype"] == "int8" else 32
    p_u = 1 - result["nonzero_weights"] / max(result["weights"], 1)
    return {
        **result,
        "imt_score": imt_score(result["weights"], result["macs"], q_w=bits, q_a=q_a, p_s=structured_fraction, p_u=p_u),
        **micronet_score(result["weights"], result["nonzero_weights"], result["macs"], q_w=bits, q_a=q_a),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfdense.evaluate", description="Evaluate CIFAR-10 .tflite models with LiteRT on the 10,000 test images.")
    parser.add_argument("models", nargs="+", help=".tflite files taking raw-pixel 32x32x3 input")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    parser.add_argument("--latency-images", type=int, default=300, help="single-image invocations timed (default 300)")
    parser.add_argument("--data-dir", help="local CIFAR-10 copy (see README)")
    parser.add_argument("--json", help="also write the full results (confusion matrices included) here")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.latency_images < 1:
        print("error: --threads and --latency-images must be >= 1", file=sys.stderr)
        return 2
    for path in args.models:  # refuse any bad file before loading the data set
        try:
            TFLiteClassifier(path)
        except ModelError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    from tfdense.data import DataError, load_cifar10

    try:
        _, (x_test, y_test) = load_cifar10(args.data_dir)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    results = []
    for path in args.models:
        print(f"[tfdense] evaluating {path} on {len(x_test):,} test images ...", file=sys.stderr, flush=True)
        result = with_scores(evaluate_tflite(path, x_test, y_test, args.threads, args.latency_images))
        result.pop("predictions")
        results.append(result)
    print(format_table(results))
    if args.json:
        from tfdense.runio import write_json_atomic

        write_json_atomic(Path(args.json), results)
    return 0


def evaluate_stage(model, data, config, workdir: Path) -> tuple[Any, dict[str, Any]]:
    """Evaluates every .tflite the export stage wrote, and the int8 model's agreement with QAT.

    Returns the final figures of the deployed model (`model_int8.tflite`) plus a `models`
    table of every variant, all measured in this run on the 10,000 test images.
    """
    from tfdense.model import model_costs
    from tfdense.runio import write_json_atomic
    from tfdense.train import evaluate_predictions

    run_dir = workdir.parent
    workdir.mkdir(parents=True, exist_ok=True)
    ev = config.evaluate
    structured = 0.0  # no channel pruning yet; 2:4 sparsity saves no MACs on these kernels
    results = {}
    deployed = None
    for path in sorted(run_dir.glob("model_*.tflite")):
        print(f"[tfdense] evaluating {path.name} on {len(data.x_test):,} test images ...", file=sys.stderr, flush=True)
        result = with_scores(evaluate_tflite(path, data.x_test, data.y_test, ev.threads, ev.latency_images), structured)
        predictions = result.pop("predictions")
        if path.name == "model_int8.tflite":
            deployed = result
            keras_predictions = evaluate_predictions(model, data.x_test)
            result["agreement_with_qat_keras"] = float(np.mean(keras_predictions == predictions))
        results[path.name] = result
    if deployed is None:
        raise FileNotFoundError(f"{run_dir / 'model_int8.tflite'} is missing: run the export stage first")
    keras_costs = model_costs(model)
    metrics = {
        "test_accuracy": deployed["test_accuracy"],
        "tflite_bytes": deployed["tflite_bytes"],
        "gzip_bytes": deployed["gzip_bytes"],
        # IMT's w: conv/dense kernel weights as stored in the int8 file.
        "params": deployed["weights"],
        "nonzero_params": deployed["nonzero_weights"],
        "macs": deployed["macs"],
        "imt_score": deployed["imt_score"],
        "micronet_score": deployed["micronet_score"],
        "latency_ms": deployed["latency_ms"],
        "agreement_with_qat_keras": deployed["agreement_with_qat_keras"],
        # The same counts from the Keras graph: a mismatch means one of the counters is wrong.
        "keras_weights": keras_costs["weights"],
        "keras_macs": keras_costs["macs"],
        "per_class_accuracy": deployed["per_class_accuracy"],
        "models": results,
    }
    write_json_atomic(workdir / "metrics.json", metrics)
    return model, metrics


if __name__ == "__main__":
    sys.exit(main())
