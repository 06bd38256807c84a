"""Where the time of a .tflite file goes, op by op, as LiteRT runs it on this CPU.

    python -m tfdense latency MODEL.tflite [MODEL.tflite ...] [--peers mlperf-tiny] [--rounds 5]

LiteRT's Python API has no per-op profiler, and the XNNPACK delegate runs the whole graph as
one node. So `op_latency` times *prefixes* of the graph instead: model k is the first k ops of
the file, with every tensor they produce and none of them consume made an output (so the
delegate cannot drop a branch the next op would have read). All prefixes are timed in
alternation, like `litert.interleaved_latency_ms`, and an op's time is the difference between
its prefix and the one before. Differences of medians are noisy at the microsecond scale (a
small op can come out slightly negative); the column sums to the whole model's time.

MACs per op are read from the graph as `litert.graph_stats` counts them, so a row's MAC/s
shows what a MAC count misses: an int8 conv with 3 input channels or an odd number of output
channels runs far below the rate of a wide one, and copies (concatenation, requantization,
pooling) cost time with no MACs at all.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

from tfdense.litert import ModelError, TFLiteModel, interleaved_latency_ms, op_macs
from tfdense.peers import PEER_SETS, peer_files
from tfdense.tables import markdown_table

_OP_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}


@dataclass(frozen=True)
class OpTime:
    """One op of the graph, in execution order, and the time it adds to an invocation."""

    index: int
    op: str
    output_shape: tuple[int, ...]
    macs: int
    ms: float


class Prefix(NamedTuple):
    """The model made of a graph's ops up to and including `op`."""

    op: str
    output_shape: tuple[int, ...]
    macs: int
    content: bytes


def _op_name(model, op) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    # Codes above 127 live in builtinCode only; older files keep the small ones in the other field.
    return _OP_NAMES.get(max(code.builtinCode, code.deprecatedBuiltinCode), f"op{code.builtinCode}")


def graph_prefixes(content: bytes) -> list[Prefix]:
    """One prefix model per op, in execution order; the last is the whole graph."""
    base = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    if len(base.subgraphs) != 1:
        raise ModelError(f"expected one subgraph, found {len(base.subgraphs)}")
    graph = base.subgraphs[0]
    operators = list(graph.operators)
    if any(_op_name(base, op) == "DENSIFY" for op in operators):
        raise ModelError("sparse-encoded (DENSIFY) graphs run without XNNPACK; op times would not be the deployed ones")
    prefixes = []
    for k, op in enumerate(operators, start=1):
        produced = [t for o in operators[:k] for t in o.outputs]
        consumed = {t for o in operators[:k] for t in o.inputs}
        graph.operators = operators[:k]
        # The op's own output first: it is the one read after each invocation, as a
        # classifier's scores are, so the last prefix is timed exactly like the whole model.
        last = op.outputs[0]
        graph.outputs = np.array([last] + [t for t in produced if t not in consumed and t != last], dtype=np.int32)
        name = _op_name(base, op)
        shape = tuple(int(d) for d in graph.tensors[last].shape)
        filter_shape = graph.tensors[op.inputs[1]].shape if len(op.inputs) > 1 else ()
        prefixes.append(Prefix(name, shape, op_macs(name, filter_shape, shape), bytes(flatbuffer_utils.convert_object_to_bytearray(base))))
    return prefixes


def op_latency(content: bytes, pixels: np.ndarray, rounds: int = 5) -> list[OpTime]:
    """Each op's share of one single-thread invocation on `pixels` (N, 32, 32, 3), in ms."""
    prefixes = graph_prefixes(content)
    totals = interleaved_latency_ms([TFLiteModel(p.content) for p in prefixes], pixels, rounds)
    before = [0.0, *totals[:-1]]
    return [OpTime(i, p.op, p.output_shape, p.macs, t - b) for i, (p, t, b) in enumerate(zip(prefixes, totals, before))]


def by_op_type(times: list[OpTime]) -> dict[str, tuple[int, int, float]]:
    """Op name -> (count, MACs, ms), slowest first."""
    groups: dict[str, tuple[int, int, float]] = {}
    for t in times:
        count, macs, ms = groups.get(t.op, (0, 0, 0.0))
        groups[t.op] = (count + 1, macs + t.macs, ms + t.ms)
    return dict(sorted(groups.items(), key=lambda kv: -kv[1][2]))


def _rate(macs: int, ms: float) -> str:
    return f"{macs / ms / 1e6:.1f}" if macs and ms > 0 else ""


def format_op_times(name: str, times: list[OpTime]) -> str:
    """Markdown: every op, then the totals per op type."""
    total = sum(t.ms for t in times)
    ops = markdown_table(("#", "op", "output", "MACs", "µs", "share", "GMAC/s"),
                         [(t.index, t.op, "x".join(str(d) for d in t.output_shape[1:]), f"{t.macs:,}", f"{t.ms * 1000:.1f}", f"{100 * t.ms / total:.1f} %",
                           _rate(t.macs, t.ms)) for t in times])
    types = markdown_table(("op type", "count", "MACs", "µs", "share", "GMAC/s"),
                           [(op, count, f"{macs:,}", f"{ms * 1000:.1f}", f"{100 * ms / total:.1f} %", _rate(macs, ms)) for op, (count, macs, ms) in by_op_type(times).items()])
    return f"### {name}: {total:.3f} ms, {sum(t.macs for t in times) / 1e6:.2f}M MACs\n\n{ops}\n\n{types}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfdense latency", description="Where the single-thread LiteRT time of .tflite files goes, op by op.")
    parser.add_argument("models", nargs="*", help=".tflite files taking 32x32x3 input")
    parser.add_argument("--peers", action="append", default=[], choices=sorted(PEER_SETS), help="also profile a peer set shipped with tfdense")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of 300 invocations per prefix (default %(default)s)")
    args = parser.parse_args(argv)
    paths = [Path(m) for m in args.models] + [p for name in args.peers for p in peer_files(name)]
    if not paths:
        parser.error("give at least one .tflite file or --peers")
    # Fixed pixels: op times do not depend on the image, and a user's run compares to the README's.
    pixels = np.random.default_rng(0).integers(0, 256, (300, 32, 32, 3)).astype(np.uint8)
    for path in paths:
        try:
            content = path.read_bytes()
            if content[4:8] != b"TFL3":
                raise ModelError("not a TFLite model (no TFL3 identifier)")
            print(f"[tfdense] {path.name}: timing every prefix of its graph, {args.rounds} rounds", file=sys.stderr)
            times = op_latency(content, pixels, args.rounds)
        except (OSError, ModelError) as e:
            print(f"error: {path}: {e}", file=sys.stderr)
            return 2
        print(format_op_times(path.name, times) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
