"""Where the bytes of a .tflite file go, how to drop the ones a device does not need, and its RAM.

    python -m tfdense footprint MODEL.tflite [MODEL.tflite ...] [--strip OUT.tflite]
    python -m tfdense footprint --device exports/*int8*.tflite

`--device` prints, for each int8 file and the MLPerf Tiny peers, flash (the file's bytes) and its
gzip, the tensor arena's activation RAM as TensorFlow Lite Micro's greedy planner would lay it
out (and the operator at the peak), and Arm Vela's compile for an Ethos-U55-128 and an
Ethos-U65-256 at Vela's default system configs: SRAM, off-chip memory, operators left on the CPU,
estimated inference time (`tfdense.device`).

`breakdown(content)` parses the FlatBuffer (LiteRT's generated schema: no TensorFlow import) and assigns
every byte to one part: conv/dense weights, biases, other constant buffers, quantization
parameters (scales, zero points, min/max), tensor names and other strings, signatures, metadata,
and the FlatBuffer structure itself (tables, vtables, offsets, padding: the remainder).

`--strip` writes the file as `tfdense.conversion.strip` rebuilds it: without tensor names, the description, subgraph names,
signature definitions and the activation min/max that int8 kernels never read (TensorFlow's
`flatbuffer_utils.strip_strings`, plus the min/max). What a user loses: tensor names in
visualizers and debuggers, and the signature runner (`get_signature_runner`); input/output
indices, shapes, dtypes and quantization are untouched, and the stripped model must produce
bit-identical outputs (`tfdense.stages.export` checks it).
"""

from __future__ import annotations

import argparse
import gzip
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from ai_edge_litert import schema_py_generated as schema

from tfdense.device import ACCELERATORS, DeviceError, builtin_codes, check_int8_classifier, device_figures, read_model
from tfdense.tables import markdown_table

# Builtin op codes whose input 1 is a filter and input 2 a bias.
_FILTER_OPS = {schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.DEPTHWISE_CONV_2D, schema.BuiltinOperator.FULLY_CONNECTED}


def _string_bytes(text: bytes | str | None) -> int:
    # A FlatBuffer string: 4-byte length, the bytes, a NUL, padded to 4.
    if text is None:
        return 0
    n = len(text) + 5
    return n + (-n % 4)


def _vector_bytes(values, item: int) -> int:
    return 0 if values is None else 4 + item * len(values)


@dataclass(frozen=True)
class Breakdown:
    """Bytes of one .tflite file by part; `structure` is whatever the others do not explain."""

    weights: int  # conv/dense filters
    biases: int
    other_buffers: int  # shape constants, non-filter tensors
    quantization: int  # scales, zero points, min/max of every tensor
    tensor_names: int
    signatures: int  # signature definitions (names and tensor maps)
    metadata: int  # metadata buffers (runtime version, conversion metadata) and their names
    structure: int  # FlatBuffer tables, vtables, offsets, op codes, padding
    total: int

    def rows(self) -> list[tuple[str, int]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self) if f.name != "total"]


def breakdown(content: bytes) -> Breakdown:
    model = read_model(content)
    codes = builtin_codes(model)
    metadata_buffers = {m.buffer for m in (model.metadata or [])}
    filter_buffers, bias_buffers = set(), set()
    quantization = names = 0
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            if codes[op.opcodeIndex] in _FILTER_OPS:
                filter_buffers.add(subgraph.tensors[op.inputs[1]].buffer)
                if len(op.inputs) > 2 and op.inputs[2] >= 0:
                    bias_buffers.add(subgraph.tensors[op.inputs[2]].buffer)
        for tensor in subgraph.tensors:
            names += _string_bytes(tensor.name)
            q = tensor.quantization
            if q is not None:
                quantization += _vector_bytes(q.scale, 4) + _vector_bytes(q.zeroPoint, 8)
                quantization += _vector_bytes(q.min, 4) + _vector_bytes(q.max, 4)
        names += _string_bytes(subgraph.name)
    names += _string_bytes(model.description)
    sizes = {i: (0 if b.data is None else len(b.data)) for i, b in enumerate(model.buffers)}
    weights = sum(sizes[i] for i in filter_buffers)
    biases = sum(sizes[i] for i in bias_buffers - filter_buffers)
    metadata = sum(sizes[i] for i in metadata_buffers) + sum(_string_bytes(m.name) for m in (model.metadata or []))
    other = sum(sizes.values()) - weights - biases - sum(sizes[i] for i in metadata_buffers)
    signatures = 0
    for sig in model.signatureDefs or []:
        signatures += _string_bytes(sig.signatureKey)
        for t in (sig.inputs or []) + (sig.outputs or []):
            signatures += _string_bytes(t.name) + 12  # the TensorMap table: name offset, index, vtable
    explained = weights + biases + other + quantization + names + signatures + metadata
    return Breakdown(
        weights=weights,
        biases=biases,
        other_buffers=other,
        quantization=quantization,
        tensor_names=names,
        signatures=signatures,
        metadata=metadata,
        structure=len(content) - explained,
        total=len(content),
    )


