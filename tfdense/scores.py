"""Efficiency scores: each formula in one documented function.

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
