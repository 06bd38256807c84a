"""Every shipped model in exports/ still measures what exports/metrics.json says (real test set)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest import REPO
from tfdense.litert import TFLiteClassifier

EXPORTS = REPO / "exports"
# No fallback: without metrics.json, collecting this module fails instead of testing nothing.
REGISTRY = json.loads((EXPORTS / "metrics.json").read_text())


def test_every_shipped_tflite_is_in_the_registry_and_back():
    on_disk = {p.name for p in EXPORTS.glob("*.tflite")}
    assert on_disk == set(REGISTRY)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_shipped_model_has_its_recorded_bytes_and_accuracy(name, cifar10):
    _, (x_test, y_test) = cifar10
    path = EXPORTS / name
    assert path.stat().st_size == REGISTRY[name]["tflite_bytes"]
    accuracy = float(np.mean(TFLiteClassifier(path).scores(x_test).argmax(axis=1) == y_test))
    assert accuracy == pytest.approx(REGISTRY[name]["test_accuracy"], abs=0.001)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_shipped_model_has_its_recorded_arena_ram_and_ethos_u_figures(name):
    from tfdense.device import device_figures

    figures = device_figures((EXPORTS / name).read_bytes())
    assert {k: REGISTRY[name][k] for k in ("arena_bytes", "arena_peak_op", "npu")} == figures.to_metrics()
    assert all(f.all_on_npu for f in figures.npu.values()) and len(figures.npu) == 2


def test_readme_results_table_is_the_one_generated_from_metrics_json():
    from tfdense.cli.ship import results_table

    readme = (REPO / "README.md").read_text()
    start = readme.index("<!-- results: python -m tfdense ship --table")
    shown = readme[readme.index("\n", start) + 1 : readme.index("<!-- /results -->")].strip()
    assert shown == results_table(EXPORTS)


def test_peer_figures_beside_the_shipped_ones_are_the_packaged_peers_own():
    from tfdense.device import plan_arena
    from tfdense.peers import peer_files

    peers = json.loads((EXPORTS / "peers.json").read_text())
    for path in peer_files("mlperf-tiny"):
        assert peers[path.name]["tflite_bytes"] == path.stat().st_size
        assert peers[path.name]["arena_bytes"] == plan_arena(path.read_bytes()).arena_bytes


@pytest.mark.parametrize("name", sorted(n for n in REGISTRY if "search" in REGISTRY[n]))
def test_a_searched_model_is_the_architecture_its_search_chose(name):
    from tfdense.cli.ship import searched_architecture
    from tfdense.config import resolve

    folder, trial = re.fullmatch(r"(.+) \(trial (\w+)\)", REGISTRY[name]["search"]).groups()
    config = resolve("full", str(EXPORTS / name.replace("uint8", "int8").replace(".tflite", ".yaml")), [])
    assert searched_architecture(REPO / folder, config) == f"{(REPO / folder).as_posix()} (trial {trial})"
