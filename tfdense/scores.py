"""Efficiency scores, and weight/MAC counts read back from a .tflite graph.

Two score conventions, each in one documented function:

- IMT (the student challenge this project aims past):
  `[1 - (p_s + p_u)] * (q_w / 32) * w / 5.6e6 + (1 - p_s) * (max(q_w, q_a) / 32) * f / 2.8e8`
  with w conv/dense weights, f MACs for one image, p_s / p_u the structurally / unstructurally
  pruned fractions of w, q_w / q_a the weight / activation bit-widths.
- MicroNet 2019: parameter storage counts each nonzero weight at q_w/32 plus a 1-bit mask over
  every element of a sparse tensor; math ops count multiplies and adds separately (2 per MAC)
  at max(q_w, q_a)/32; each is normalised by the challenge's WideResNet-28-10 baseline
  (36.5M parameters, 10.49B math ops). MicroNet had no CIFAR-10 track, so that CIFAR-100
  baseline is the reference here; zero weights are not skipped in the math count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMT_WEIGHT_NORM = 5.6e6
IMT_MAC_NORM = 2.8e8
MICRONET_REF_PARAMS = 36.5e6
MICRONET_REF_OPS = 10.49e9


def imt_score(weights: int, macs: int, q_w: int = 8, q_a: int = 8, p_s: float = 0.0, p_u: float = 0.0) -> float:
    """The IMT challenge score; lower is better. See the module docstring for the terms."""
    if not (0 <= p_s <= 1 and 0 <= p_u <= 1 and p_s + p_u <= 1):
        raise ValueError(f"pruned fractions must be in [0, 1] and sum to <= 1, got p_s={p_s}, p_u={p_u}")
    return (1 - (p_s + p_u)) * (q_w / 32) * weights / IMT_WEIGHT_NORM + (1 - p_s) * (max(q_w, q_a) / 32) * macs / IMT_MAC_NORM


def micronet_score(weights: int, nonzero_weights: int, macs: int, q_w: int = 8, q_a: int = 8, sparse: bool | None = None) -> dict[str, float]:
    """MicroNet 2019 parameter storage, math ops and their normalised sum; lower is better.

    `sparse` (default: any weight is zero) adds the 1-bit-per-weight mask to the storage.
    """
    sparse = nonzero_weights < weights if sparse is None else sparse
    storage = nonzero_weights * q_w / 32 + (weights / 32 if sparse else 0.0)
    ops = 2 * macs * max(q_w, q_a) / 32
    return {
        "micronet_params": storage,
        "micronet_ops": ops,
        "micronet_score": storage / MICRONET_REF_PARAMS + ops / MICRONET_REF_OPS,
    }


@dataclass(frozen=True)
class GraphStats:
    """Counts read from a .tflite file's CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED ops."""

    weights: int
    nonzero_weights: int
    macs: int
    ops: tuple[str, ...]
    weight_bits: int


def tflite_graph_stats(model: str | Path | bytes) -> GraphStats:
    """Weights, nonzero weights and MACs for one image, from the TFLite graph itself.

    Filters are read as stored: for int8 (symmetric, zero point 0) a stored 0 is a real 0.
    Filters of a sparse-encoded file are read after one invocation has densified them.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

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
    weights = nonzero = macs = 0
    bits = 32
    ops = []
    for op in interpreter._get_ops_details():
        name = op["op_name"]
        ops.append(name)
        if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
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
        if name == "FULLY_CONNECTED":
            macs += size * int(np.prod(out_shape[:-1]))
        else:
            # Each filter entry is used once per output position; for depthwise the filter's
            # last axis already spans the output channels.
            macs += size * int(out_shape[1] * out_shape[2])
    return GraphStats(weights=weights, nonzero_weights=nonzero, macs=macs, ops=tuple(sorted(set(ops))), weight_bits=bits)
