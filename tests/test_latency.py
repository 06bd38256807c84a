"""Where a .tflite file's time goes: graph prefixes, timed op by op."""

from __future__ import annotations

import numpy as np

from tfdense.cli.latency import by_op_type, graph_prefixes, main, op_latency
from tfdense.litert import TFLiteClassifier, TFLiteModel, graph_stats
from tfdense.peers import RESNET8

PIXELS = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype(np.uint8)


def _outputs(model: TFLiteModel, image: np.ndarray) -> list[np.ndarray]:
    model.interpreter.set_tensor(model.input["index"], model._quantize_input(image[None]))
    model.interpreter.invoke()
    return [model.interpreter.get_tensor(o["index"]) for o in model.outputs]


def test_prefixes_follow_the_graph_and_the_last_one_is_the_whole_model():
    content = RESNET8.read_bytes()
    prefixes = graph_prefixes(content)
    whole = TFLiteClassifier(content)
    assert [p.op for p in prefixes] == ["CONV_2D"] * 3 + ["ADD"] + ["CONV_2D"] * 3 + ["ADD"] + ["CONV_2D"] * 3 + ["ADD", "AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
    assert sum(p.macs for p in prefixes) == graph_stats(content).macs
    assert prefixes[4].output_shape == (1, 16, 16, 32)
    np.testing.assert_array_equal(_outputs(TFLiteModel(prefixes[-1].content), PIXELS[0])[0], _outputs(whole, PIXELS[0])[0])


def test_a_prefix_keeps_every_branch_it_computed_as_an_output():
    # After the second block's shortcut conv (op 6) both branches wait for the ADD: a prefix
    # ending there must still compute, and output, the main branch (op 5).
    sixth = TFLiteModel(graph_prefixes(RESNET8.read_bytes())[6].content)
    assert [tuple(o["shape"]) for o in sixth.outputs] == [(1, 16, 16, 32), (1, 16, 16, 32)]
    first, second = _outputs(sixth, PIXELS[0])
    assert first.dtype == np.int8 and not np.array_equal(first, second)


def test_op_times_add_up_to_the_model_and_group_by_op_type():
    times = op_latency(RESNET8.read_bytes(), PIXELS, rounds=1)
    assert [t.index for t in times] == list(range(16))
    whole = sum(t.ms for t in times)
    # No lower bound in ms: one CI machine ran the whole ResNet-8 in 0.045 ms.
    assert 0 < whole < 50, whole
    groups = by_op_type(times)
    assert groups["CONV_2D"][:2] == (9, 12_500_992) and groups["ADD"][:2] == (3, 0)
    # The convolutions hold all of the model's MACs, so they must be the slowest op type.
    assert next(iter(groups)) == "CONV_2D", groups
    assert abs(sum(ms for *_, ms in groups.values()) - whole) < 1e-9


def test_latency_cli_prints_each_op_and_refuses_a_file_that_is_not_tflite(tmp_path, capsys):
    assert main([str(RESNET8), "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("### pretrainedResnet_quant.tflite: ") and "| 15 | SOFTMAX | 10 | 0 |" in out
    assert "| CONV_2D | 9 | 12,500,992 |" in out
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"0123456789")
    assert main([str(bad)]) == 2
    assert "not a TFLite model" in capsys.readouterr().err
