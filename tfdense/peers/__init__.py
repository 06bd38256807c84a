"""Peer models shipped with tfdense, so an installed copy can compare against them.

`mlperf-tiny`: the MLPerf Tiny image-classification references (ResNet-8 and the large
ResNet), copied unchanged with their provenance and licence (see `mlperf_tiny/PROVENANCE.md`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PEER_SETS = {
    "mlperf-tiny": ("mlperf_tiny", ("pretrainedResnet_quant.tflite", "pretrainedResnet_large_int8.tflite")),
}


def peer_files(name: str) -> list[Path]:
    """The .tflite files of a named peer set; ValueError naming the known sets otherwise."""
    if name not in PEER_SETS:
        raise ValueError(f"unknown peer set {name!r}; known: {', '.join(PEER_SETS)}")
    folder, files = PEER_SETS[name]
    root = Path(str(resources.files(__name__) / folder))
    return [root / f for f in files]


RESNET8, RESNET_LARGE = peer_files("mlperf-tiny")
