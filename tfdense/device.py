"""What an int8 .tflite needs on a microcontroller: the tensor arena's RAM, and Arm's Ethos-U NPU.

Flash is the file's bytes. RAM is the tensor arena that TensorFlow Lite Micro plans for the
activations: `plan_arena` reads every non-constant tensor's size and lifetime from the operator
order and places them with a greedy by-size planner, as TFLM's default `GreedyMemoryPlanner`
does (largest first, each at the lowest offset whose bytes no tensor alive at the same time
uses, sizes rounded up to TFLM's 16-byte alignment). Lifetimes follow TFLM's
`AllocationInfoBuilder::MarkAllocationLifetimes` (micro_allocation_info.cc): a tensor lives
from its first writer to its last reader; the graph's input from the start to its last reader
(TFLM does not keep it to the end: the stem frees its 3,072 bytes), the graph's output from its
writer to the end. A DenseNet keeps every
earlier map of a block alive until the block's last concatenation, so this is where it can
lose to a ResNet of the same flash. The arena figure is activations only: TFLM adds kernel
scratch buffers (CMSIS-NN's conv buffers) and its own bookkeeping, which depend on the build.
TFLM's own Python package (`tflite-micro`) is not on the package registry this project
installs from, so the plan is computed here rather than by TFLM.

`vela_compile` runs Arm's Vela compiler (`ethos-u-vela`, pinned in pyproject.toml) for one NPU
at Vela's default system config and reads its summary: SRAM and off-chip memory used (weights
after Vela's compression), operators on the NPU and on the CPU, estimated inference time.
"""

from __future__ import annotations

import csv
import dataclasses
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

ALIGNMENT = 16  # TFLM's MicroArenaBufferAlignment()
# The two NPUs the issue of record names; Vela's defaults: U55 High_End_Embedded (weights in
# off-chip flash), U65 Client_Server (weights and feature maps in DRAM, SRAM as a cache).
ACCELERATORS = ("ethos-u55-128", "ethos-u65-256")

_BYTES = {
    schema.TensorType.FLOAT32: 4, schema.TensorType.FLOAT16: 2, schema.TensorType.INT32: 4, schema.TensorType.UINT8: 1,
    schema.TensorType.INT64: 8, schema.TensorType.BOOL: 1, schema.TensorType.INT16: 2, schema.TensorType.INT8: 1,
    schema.TensorType.UINT32: 4, schema.TensorType.UINT16: 2, schema.TensorType.FLOAT64: 8,
}
_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


class DeviceError(ValueError):
    """A file this module cannot plan or compile; the message says why in one line."""


@dataclass(frozen=True)
class Buffer:
    """One activation tensor: bytes, and the first and last operator index it is alive at."""

    name: str
    size: int
    first: int
    last: int


@dataclass(frozen=True)
class ArenaPlan:
    """A greedy plan of the activations: arena bytes, and where the most bytes are alive."""

    arena_bytes: int  # highest offset + size over all placed tensors
    peak_live_bytes: int  # most bytes alive at one operator: no plan can use less
    peak_op: str  # e.g. "12 CONCATENATION": the operator index and type at that peak
    offsets: dict[str, int]  # each buffer's place in the arena, by name


