"""LiteRT (ai-edge-litert) on CIFAR-10 .tflite files: a classifier, graph counts, evaluation.

`TFLiteClassifier` feeds raw pixels to any 32x32x3 classifier, reading the input's quantization
parameters from the model (never assuming them). `graph_stats` reads weights, nonzero weights
and MACs back from the graph's CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED ops.
`evaluate_tflite` measures one file on the test images: accuracy, per-class accuracy,
confusion matrix, median latency, bytes, scores.
"""

from __future__ import annotations

import gzip
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
from tf_keras.utils import Progbar

from tfdense.data import CLASS_NAMES, NUM_CLASSES
from tfdense.device import device_figures
from tfdense.metrics import ModelMetrics
from tfdense.scores import imt_score, micronet_score


class ModelError(ValueError):
    """A file that is not a usable CIFAR-10 TFLite classifier; the message says why."""


class TFLiteModel:
    """A LiteRT interpreter over one model (a path or its bytes) taking 32x32x3 images.

    The first output is the one read after each invocation; `TFLiteClassifier` adds the
    checks and scores of a CIFAR-10 classifier, `tfdense.latency` times graph prefixes.
    """

    def __init__(self, model: str | Path | bytes, threads: int = 1):
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
        if len(inputs) != 1:
            raise ModelError(f"{self.path}: expected one input, found {len(inputs)}")
        self.input, self.output, self.outputs = inputs[0], outputs[0], outputs
        if tuple(self.input["shape"][1:]) != (32, 32, 3):
            raise ModelError(f"{self.path}: input shape {tuple(int(d) for d in self.input['shape'])}, expected (1, 32, 32, 3)")
        self.content = content

    def _quantize_input(self, pixels: np.ndarray) -> np.ndarray:
        dtype = self.input["dtype"]
        if dtype == np.float32:
            return pixels.astype(np.float32)
        scale, zero_point = self.input["quantization"]
        q = np.round(pixels.astype(np.float32) / scale + zero_point)
        info = np.iinfo(dtype)
        return np.clip(q, info.min, info.max).astype(dtype)

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


class TFLiteClassifier(TFLiteModel):
    """A CIFAR-10 classifier: one input of raw pixels (N, 32, 32, 3), one output of 10 scores."""

    def __init__(self, model: str | Path | bytes, threads: int = 1):
        super().__init__(model, threads)
        if len(self.outputs) != 1:
            raise ModelError(f"{self.path}: expected one input and one output, found 1 and {len(self.outputs)}")
        if int(np.prod(self.output["shape"][1:])) != NUM_CLASSES:
            raise ModelError(f"{self.path}: output shape {tuple(int(d) for d in self.output['shape'])}, expected {NUM_CLASSES} class scores")

    def scores(self, pixels: np.ndarray, progress: bool = False) -> np.ndarray:
        """Raw output scores (dequantized) for each image, one invocation per image."""
        out = np.empty((len(pixels), NUM_CLASSES), np.float32)
        scale, zero_point = self.output["quantization"]
        bar = None
        if progress and sys.stderr.isatty():
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


def interleaved_latency_ms(models: Sequence[TFLiteModel], pixels: np.ndarray, rounds: int = 5) -> list[float]:
    """Median single-image latency of several models, measured in alternation in one process.

    Models timed one after another meet different machines: a job that starts, a core that
    changes clock, the first model paying for a cold cache. Here every model first runs a
    warm-up, then each round times every model on the same images, in an order that rotates
    from round to round; a model's figure is the median of its round medians, so slow spells
    fall on all the models alike.
    """
    for model in models:
        model.latency_ms(pixels[:20])
    per_round: list[list[float]] = [[] for _ in models]
    for r in range(rounds):
        for i in [(r + k) % len(models) for k in range(len(models))]:
            per_round[i].append(models[i].latency_ms(pixels))
    return [float(np.median(times)) for times in per_round]


def latencies_beside_peers(contents: list[bytes], rounds: int = 15, images: int = 300) -> tuple[list[float], list[float]]:
    """Single-thread latencies (ms) of `contents` and of the MLPerf Tiny peers (ResNet-8, then the
    large ResNet), all timed in the same interleaved rounds on random pixels: a ratio to a peer
    carries from one machine to another better than milliseconds do."""
    from tfdense.peers import peer_files

    pixels = np.random.default_rng(0).integers(0, 256, (images, 32, 32, 3)).astype(np.uint8)
    peers = [path.read_bytes() for path in peer_files("mlperf-tiny")]
    latencies = interleaved_latency_ms([TFLiteClassifier(content) for content in list(contents) + peers], pixels, rounds)
    return latencies[: len(contents)], latencies[len(contents) :]


def _op_names(content: bytes) -> set[str]:
    try:
        return set(graph_stats(content).ops)
    except Exception:  # an unloadable file has no op list to offer
        return set()


MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def op_macs(op_name: str, filter_shape: Sequence[int], output_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one op for one image (0 for ops outside `MAC_OPS`)."""
    if op_name not in MAC_OPS:
        return 0
    size = int(np.prod(filter_shape))
    if op_name == "FULLY_CONNECTED":
        return size * int(np.prod(output_shape[:-1]))
    # Each filter entry is used once per output position; for depthwise the filter's last axis
    # already spans the output channels.
    return size * int(output_shape[1] * output_shape[2])


@dataclass(frozen=True)
class GraphStats:
    """Counts read from a .tflite file's CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED ops."""

    weights: int
    nonzero_weights: int
    biases: int  # bias entries of the same ops: weights + biases are all the file's parameters
    macs: int
    ops: tuple[str, ...]
    weight_bits: int


def graph_stats(model: str | Path | bytes) -> GraphStats:
    """Weights, nonzero weights and MACs for one image, from the TFLite graph itself.

    Filters are read as stored: for int8 (symmetric, zero point 0) a stored 0 is a real 0.
    Filters of a sparse-encoded file are read after one invocation has densified them.
    """
    kwargs = {"model_content": model} if isinstance(model, bytes) else {"model_path": str(model)}
    # Without the default XNNPACK delegate the op list is the graph's own (not one DELEGATE node).
    interpreter = Interpreter(experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES, **kwargs)
    interpreter.allocate_tensors()
    if any(op["op_name"] == "DENSIFY" for op in interpreter._get_ops_details()):
        # Densified filters exist only once the graph has run.
        (inp,) = interpreter.get_input_details()
        interpreter.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
        interpreter.invoke()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    weights = nonzero = biases = macs = 0
    bits = 32
    ops = []
    for op in interpreter._get_ops_details():
        name = op["op_name"]
        ops.append(name)
        if name not in MAC_OPS:
            continue
        filt = tensors[op["inputs"][1]]
        out_shape = tensors[op["outputs"][0]]["shape"]
        size = int(np.prod(filt["shape"]))
        try:
            values = interpreter.get_tensor(filt["index"])
            nz = int(np.count_nonzero(values))
        except ValueError:
            nz = size
        bits = min(bits, np.dtype(filt["dtype"]).itemsize * 8)
        weights += size
        nonzero += nz
        if len(op["inputs"]) > 2 and op["inputs"][2] >= 0:
            biases += int(np.prod(tensors[op["inputs"][2]]["shape"]))
        macs += op_macs(name, filt["shape"], out_shape)
    return GraphStats(weights=weights, nonzero_weights=nonzero, biases=biases, macs=macs, ops=tuple(sorted(set(ops))), weight_bits=bits)


def kernel_scale_counts(model: bytes) -> list[int]:
    """How many weight scales each conv, depthwise and fully connected filter of an int8 file
    has, in graph order: its output channels when quantized per channel, else 1."""
    interpreter = Interpreter(model_content=model, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    return [len(tensors[op["inputs"][1]]["quantization_parameters"]["scales"])
            for op in interpreter._get_ops_details() if op["op_name"] in MAC_OPS]


def evaluate_tflite(
    path: str | Path | bytes, x_test: np.ndarray, y_test: np.ndarray, threads: int = 1, latency_images: int = 300
) -> tuple[ModelMetrics, np.ndarray]:
    """One model on the test images: its `ModelMetrics` (with its arena RAM and Vela figures,
    `tfdense.device`) and its top-1 predictions.

    Raises ModelError for a file that is not a usable classifier. The IMT score's p_u is read
    from the file; its p_s (channels removed) is already in the slimmed graph's weights and MACs.
    """
    model = TFLiteClassifier(path, threads=threads)
    predictions = model.scores(x_test, progress=True).argmax(axis=1)
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    np.add.at(confusion, (y_test.astype(np.int64), predictions), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    stats = graph_stats(model.content)
    q_a = 8 if np.dtype(model.input["dtype"]).itemsize == 1 else 32
    p_u = 1 - stats.nonzero_weights / max(stats.weights, 1)
    device = device_figures(model.content)
    metrics = ModelMetrics(
        model=str(model.path),
        test_accuracy=float(np.mean(predictions == y_test)),
        tflite_bytes=len(model.content),
        gzip_bytes=len(gzip.compress(model.content, compresslevel=9, mtime=0)),
        weights=stats.weights,
        nonzero_weights=stats.nonzero_weights,
        params=stats.weights + stats.biases,
        macs=stats.macs,
        weight_bits=stats.weight_bits,
        imt_score=imt_score(stats.weights, stats.macs, q_w=stats.weight_bits, q_a=q_a, p_s=0.0, p_u=p_u),
        micronet_score=micronet_score(stats.weights, stats.nonzero_weights, stats.macs, q_w=stats.weight_bits, q_a=q_a)["micronet_score"],
        latency_ms=model.latency_ms(x_test[:latency_images]),
        threads=threads,
        input_dtype=np.dtype(model.input["dtype"]).name,
        input_quantization=[float(v) for v in model.input["quantization"]],
        ops=list(stats.ops),
        **device.to_metrics(),
        per_class_accuracy={name: float(a) for name, a in zip(CLASS_NAMES, per_class)},
        confusion_matrix=confusion.tolist(),
    )
    return metrics, predictions


def format_table(rows: list[tuple[str, ModelMetrics]], first: str = "model") -> str:
    """A Markdown table of models side by side, one `(label, metrics)` per row."""
    head = f"| {first} | accuracy | .tflite bytes | gzip bytes | weights | nonzero | MACs | IMT score | latency ms |"
    lines = [head, "|" + " --- |" * 9]
    for label, r in rows:
        lines.append(
            f"| {label} | {100 * r.test_accuracy:.2f} % | {r.tflite_bytes:,} | {r.gzip_bytes:,} | {r.weights:,} | "
            f"{r.nonzero_weights:,} | {r.macs:,} | {r.imt_score:.4f} | {r.latency_ms:.3f} |"
        )
    return "\n".join(lines)
