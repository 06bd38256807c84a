"""`python -m tfdense evaluate MODEL.tflite [MODEL.tflite ...] [--json out.json]`

Runs each model with the ai-edge-litert interpreter on all 10,000 test images: accuracy,
per-class accuracy, confusion matrix, median single-thread latency, file and gzip bytes, the
TFLite ops used, weights/MACs read from the graph, and the efficiency scores. Several models
are measured in the same run and printed side by side. The input's quantization parameters
are read from each model, never assumed, so any raw-pixel CIFAR-10 model works (the MLPerf
Tiny ones included).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tfdense.data import DataError, load_cifar10
from tfdense.litert import ModelError, TFLiteClassifier, evaluate_tflite, format_table
from tfdense.metrics import ModelMetrics
from tfdense.peers import PEER_SETS, peer_files
from tfdense.files import write_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfdense evaluate", description="Evaluate CIFAR-10 .tflite models with LiteRT on the 10,000 test images.")
    parser.add_argument("models", nargs="*", help=".tflite files taking raw-pixel 32x32x3 input")
    parser.add_argument("--peers", action="append", default=[], choices=sorted(PEER_SETS), help="also evaluate a peer set shipped with tfdense")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    parser.add_argument("--latency-images", type=int, default=300, help="single-image invocations timed (default 300)")
    parser.add_argument("--data-dir", help="local CIFAR-10 copy (see README)")
    parser.add_argument("--json", help="also write the full results (confusion matrices included) here")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.latency_images < 1:
        print("error: --threads and --latency-images must be >= 1", file=sys.stderr)
        return 2
    args.models += [str(p) for name in args.peers for p in peer_files(name)]
    if not args.models:
        print("error: name at least one .tflite file or --peers SET", file=sys.stderr)
        return 2
    for path in args.models:  # refuse any bad file before loading the data set
        try:
            TFLiteClassifier(path)
        except ModelError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    try:
        _, (x_test, y_test) = load_cifar10(args.data_dir)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    results: list[tuple[str, ModelMetrics]] = []
    for path in args.models:
        print(f"[tfdense] evaluating {path} on {len(x_test):,} test images ...", file=sys.stderr, flush=True)
        metrics, _ = evaluate_tflite(path, x_test, y_test, args.threads, args.latency_images)
        results.append((Path(path).name, metrics))
    print(format_table(results))
    if args.json:
        write_json(Path(args.json), [m.to_dict() for _, m in results])
    return 0


if __name__ == "__main__":
    sys.exit(main())
