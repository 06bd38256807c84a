"""On-device RAM and the Ethos-U NPU: the arena planner on graphs whose answer is known by hand, and Vela."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

from conftest import run_cli
from tfdense.device import Buffer, DeviceError, check_int8_classifier, greedy_plan, plan_arena, vela_compile
from tfdense.peers import RESNET8

IMAGE = (1, 32, 32, 3)  # 3,072 int8 bytes, alive from the start to its last reader, as in TFLM
SCORES = (1, 10)  # 10 bytes, 16 once aligned, alive from its writer to the end


def tflite_graph(tensors: dict[str, tuple[int, ...]], ops: list[tuple[str, list[str], list[str]]], dtype=schema.TensorType.INT8) -> bytes:
    """A .tflite FlatBuffer with only the structure a planner reads: tensors, operators, graph input and output.

    `tensors` maps names to shapes (the first is the graph input, the last its output); a name
    starting with "w" is a constant (its buffer holds data, so it is not an activation).
    """
    model = schema.ModelT()
    model.version = 3
    model.buffers = [schema.BufferT()]
    graph = schema.SubGraphT()
    graph.tensors = []
    index = {}
    for name, shape in tensors.items():
        tensor = schema.TensorT()
        tensor.name, tensor.shape, tensor.type, tensor.buffer = name, list(shape), dtype, 0
        if name.startswith("w"):
            constant = schema.BufferT()
            constant.data = np.ones(int(np.prod(shape)), np.uint8)
            model.buffers.append(constant)
            tensor.buffer = len(model.buffers) - 1
        index[name] = len(graph.tensors)
        graph.tensors.append(tensor)
    codes = sorted({op for op, _, _ in ops})
    model.operatorCodes = []
    for op in codes:
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = getattr(schema.BuiltinOperator, op)
        model.operatorCodes.append(code)
    graph.operators = []
    for op, inputs, outputs in ops:
        operator = schema.OperatorT()
        operator.opcodeIndex = codes.index(op)
        operator.inputs, operator.outputs = [index[n] for n in inputs], [index[n] for n in outputs]
        graph.operators.append(operator)
    names = list(tensors)
    graph.inputs, graph.outputs = [index[names[0]]], [index[names[-1]]]
    model.subgraphs = [graph]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def test_chain_reuses_the_bytes_of_maps_no_longer_read():
    # in -> a -> b -> c -> out; a and c are never alive together, so c takes a's offset.
    content = tflite_graph(
        {"in": IMAGE, "w": (8, 3, 3, 3), "a": (1, 32, 32, 8), "b": (1, 32, 32, 8), "c": (1, 32, 32, 8), "out": SCORES},
        [("CONV_2D", ["in", "w"], ["a"]), ("CONV_2D", ["a", "w"], ["b"]), ("CONV_2D", ["b", "w"], ["c"]), ("FULLY_CONNECTED", ["c", "w"], ["out"])],
    )
    plan = plan_arena(content)
    # At op 1 (and 2): two 8,192-byte maps; the image is freed after op 0, the weights are not activations.
    assert plan.peak_live_bytes == 2 * 8192
    assert plan.arena_bytes == plan.peak_live_bytes  # a perfect fit: c reuses a's bytes
    assert plan.peak_op == "1 CONV_2D"
    assert plan.offsets["a"] == plan.offsets["c"] == 0 and set(plan.offsets) == {"in", "a", "b", "c", "out"}


def test_concatenation_keeps_its_inputs_alive_until_it_runs():
    # A dense layer: a, then b from a, then concat(a, b): a, b and the 8,192-byte result are alive at once.
    content = tflite_graph(
        {"in": IMAGE, "w": (4, 1, 1, 3), "a": (1, 32, 32, 4), "b": (1, 32, 32, 4), "ab": (1, 32, 32, 8), "out": SCORES},
        [("CONV_2D", ["in", "w"], ["a"]), ("CONV_2D", ["a", "w"], ["b"]), ("CONCATENATION", ["a", "b"], ["ab"]), ("FULLY_CONNECTED", ["ab", "w"], ["out"])],
    )
    plan = plan_arena(content)
    assert plan.peak_op == "2 CONCATENATION"
    assert plan.peak_live_bytes == 4096 + 4096 + 8192
    assert plan.arena_bytes == plan.peak_live_bytes
    assert plan.offsets["in"] == 0 and plan.offsets["out"] == 8192  # the image shares bytes with ab, the scores with a


def test_a_branch_that_stays_alive_is_counted_beside_the_path_it_skips():
    # A residual: a feeds conv1 and, three ops later, the ADD; d then fits in b's freed place.
    content = tflite_graph(
        {"in": IMAGE, "w": (4, 3, 3, 3), "a": (1, 32, 32, 4), "b": (1, 32, 32, 4), "c": (1, 32, 32, 4), "d": (1, 32, 32, 4), "out": SCORES},
        [("CONV_2D", ["in", "w"], ["a"]), ("CONV_2D", ["a", "w"], ["b"]), ("CONV_2D", ["b", "w"], ["c"]), ("ADD", ["a", "c"], ["d"]),
         ("FULLY_CONNECTED", ["d", "w"], ["out"])],
    )
    plan = plan_arena(content)
    assert plan.peak_op == "2 CONV_2D"  # a, b and c alive together (op 3 has a, c and d)
    assert plan.peak_live_bytes == 3 * 4096
    assert [plan.offsets[n] for n in "abcd"] == [0, 4096, 8192, 4096]  # d lands in the gap b left
    assert plan.arena_bytes == 12_288


def test_greedy_plan_places_largest_first_and_can_exceed_the_live_peak():
    # Hand-worked: x (100 B, ops 0-1) and y (100 B, ops 2-3) share offset 0; z (50 B, ops 1-2) overlaps
    # both in time and goes above them, so the arena is 112 + 64 = 176 bytes where at most 176 are live.
    plan = greedy_plan([Buffer("x", 100, 0, 1), Buffer("y", 100, 2, 3), Buffer("z", 50, 1, 2)])
    assert plan.offsets == {"x": 0, "y": 0, "z": 112}
    assert plan.arena_bytes == 176 and plan.peak_live_bytes == 176
    # Largest first is not always best: p (48 B, op 3) and q (48 B, op 1) share offset 0, r (32 B,
    # ops 0-2) goes above q, and s (16 B, ops 2-3) overlaps p below and r above: 96 bytes, where
    # r at 0, q at 32, p at 0 and s at 48 would need only the 80 bytes alive at op 1. TFLM's greedy
    # planner makes the same choice; the arena figure is the plan's, not the lower bound.
    plan = greedy_plan([Buffer("r", 32, 0, 2), Buffer("p", 48, 3, 3), Buffer("s", 16, 2, 3), Buffer("q", 48, 1, 1)])
    assert plan.offsets == {"r": 48, "p": 0, "s": 80, "q": 0}
    assert plan.arena_bytes == 96 and plan.peak_live_bytes == 80 and plan.peak_op == "1"


def test_float_and_odd_inputs_and_other_files_are_refused_in_one_line():
    float_graph = tflite_graph({"in": IMAGE, "out": SCORES}, [("RESHAPE", ["in"], ["out"])], dtype=schema.TensorType.FLOAT32)
    with pytest.raises(DeviceError, match="Vela compiles int8 only"):
        check_int8_classifier(float_graph)
    mnist = tflite_graph({"in": (1, 28, 28, 1), "out": SCORES}, [("RESHAPE", ["in"], ["out"])])
    with pytest.raises(DeviceError, match=r"input shape \(1, 28, 28, 1\)"):
        check_int8_classifier(mnist)
    with pytest.raises(DeviceError, match="not a TFLite model"):
        plan_arena(b"0123456789")


def test_vela_compiles_resnet8_with_every_op_on_the_npu():
    figures = vela_compile(RESNET8.read_bytes(), "ethos-u55-128")
    # Vela 5.2.0 at Ethos_U55_High_End_Embedded: 50.62 KiB SRAM, 77.39 KiB flash, 0.403 ms.
    assert figures.system_config == "Ethos_U55_High_End_Embedded"
    assert figures.sram_bytes == 51_840 and figures.offchip_bytes == 79_248 and figures.offchip_area == "Off-chip Flash"
    assert figures.all_on_npu and figures.npu_ops == 42
    assert figures.inference_ms == pytest.approx(0.403, abs=0.001)


@pytest.mark.slow
def test_vela_reports_an_op_that_falls_back_to_the_cpu():
    import tensorflow as tf
    import tf_keras as keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.Lambda(lambda t: tf.math.cumsum(t, axis=1))(x)  # CUMSUM: no Ethos-U55 kernel
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, outputs))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([np.random.default_rng(i).random((1, 32, 32, 3), np.float32)] for i in range(8))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    figures = vela_compile(converter.convert(), "ethos-u55-128")
    assert figures.cpu_ops > 0 and not figures.all_on_npu


def test_footprint_device_prints_ours_beside_the_peers_and_refuses_a_float_model(tmp_path):
    ours = tmp_path / "ours.tflite"
    ours.write_bytes(RESNET8.read_bytes())
    result = run_cli("tfdense", "footprint", "--device", str(ours), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ours.tflite") or "(MLPerf Tiny)" in line]
    assert len(rows) == 3 and "| 49,152 |" in rows[0]  # ResNet-8: three 32x32x16 maps of its first residual block
    bad = {
        "float.tflite": (tflite_graph({"in": IMAGE, "out": SCORES}, [("RESHAPE", ["in"], ["out"])], dtype=schema.TensorType.FLOAT32), "Vela compiles int8 only"),
        "mnist.tflite": (tflite_graph({"in": (1, 28, 28, 1), "out": SCORES}, [("RESHAPE", ["in"], ["out"])]), "expected (1, 32, 32, 3)"),
        "text.tflite": (b"not a model at all", "not a TFLite model"),
    }
    for name, (content, message) in bad.items():
        (tmp_path / name).write_bytes(content)
        result = run_cli("tfdense", "footprint", "--device", str(tmp_path / name), timeout=300)
        assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and message in result.stderr, (name, result.stderr)
