"""Where a .tflite file's bytes go, and stripping what a device does not need."""

from __future__ import annotations

import numpy as np

from conftest import run_cli
from tfdense.conversion import strip
from tfdense.cli.footprint import breakdown
from tfdense.litert import TFLiteClassifier, graph_stats
from tfdense.peers import RESNET8


def test_breakdown_counts_the_int8_weights_the_graph_holds():
    content = RESNET8.read_bytes()
    parts = breakdown(content)
    assert parts.weights == graph_stats(content).weights == 77_360  # one byte per int8 weight
    assert sum(v for _, v in parts.rows()) == parts.total == len(content)
    assert parts.tensor_names > 0 and parts.quantization > 0 and parts.structure > 0


def test_stripped_model_is_smaller_and_scores_bit_identically(cifar10):
    content = RESNET8.read_bytes()
    stripped = strip(content)
    assert len(stripped) < len(content) - 3_000
    assert breakdown(stripped).tensor_names == 0 and breakdown(stripped).weights == breakdown(content).weights
    _, (x_test, _) = cifar10
    np.testing.assert_array_equal(TFLiteClassifier(content).scores(x_test[:200]), TFLiteClassifier(stripped).scores(x_test[:200]))


def test_footprint_cli_prints_a_table_and_writes_the_stripped_file(tmp_path):
    out = tmp_path / "small.tflite"
    result = run_cli("tfdense", "footprint", str(RESNET8), "--strip", str(out), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| tensor names |" in result.stdout and "**98,496**" in result.stdout
    assert out.read_bytes()[4:8] == b"TFL3"


def test_footprint_cli_refuses_a_file_that_is_not_tflite(tmp_path):
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"0123456789")
    result = run_cli("tfdense", "footprint", str(bad), timeout=120)
    assert result.returncode == 2 and "not a TFLite model" in result.stderr


def test_size_fit_recovers_the_overheads_it_was_given():
    from tfdense.cli.sizefit import fit

    rows = [{"weights": w, "channels": c, "layers": n, "bytes": w + 27 * c + 135 * n + 1100}
            for w, c, n in [(70752, 218, 36), (43256, 478, 81), (1076, 48, 26), (173064, 922, 96)]]
    np.testing.assert_allclose(fit(rows), [27, 135, 1100], rtol=1e-6)


def test_per_tensor_size_fit_refits_only_the_bytes_per_channel():
    from tfdense.cli.sizefit import fit
    from tfdense.costs import INT8_BYTES_FIXED, INT8_BYTES_PER_LAYER

    rows = [{"weights": w, "channels": c, "layers": n, "bytes": round(w + 4.5 * c + INT8_BYTES_PER_LAYER * n + INT8_BYTES_FIXED)}
            for w, c, n in [(70752, 218, 36), (43256, 478, 81), (1076, 48, 26), (173064, 922, 96)]]
    np.testing.assert_allclose(fit(rows, per_channel=False), [4.5, INT8_BYTES_PER_LAYER, INT8_BYTES_FIXED], atol=0.01)
