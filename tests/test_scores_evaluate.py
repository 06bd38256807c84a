"""Efficiency formulas on hand-computed examples, TFLite graph counts, and the LiteRT evaluator."""

from __future__ import annotations


import numpy as np
import pytest

from conftest import run_cli
from tfdense.litert import graph_stats
from tfdense.scores import imt_score, micronet_score

from tfdense.peers import RESNET8


def test_imt_score_matches_hand_calculation():
    # 8-bit, 50k weights, 10M MACs, no pruning: 0.25*50e3/5.6e6 + 0.25*10e6/2.8e8.
    assert imt_score(50_000, 10_000_000) == pytest.approx(0.0022321 + 0.0089286, rel=1e-4)
    # Half the weights pruned unstructured: the weight term halves, the MAC term stays.
    assert imt_score(50_000, 10_000_000, p_u=0.5) == pytest.approx(0.0022321 / 2 + 0.0089286, rel=1e-4)
    # Structured pruning shrinks both terms; float32 counts full width.
    assert imt_score(50_000, 10_000_000, p_s=0.5) == pytest.approx(0.0022321 / 2 + 0.0089286 / 2, rel=1e-4)
    assert imt_score(1_000, 0, q_w=32, q_a=32) == pytest.approx(1_000 / 5.6e6)
    with pytest.raises(ValueError):
        imt_score(1, 1, p_s=0.6, p_u=0.6)


def test_micronet_score_matches_hand_calculation():
    dense = micronet_score(1_000, 1_000, 2_000, q_w=8, q_a=8)
    assert dense["micronet_params"] == 250.0  # 1000 * 8/32
    assert dense["micronet_ops"] == 1_000.0  # 2 ops per MAC * 2000 * 8/32
    assert dense["micronet_score"] == pytest.approx(250 / 36.5e6 + 1_000 / 10.49e9)
    sparse = micronet_score(1_000, 400, 2_000, q_w=8, q_a=8)
    assert sparse["micronet_params"] == 400 * 0.25 + 1_000 / 32  # nonzeros plus a 1-bit mask


def test_graph_counts_of_resnet8_match_its_provenance():
    stats = graph_stats(RESNET8)
    assert (stats.weights, stats.macs, stats.weight_bits) == (77_360, 12_501_632, 8)
    assert "CONV_2D" in stats.ops and "FULLY_CONNECTED" in stats.ops


@pytest.mark.slow
def test_evaluator_reproduces_resnet8_accuracy(cifar10, tmp_path):
    result = run_cli("tfdense", "evaluate", "--peers", "mlperf-tiny", "--latency-images", "20", "--json", str(tmp_path / "r.json"), timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| pretrainedResnet_quant.tflite | 86.97 % | 98,496 |" in result.stdout
    import json

    entry, large = json.loads((tmp_path / "r.json").read_text())
    assert large["test_accuracy"] == pytest.approx(0.9131, abs=5e-5)
    assert np.array(entry["confusion_matrix"]).sum() == 10_000
    assert entry["input_quantization"] == [1.0, -128.0]


def _tiny_tflite(input_shape, outputs: int) -> bytes:
    import tf_keras as keras

    from tfdense.conversion import to_tflite

    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    return to_tflite(keras.Model(inputs, keras.layers.Dense(outputs)(x)), int8=False)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"this is not a flatbuffer at all", "not a TFLite model"),
        ("shape", "input shape (1, 28, 28, 1), expected (1, 32, 32, 3)"),
        ("outputs", "expected 10 class scores"),
    ],
)
def test_evaluator_rejects_unusable_models(tmp_path, content, message):
    path = tmp_path / "bad.tflite"
    if content == "shape":
        content = _tiny_tflite((28, 28, 1), 10)
    elif content == "outputs":
        content = _tiny_tflite((32, 32, 3), 7)
    path.write_bytes(content)
    result = run_cli("tfdense", "evaluate", str(path), timeout=120)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_prune_schedule_ends_on_a_mask_update_step():
    from tfdense.config import PruneConfig
    from tfdense.sparsity import check_sparsity, pruning_schedule

    schedule = pruning_schedule(PruneConfig(epochs=3, frequency=50, ramp_fraction=0.7), steps_per_epoch=351)
    assert schedule.end_step % 50 == 0 and schedule.end_step <= 3 * 351
    per_layer = {"a": {"size": 1000, "sparsity": 0.495, "pruned": True}, "b": {"size": 1000, "sparsity": 0.45, "pruned": True},
                 "c": {"size": 10, "sparsity": 0.4, "pruned": True}, "d": {"size": 100, "sparsity": 0.0, "pruned": False}}
    assert check_sparsity(per_layer, 0.5) == ["b (0.450)"]


def test_interleaved_latency_times_every_model_each_round_in_a_rotating_order():
    from tfdense.litert import TFLiteClassifier, interleaved_latency_ms
    from tfdense.peers import RESNET_LARGE

    order = []

    class Recorded(TFLiteClassifier):
        def latency_ms(self, pixels):
            order.append((self.path.name, len(pixels)))
            return super().latency_ms(pixels)

    files = [RESNET8, RESNET_LARGE]
    pixels = np.random.default_rng(0).integers(0, 256, (30, 32, 32, 3)).astype(np.uint8)
    small, large = interleaved_latency_ms([Recorded(p) for p in files], pixels, rounds=3)
    names = [p.name for p in files]
    assert order[:2] == [(n, 20) for n in names]  # the warm-up, then three rounds of 30 images
    assert [n for n, _ in order[2:]] == [names[0], names[1], names[1], names[0], names[0], names[1]]
    # Only positive: which is faster is the machine's (beside a training on both cores the large
    # ResNet, 6x ResNet-8's MACs, timed 0.31 ms against 0.39), the order above is the code's.
    assert small > 0 and large > 0
