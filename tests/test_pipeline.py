"""The whole pipeline on the smoke preset: prune -> PQAT -> full-int8 export -> LiteRT evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_cli
from tfdense.config import PRESETS
from tfdense.litert import graph_stats
from tfdense.cli.report import pruning_curves
from tfdense.rundir import RunDir

pytestmark = pytest.mark.slow


def test_every_stage_writes_metrics_and_the_final_keys(smoke_run):
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    assert list(metrics["stages"]) == ["train", "prune", "qat", "export", "evaluate"]
    for key in ("test_accuracy", "tflite_bytes", "gzip_bytes", "weights", "nonzero_weights", "macs", "imt_score", "latency_ms"):
        assert key in metrics, key
    assert metrics["tflite_bytes"] == (smoke_run / "model_int8.tflite").stat().st_size
    assert 0 < metrics["gzip_bytes"] < metrics["tflite_bytes"]
    for name in ("model_int8.tflite", "model_uint8.tflite", "model_float.tflite", "model_unpruned_float.tflite", "model_ptq_int8.tflite", "labels.txt",
                 "model_int8.cc", "model_int8.h"):
        assert (smoke_run / name).exists(), name
    assert (smoke_run / "labels.txt").read_text().split() [:2] == ["airplane", "automobile"]


def test_train_stage_reports_validation_figures_and_keeps_its_models(smoke_run):
    train = json.loads((smoke_run / "metrics.json").read_text())["stages"]["train"]
    for key in ("val_accuracy", "weights", "params", "macs", "seconds_per_epoch", "train_img_per_s"):
        assert key in train, key
    assert train["val_accuracy"] > 0.15  # 10 % is chance; 2 epochs of the tiny model on real data get ~20 %
    assert train["epochs"] == PRESETS["smoke"].train.epochs
    saved = json.loads((smoke_run / "config.json").read_text())
    assert saved["preset"] == "smoke" and saved["config"]["model"]["growth_rate"] == 4
    assert (smoke_run / "train" / "best.weights.h5").exists() and (smoke_run / "train" / "model.h5").exists()
    assert any((smoke_run / "logs" / "train").rglob("events.out.tfevents.*"))


def test_export_is_full_int8_taking_raw_pixels(smoke_run):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(smoke_run / "model_int8.tflite"))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    assert inp["quantization"] == (1.0, -128)
    # Every conv/dense kernel is stored as int8.
    assert graph_stats(smoke_run / "model_int8.tflite").weight_bits == 8


def test_prune_reaches_target_sparsity_per_layer(smoke_run):
    prune = json.loads((smoke_run / "prune" / "metrics.json").read_text())
    assert prune["sparsity_within_tolerance"], prune["sparsity_misses"]
    per_layer = prune["per_layer_sparsity"]
    assert per_layer["stem_conv"] == 0.0 and per_layer["predictions"] == 0.0  # kept dense
    assert all(abs(v - 0.5) <= 0.015 for k, v in per_layer.items() if k not in ("stem_conv", "predictions"))


def test_sparsity_survives_pqat_into_the_int8_file(smoke_run):
    prune = json.loads((smoke_run / "prune" / "metrics.json").read_text())
    qat = json.loads((smoke_run / "qat" / "metrics.json").read_text())
    assert qat["scheme"] == "Default8BitPrunePreserveQuantizeScheme"
    assert qat["sparsity"] == pytest.approx(prune["sparsity"], abs=1e-3)
    stats = graph_stats(smoke_run / "model_int8.tflite")
    # int8 rounding may zero a few more tiny weights, never revive pruned ones.
    assert 0.98 * prune["nonzero_weights"] <= stats.nonzero_weights <= prune["nonzero_weights"]


def test_keras_and_tflite_counts_agree(smoke_run):
    evaluate = json.loads((smoke_run / "evaluate" / "metrics.json").read_text())
    assert evaluate["keras_macs"] == evaluate["deployed"]["macs"] == 351_332  # the smoke model's hand-checked MACs
    assert evaluate["keras_weights"] == evaluate["deployed"]["weights"]


def test_only_the_evaluate_stage_reports_test_accuracy(smoke_run):
    for stage in ("train", "prune", "qat", "export"):
        assert "test_accuracy" not in (smoke_run / stage / "metrics.json").read_text(), stage
    assert "test_accuracy" in json.loads((smoke_run / "evaluate" / "metrics.json").read_text())["deployed"]


def test_sparse_encoding_is_kept_only_when_smaller(smoke_run):
    files = json.loads((smoke_run / "export" / "metrics.json").read_text())["files"]
    sparse = smoke_run / "model_int8_sparse.tflite"
    assert sparse.exists() == ("model_int8_sparse.tflite" in files)
    if sparse.exists():
        assert sparse.stat().st_size < (smoke_run / "model_int8.tflite").stat().st_size


def test_tensorboard_events_hold_the_pruning_curves(smoke_run):
    curves = pruning_curves(RunDir(smoke_run))
    assert "conv2_block1_2_conv" in curves and "stem_conv" not in curves
    points = curves["conv2_block1_2_conv"]
    assert len(points) >= 4, points
    assert points[0][1] == pytest.approx(0.0, abs=0.01) and points[-1][1] == pytest.approx(0.5, abs=0.01)
    assert all(b[1] >= a[1] for a, b in zip(points, points[1:]))  # the ramp only rises


def test_int8_tflite_agrees_with_the_qat_keras_model(smoke_run):
    evaluate = json.loads((smoke_run / "evaluate" / "metrics.json").read_text())
    # The smoke model is barely trained (near-tied scores flip under rounding); the quick
    # preset's figure is in the README.
    assert evaluate["agreement_with_keras"] >= 0.9


def test_completed_stages_are_skipped_on_rerun_with_settings_that_do_not_change_results(smoke_run):
    before = (smoke_run / "model_int8.tflite").stat().st_mtime_ns
    (hparams_events,) = (smoke_run / "logs" / "hparams").glob("events.out.tfevents.*")
    hparams_bytes = hparams_events.read_bytes()
    result = run_cli("tfdense.train", "--preset", "smoke", "--out", str(smoke_run), "--set", "train.verbose=0", "--set", "evaluate.threads=2", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("complete, skipped") == 5
    assert (smoke_run / "model_int8.tflite").stat().st_mtime_ns == before
    # a committed run directory must not churn when it is merely rerun
    assert list((smoke_run / "logs" / "hparams").glob("events.out.tfevents.*")) == [hparams_events]
    assert hparams_events.read_bytes() == hparams_bytes


def test_hparams_record_is_rewritten_only_when_its_content_changes(tmp_path):
    from tfdense.hparams import log_hparams

    log_hparams(tmp_path, {"train.epochs": 3}, {"test_accuracy": 0.5}, session="run")
    (first,) = tmp_path.glob("events.out.tfevents.*")
    log_hparams(tmp_path, {"train.epochs": 3}, {"test_accuracy": 0.5}, session="run")
    assert list(tmp_path.glob("events.out.tfevents.*")) == [first]
    log_hparams(tmp_path, {"train.epochs": 3}, {"test_accuracy": 0.6}, session="run")
    (second,) = tmp_path.glob("events.out.tfevents.*")
    assert second != first and json.loads((tmp_path / "record.json").read_text())["metrics"] == {"test_accuracy": 0.6}


def test_rerun_with_a_setting_that_changes_results_is_refused(smoke_run):
    saved = (smoke_run / "config.json").read_text()
    epochs = PRESETS["smoke"].train.epochs
    result = run_cli("tfdense.train", "--preset", "smoke", "--out", str(smoke_run), "--set", f"train.epochs={epochs + 1}", timeout=120)
    assert result.returncode == 2 and f"train.epochs: saved {epochs}, now {epochs + 1}" in result.stderr, result.stderr[-2000:]
    assert (smoke_run / "config.json").read_text() == saved


def test_report_refuses_a_directory_without_a_run(tmp_path):
    result = run_cli("tfdense", "report", str(tmp_path), "--out", str(tmp_path / "r"), timeout=120)
    assert result.returncode == 2 and "holds no exported run" in result.stderr


def test_report_writes_table_and_plots(smoke_run, tmp_path):
    result = run_cli("tfdense", "report", str(smoke_run), "--out", str(tmp_path / "report"), "--latency-images", "20", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| QAT int8 (deployed) |" in text and "| prune (float32) |" in text
    assert "![validation accuracy per epoch](validation_curves.png)" in text
    for png in ("accuracy_vs_bytes.png", "accuracy_vs_macs.png", "pruning_curves.png", "validation_curves.png"):
        assert (tmp_path / "report" / png).read_bytes()[:4] == b"\x89PNG"


def test_run_logs_its_config_and_figures_for_the_hparams_dashboard(smoke_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    (events,) = (smoke_run / "logs" / "hparams").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"tensors": 0})
    acc.Reload()
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["model.growth_rate"].number_value == 4 and hparams["prune.target_sparsity"].number_value == 0.5
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    logged = {tag: float(tf.make_ndarray(acc.Tensors(tag)[0].tensor_proto)) for tag in acc.Tags()["tensors"] if not tag.startswith("_hparams_")}
    assert logged["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert logged["tflite_bytes"] == metrics["tflite_bytes"] and "train_val_accuracy" in logged