def _aligned(size: int) -> int:
    return -(-size // ALIGNMENT) * ALIGNMENT


def greedy_plan(buffers: list[Buffer], op_names: list[str] | None = None) -> ArenaPlan:
    """Places `buffers` largest first, each at the lowest offset free during its whole lifetime."""
    sizes = [_aligned(b.size) for b in buffers]
    order = sorted(range(len(buffers)), key=lambda i: -sizes[i])  # stable: ties keep graph order, as TFLM's sort does
    offsets = [0] * len(buffers)
    placed: list[int] = []
    for i in order:
        b = buffers[i]
        candidate = 0
        for j in sorted(placed, key=lambda j: offsets[j]):
            if buffers[j].last < b.first or buffers[j].first > b.last:
                continue  # never alive together: may share bytes
            if offsets[j] >= candidate + sizes[i]:
                break  # the gap below j fits
            candidate = max(candidate, offsets[j] + sizes[j])
        offsets[i] = candidate
        placed.append(i)
    arena = max((o + s for o, s in zip(offsets, sizes)), default=0)
    steps = max((b.last for b in buffers), default=-1) + 1
    live = [sum(s for b, s in zip(buffers, sizes) if b.first <= t <= b.last) for t in range(steps)]
    peak = int(np.argmax(live)) if live else 0
    label = f"{peak} {op_names[peak]}" if op_names else str(peak)
    return ArenaPlan(arena, max(live, default=0), label, {b.name: o for b, o in zip(buffers, offsets)})


def read_model(content: bytes):
    """The FlatBuffer of a .tflite as LiteRT's object API reads it; DeviceError when it is not one."""
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise DeviceError("not a TFLite model (no TFL3 identifier)")
    try:
        return flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    except Exception as e:  # a truncated FlatBuffer fails anywhere inside the generated reader
        raise DeviceError(f"not a readable TFLite model ({type(e).__name__})") from e


def builtin_codes(model) -> list[int]:
    """Each operator code's builtin operator (files written since TFLite 2.3 keep it in a second field)."""
    return [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]


def check_int8_classifier(content: bytes) -> None:
    """DeviceError unless `content` is a TFLite model with one 32x32x3 input of int8 or uint8."""
    model = read_model(content)
    graph = model.subgraphs[0]
    if len(graph.inputs) != 1:
        raise DeviceError(f"expected one input, found {len(graph.inputs)}")
    tensor = graph.tensors[graph.inputs[0]]
    shape = tuple(int(d) for d in tensor.shape)
    if shape[1:] != (32, 32, 3):
        raise DeviceError(f"input shape {shape}, expected (1, 32, 32, 3)")
    if tensor.type not in (schema.TensorType.INT8, schema.TensorType.UINT8):
        kind = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}.get(tensor.type, tensor.type)
        raise DeviceError(f"a {str(kind).lower()} model: the arena plan and Vela are for full-int8 files (Vela compiles int8 only)")


def activation_buffers(content: bytes) -> tuple[list[Buffer], list[str]]:
    """Every non-constant tensor of the main graph with its lifetime, and the operator types in order."""
    model = read_model(content)
    graph = model.subgraphs[0]
    codes = builtin_codes(model)
    op_names = [_OP_NAMES.get(codes[op.opcodeIndex], "CUSTOM") for op in graph.operators]
    last_op = len(graph.operators) - 1

    def constant(index: int) -> bool:
        buffer = model.buffers[graph.tensors[index].buffer]
        return buffer.data is not None and len(buffer.data) > 0

    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for t, op in enumerate(graph.operators):
        for index in op.outputs:
            if index >= 0:
                first.setdefault(index, t)
                last[index] = max(last.get(index, t), t)
        for index in op.inputs:
            if index >= 0 and not constant(index):
                first.setdefault(index, t)
                last[index] = t
    for index in graph.inputs:
        first[index] = 0
        last.setdefault(index, 0)
    for index in graph.outputs:
        first.setdefault(index, 0)
        last[index] = last_op
    buffers = []
    for index in sorted(first):
        tensor = graph.tensors[index]
        size = int(np.prod(tensor.shape)) * _BYTES.get(tensor.type, 4) if tensor.shape is not None else 0
        name = tensor.name.decode() if isinstance(tensor.name, bytes) and tensor.name else str(tensor.name or index)
        buffers.append(Buffer(name, size, first[index], last[index]))
    return buffers, op_names


def plan_arena(content: bytes) -> ArenaPlan:
    """The greedy arena plan of a .tflite file's activations (see the module doc)."""
    buffers, op_names = activation_buffers(content)
    return greedy_plan(buffers, op_names)


