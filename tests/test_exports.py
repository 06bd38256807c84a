"""Every shipped model in exports/ still measures what exports/metrics.json says (real test set)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import REPO
from tfdense.litert import TFLiteClassifier

EXPORTS = REPO / "exports"
REGISTRY = json.loads((EXPORTS / "metrics.json").read_text()) if (EXPORTS / "metrics.json").exists() else {}


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