def format_breakdown(named: list[tuple[str, Breakdown]]) -> str:
    """A Markdown table, one column per file, bytes and share of each part."""
    head = "| part | " + " | ".join(name for name, _ in named) + " |"
    lines = [head, "|" + " --- |" * (len(named) + 1)]
    for i, (part, _) in enumerate(named[0][1].rows()):
        cells = []
        for _, b in named:
            value = b.rows()[i][1]
            cells.append(f"{value:,} ({100 * value / b.total:.1f} %)")
        lines.append(f"| {part.replace('_', ' ')} | " + " | ".join(cells) + " |")
    lines.append("| **total** | " + " | ".join(f"**{b.total:,}**" for _, b in named) + " |")
    return "\n".join(lines)


def device_table(named: list[tuple[str, bytes]]) -> str:
    """Flash, gzip, arena RAM and Vela's figures of each (name, int8 .tflite content), one row each."""
    header = ["model", "flash bytes", "gzip bytes", "arena RAM bytes", "arena peak at"]
    for a in ACCELERATORS:
        header += [f"{a} SRAM bytes", f"{a} off-chip bytes", f"{a} ms (Vela)"]
    header.append("ops on CPU")
    rows = []
    for name, content in named:
        figures = device_figures(content)
        row = [name, f"{len(content):,}", f"{len(gzip.compress(content, compresslevel=9, mtime=0)):,}", f"{figures.arena_bytes:,}", figures.arena_peak_op]
        for a in ACCELERATORS:
            npu = figures.npu[a]
            row += [f"{npu.sram_bytes:,}", f"{npu.offchip_bytes:,} ({npu.offchip_area})", f"{npu.inference_ms:.3f}"]
        row.append(", ".join(f"{a}: {figures.npu[a].cpu_ops}" for a in ACCELERATORS if figures.npu[a].cpu_ops) or "none")
        rows.append(row)
    return markdown_table(header, rows)


def _device_main(paths: list[str]) -> int:
    from tfdense.peers import peer_files

    named = []
    for path in paths:
        try:
            content = Path(path).read_bytes()
            check_int8_classifier(content)
        except (OSError, DeviceError) as e:
            print(f"error: {path}: {e.strerror if isinstance(e, OSError) else e}", file=sys.stderr)
            return 2
        named.append((Path(path).name, content))
    given = {Path(p).resolve() for p in paths}
    named += [(f"{p.name} (MLPerf Tiny)", p.read_bytes()) for p in peer_files("mlperf-tiny") if p.resolve() not in given]
    print(device_table(named))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfdense footprint", description="Where the bytes of .tflite files go, and the RAM they need.")
    parser.add_argument("models", nargs="+", help=".tflite files")
    parser.add_argument("--strip", metavar="OUT", help="write the first model, stripped of names and min/max, to OUT")
    parser.add_argument("--device", action="store_true",
                        help="instead: flash, gzip, arena RAM and Ethos-U (Vela) figures of each int8 model beside the MLPerf Tiny peers")
    args = parser.parse_args(argv)
    if args.device:
        if args.strip:
            parser.error("--strip and --device are separate reports")
        return _device_main(args.models)
    named = []
    for path in args.models:
        try:
            content = Path(path).read_bytes()
            if content[4:8] != b"TFL3":
                raise ValueError("not a TFLite model (no TFL3 identifier)")
            named.append((Path(path).name, breakdown(content)))
        except (OSError, ValueError) as e:
            print(f"error: {path}: {e}", file=sys.stderr)
            return 2
    if args.strip:
        from tfdense.conversion import strip  # TensorFlow loads here, only for --strip

        stripped = strip(Path(args.models[0]).read_bytes())
        Path(args.strip).write_bytes(stripped)
        named.append((Path(args.strip).name + " (stripped)", breakdown(stripped)))
    print(format_breakdown(named))
    return 0


if __name__ == "__main__":
    sys.exit(main())