@dataclass(frozen=True)
class VelaFigures:
    """Vela's summary of one compile for one NPU."""

    accelerator: str  # e.g. "ethos-u55-128"
    system_config: str  # Vela's default for that NPU
    sram_bytes: int
    offchip_bytes: int  # weights (and, on U65 Client_Server, feature maps) outside SRAM, after compression
    offchip_area: str  # where Vela keeps the weights: "Off-chip Flash" or "DRAM"
    npu_ops: int
    cpu_ops: int  # > 0: some operators fall back to the Cortex-M CPU
    inference_ms: float  # Vela's estimate at the system config's clock
    cycles: int

    @property
    def all_on_npu(self) -> bool:
        return self.cpu_ops == 0


def _operator_count(stdout: str, kind: str) -> int:
    for line in stdout.splitlines():
        if line.strip().startswith(f"{kind} operators"):
            return int(line.split("=")[1].split()[0])
    raise DeviceError(f"Vela printed no '{kind} operators' line")


def vela_compile(content: bytes, accelerator: str = "ethos-u55-128", timeout: float = 300) -> VelaFigures:
    """Compiles `content` with Vela for `accelerator` at its default system config and reads the summary."""
    check_int8_classifier(content)
    with tempfile.TemporaryDirectory(prefix="tfdense-vela-") as tmp:
        model = Path(tmp) / "model.tflite"
        model.write_bytes(content)
        command = [sys.executable, "-c", "import sys; from ethosu.vela.vela import main; sys.exit(main())",
                   str(model), "--accelerator-config", accelerator, "--output-dir", str(Path(tmp) / "out")]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        summaries = sorted((Path(tmp) / "out").glob("*_summary_*.csv"))
        if done.returncode != 0 or not summaries:
            reason = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no summary written"]
            raise DeviceError(f"Vela failed for {accelerator}: {reason[0]}")
        with summaries[0].open() as f:
            (row,) = list(csv.DictReader(f))
    kib = lambda key: int(round(float(row[key]) * 1024))  # noqa: E731  (Vela reports KiB)
    return VelaFigures(
        accelerator=accelerator,
        system_config=row["system_config"],
        sram_bytes=kib("sram_memory_used"),
        offchip_bytes=kib("off_chip_flash_memory_used") + kib("dram_memory_used") + kib("on_chip_flash_memory_used"),
        offchip_area=row["weights_storage_area"],
        npu_ops=_operator_count(done.stdout, "NPU"),
        cpu_ops=_operator_count(done.stdout, "CPU"),
        inference_ms=float(row["inference_time"]) * 1000,
        cycles=int(float(row["cycles_total"])),
    )


@dataclass(frozen=True)
class DeviceFigures:
    """RAM and NPU figures of one file: what `evaluate` and `ship` record beside its flash bytes."""

    arena_bytes: int
    arena_peak_op: str
    npu: dict[str, VelaFigures]  # by accelerator; empty for a float file (Vela compiles int8 only)

    def to_metrics(self) -> dict:
        """The `arena_bytes`, `arena_peak_op` and `npu` entries of a file's metrics (`metrics.ModelMetrics`)."""
        return {"arena_bytes": self.arena_bytes, "arena_peak_op": self.arena_peak_op,
                "npu": {a: dataclasses.asdict(f) for a, f in self.npu.items()}}


def device_figures(content: bytes, accelerators: tuple[str, ...] = ACCELERATORS) -> DeviceFigures:
    """The arena plan of any .tflite and, for an int8 classifier, a Vela compile for each accelerator."""
    plan = plan_arena(content)
    try:
        check_int8_classifier(content)
    except DeviceError:
        return DeviceFigures(plan.arena_bytes, plan.peak_op, {})
    return DeviceFigures(plan.arena_bytes, plan.peak_op, {a: vela_compile(content, a) for a in accelerators})
