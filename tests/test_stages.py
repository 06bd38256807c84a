"""Each stage in-process on a tiny model and a few dozen synthetic images: a failure names the stage."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from tfdense import fitting
from tfdense.distillation import TeacherEnsemble, load_teacher
from tfdense.config import PRESETS, DataConfig, DenseNetConfig, EvaluateConfig, ExportConfig, PruneConfig, QatConfig, TrainConfig
from tfdense.data import Cifar
from tfdense.litert import TFLiteClassifier, graph_stats, kernel_scale_counts
from tfdense.rundir import RunDir, RunDirError
from tfdense.stages import evaluation, export, pruning, quantization, training

CONFIG = dataclasses.replace(
    PRESETS["smoke"],
    model=DenseNetConfig(name="tiny", stem_filters=8, block_layers=(1, 1), growth_rate=4, bottleneck=8),
    data=DataConfig(train_subset=0),
    train=TrainConfig(epochs=2, batch_size=16, warmup_epochs=0.5, verbose=0),
    prune=PruneConfig(epochs=1, frequency=2, target_sparsity=0.5, ramp_fraction=0.5),
    qat=QatConfig(epochs=1, calibration_images=16, shared_concat_ranges=True),
    export=ExportConfig(calibration_images=8),
    evaluate=EvaluateConfig(latency_images=5),
)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    # Learnable: the class sets the mean brightness of the image.
    y = rng.integers(0, 10, 96).astype(np.uint8)
    x = np.clip(rng.normal(y[:, None, None, None] * 25.0, 20.0, (96, 32, 32, 3)), 0, 255).astype(np.uint8)
    return Cifar(x_train=x[:64], y_train=y[:64], x_val=x[64:], y_val=y[64:])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run_dir = RunDir(tmp_path_factory.mktemp("stages") / "run")
    run_dir.open(CONFIG, "test")
    return run_dir


@pytest.fixture(scope="module")
def trained(run_dir, data):
    return training.run(None, data, CONFIG, run_dir)


@pytest.fixture(scope="module")
def pruned(run_dir, data, trained):
    return pruning.run(training.load(run_dir), data, CONFIG, run_dir)


@pytest.fixture(scope="module")
def quantized(run_dir, data, pruned):
    return quantization.run(pruning.load(run_dir), data, CONFIG, run_dir)


@pytest.fixture(scope="module")
def exported(run_dir, data, quantized):
    return export.run(quantization.load(run_dir), data, CONFIG, run_dir)


def test_train_stage_keeps_the_best_epoch_and_removes_its_backup(run_dir, trained):
    model, metrics = trained
    history = fitting.read_history(run_dir.history("train"))
    assert [r["epoch"] for r in history] == [1, 2]
    assert metrics.best_epoch == max(history, key=lambda r: r["val_accuracy"])["epoch"]
    # stem 27*8 + block (1x1 8->8, 3x3 8->4) + transition 12->6 + block (6->8, 3x3 8->4) + classifier 10*10
    assert metrics.weights == 216 + 64 + 288 + 72 + 48 + 288 + 100
    assert metrics.macs == 351_332  # as the smoke model, whose MACs test_pipeline checks against the .tflite
    assert run_dir.model("train").exists() and not run_dir.backup("train").exists()
    assert json.loads(run_dir.stage_metrics("train").read_text()) == metrics.to_dict()


def test_prune_stage_zeroes_the_target_fraction_of_pruned_layers(pruned):
    _, metrics = pruned
    assert metrics.sparsity_within_tolerance, metrics.sparsity_misses
    assert metrics.per_layer_sparsity["stem_conv"] == 0.0 and metrics.per_layer_sparsity["predictions"] == 0.0
    assert metrics.per_layer_sparsity["conv2_block1_2_conv"] == pytest.approx(0.5, abs=0.02)


def test_channel_pruning_narrows_the_model_and_fine_tunes_it(tmp_path, data, trained):
    config = dataclasses.replace(CONFIG, prune=dataclasses.replace(CONFIG.prune, channel_fraction=0.5, target_sparsity=0.0))
    run_dir = RunDir(tmp_path / "run")
    run_dir.open(config, "test")
    model, metrics = pruning.run(trained[0], data, config, run_dir)
    assert metrics.weights < metrics.weights_before_slimming == trained[1].weights
    assert metrics.sparsity == 0.0 and metrics.slimmed_val_accuracy is not None
    assert model.get_layer("conv2_block1_2_conv").filters == CONFIG.model.growth_rate // 2
    assert pruning.load(run_dir).count_params() == model.count_params()


def test_a_new_run_adopts_the_trained_stage_of_a_run_with_the_same_recipe(tmp_path, run_dir, trained):
    channels = dataclasses.replace(CONFIG, prune=dataclasses.replace(CONFIG.prune, channel_fraction=0.5, target_sparsity=0.0))
    branch = RunDir(tmp_path / "branch")
    stages = branch.adoptable_stages(run_dir, channels)
    assert stages == ["train"]  # its prune settings differ, so only the trained model is shared
    branch.open(channels, "test")
    branch.adopt(run_dir, stages)
    assert branch.is_complete("train") and not branch.is_complete("prune")
    assert branch.model("train").read_bytes() == run_dir.model("train").read_bytes()
    assert json.loads(branch.config_file.read_text())["adopted"] == {"train": str(run_dir.path)}
    longer = dataclasses.replace(CONFIG, train=dataclasses.replace(CONFIG.train, epochs=3))
    with pytest.raises(RunDirError, match="train.epochs: saved 2, now 3"):
        RunDir(tmp_path / "other").adoptable_stages(run_dir, longer)


def test_a_warm_started_train_stage_begins_from_the_files_weights(tmp_path, data, trained):
    source = tmp_path / "start.h5"
    trained[0].save(str(source), include_optimizer=False)
    # A rate too small to move a kernel: what the fit returns is what it started from.
    config = dataclasses.replace(CONFIG, train=dataclasses.replace(CONFIG.train, epochs=1, learning_rate=1e-9, init_from=str(source)))
    paths = fitting.FitPaths(backup=tmp_path / "b", history=tmp_path / "h.csv", logs=tmp_path / "logs")
    model, _ = fitting.fit_config(config, data, paths)
    for name in ("stem_conv", "predictions"):
        np.testing.assert_allclose(model.get_layer(name).get_weights()[0], trained[0].get_layer(name).get_weights()[0], atol=1e-6)


def test_a_train_stage_of_zero_epochs_keeps_the_start_files_model_exactly(tmp_path, data, trained):
    source = tmp_path / "start.h5"
    trained[0].save(str(source), include_optimizer=False)
    config = dataclasses.replace(CONFIG, train=dataclasses.replace(CONFIG.train, epochs=0, warmup_epochs=0, init_from=str(source)))
    kept_dir = RunDir(tmp_path / "kept")
    kept_dir.open(config, "test")
    model, metrics = training.run(None, data, config, kept_dir)
    # BatchNorm's moving statistics too: an epoch at any rate would re-estimate them.
    for ours, theirs in zip(model.weights, trained[0].weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=ours.name)
    assert (metrics.epochs, metrics.train_seconds) == (0, 0.0)
    assert metrics.val_accuracy == trained[1].val_accuracy
    assert kept_dir.is_complete("train") and not kept_dir.history("train").exists()


def test_zero_train_epochs_need_a_model_to_start_from():
    from tfdense.config import ConfigError

    with pytest.raises(ConfigError, match="train.epochs must be >= 1 \\(0 only with train.init_from\\)"):
        TrainConfig(epochs=0, warmup_epochs=0)


def test_a_warm_start_from_another_architecture_names_the_first_layer_that_differs(tmp_path):
    from tfdense.config import ConfigError, check_paths
    from tfdense.model import build_densenet

    source = tmp_path / "wider.h5"
    build_densenet(dataclasses.replace(CONFIG.model, stem_filters=12)).save(str(source), include_optimizer=False)
    with pytest.raises(ConfigError, match="layer 'stem_conv' has weights"):
        fitting.load_init_weights(build_densenet(CONFIG.model), str(source))
    missing = dataclasses.replace(CONFIG, train=dataclasses.replace(CONFIG.train, init_from=str(tmp_path / "none.h5")))
    with pytest.raises(ConfigError, match="train.init_from names no such file"):
        check_paths(missing)


def test_prune_and_qat_distil_from_the_model_they_start_from_when_asked(tmp_path, run_dir, data, trained):
    config = dataclasses.replace(
        CONFIG, prune=dataclasses.replace(CONFIG.prune, distill=True), qat=dataclasses.replace(CONFIG.qat, distill=True)
    )
    branch = RunDir(tmp_path / "distilled")
    branch.open(config, "test")
    branch.adopt(run_dir, ["train"])
    _, prune_metrics = pruning.run(training.load(branch), data, config, branch)
    _, qat_metrics = quantization.run(pruning.load(branch), data, config, branch)
    for stage in ("prune", "qat"):
        history = fitting.read_history(branch.history(stage))
        assert history and all(r["distill_loss"] > 0 for r in history), stage
    # Distillation changes the loss, not what the stages guarantee.
    assert prune_metrics.sparsity_within_tolerance, prune_metrics.sparsity_misses
    assert qat_metrics.sparsity == pytest.approx(prune_metrics.sparsity, abs=1e-3)
    plain = fitting.read_history(run_dir.history("train"))
    assert all("distill_loss" not in r for r in plain)


def test_prune_and_qat_distilling_from_the_train_teacher_read_the_views_it_cached(tmp_path, run_dir, data, trained, monkeypatch):
    from tfdense import distillation
    from tfdense.config import ConfigError, RunConfig

    monkeypatch.setenv("TFDENSE_CACHE", str(tmp_path / "cache"))
    train = dataclasses.replace(CONFIG.train, teacher=(str(run_dir.model("train")),), teacher_flip=True, teacher_views=2)
    config = dataclasses.replace(CONFIG, train=train,
                                 prune=dataclasses.replace(CONFIG.prune, distill=True, distill_from="teacher"),
                                 qat=dataclasses.replace(CONFIG.qat, distill=True, distill_from="teacher"))
    # What the train stage would have cached.
    distillation.teacher_views(train.teacher, True, data.x_train, config.data, 2, fitting.stage_seed(train.seed, "train"))
    (cached,) = (tmp_path / "cache" / "teacher_views").glob("*.npz")
    written = cached.stat().st_mtime_ns
    branch = RunDir(tmp_path / "distilled")
    branch.open(config, "test")
    branch.adopt(run_dir, ["train"])
    pruning.run(training.load(branch), data, config, branch)
    quantization.run(pruning.load(branch), data, config, branch)
    for stage in ("prune", "qat"):
        history = fitting.read_history(branch.history(stage))
        assert history and all(r["distill_loss"] > 0 for r in history), stage
    assert list((tmp_path / "cache" / "teacher_views").glob("*.npz")) == [cached] and cached.stat().st_mtime_ns == written

    with pytest.raises(ConfigError, match="prune.distill_from"):
        PruneConfig(distill_from="float")
    with pytest.raises(ConfigError, match="'teacher' needs train.teacher"):
        RunConfig(qat=dataclasses.replace(CONFIG.qat, distill=True, distill_from="teacher"))


def test_qat_stage_after_pruning_keeps_the_zeros(pruned, quantized):
    _, prune_metrics = pruned
    _, metrics = quantized
    assert metrics.scheme == "Default8BitPrunePreserveQuantizeScheme"
    assert metrics.sparsity == pytest.approx(prune_metrics.sparsity, abs=1e-3)
    assert metrics.calibrated_ranges > 5


def test_qat_stage_gives_each_block_one_range_and_the_int8_graph_no_requantization(run_dir, quantized, exported):
    from tfdense.cli.latency import graph_prefixes

    _, metrics = quantized
    # Block 1: the stem's ReLU (through its pool) and the concatenation; block 2: the
    # transition's ReLU (through its pool) and the concatenation.
    assert metrics.shared_ranges == 4
    ops = [p.op for p in graph_prefixes(run_dir.export_file("model_int8.tflite").read_bytes())]
    assert ops.count("CONCATENATION") == 2 and "QUANTIZE" not in ops, ops


def test_export_stage_writes_a_full_int8_model_taking_raw_pixels(run_dir, exported):
    _, metrics = exported
    content = run_dir.export_file("model_int8.tflite").read_bytes()
    model = TFLiteClassifier(content)
    assert model.input["quantization"] == (1.0, -128) and model.input["dtype"] == np.int8
    assert graph_stats(content).weight_bits == 8
    assert metrics.files["model_int8.tflite"] == len(content)
    assert run_dir.export_file("labels.txt").read_text().split()[0] == "airplane"


def test_evaluate_stage_measures_the_deployed_model_on_the_test_set(run_dir, data, exported, cifar10):
    model, _ = exported
    _, metrics = evaluation.run(model, data, CONFIG, run_dir)
    assert sum(map(sum, metrics.deployed.confusion_matrix)) == 10_000
    assert metrics.deployed.tflite_bytes == run_dir.export_file("model_int8.tflite").stat().st_size
    assert metrics.keras_weights == metrics.deployed.weights
    assert set(metrics.models) == {p.name for p in run_dir.tflite_files()}
    # RAM beside flash: the arena plan of the deployed file, and Vela's compile for both NPUs.
    from tfdense.device import ACCELERATORS, plan_arena

    assert metrics.deployed.arena_bytes == plan_arena(run_dir.export_file("model_int8.tflite").read_bytes()).arena_bytes > 3072
    assert set(metrics.deployed.npu) == set(ACCELERATORS) and all(f["cpu_ops"] == 0 for f in metrics.deployed.npu.values())
    assert metrics.models["model_float.tflite"].npu == {}  # Vela compiles int8 only


def test_ship_publishes_the_run_with_figures_measured_on_the_test_set(tmp_path, run_dir, exported, cifar10):
    from tfdense.cli import ship

    # A file shipped earlier: its latency is timed again beside the new ones and the peers.
    old = run_dir.export_file("model_int8.tflite").read_bytes()
    (tmp_path / "old_int8.tflite").write_bytes(old)
    earlier = {"test_accuracy": 0.5, "tflite_bytes": len(old), "latency_ms": -1.0, "peer_latency_ms": {}}
    (tmp_path / "metrics.json").write_text(json.dumps({"old_int8.tflite": earlier}))
    search = tmp_path / "searches" / "tiny"
    write_best_config(search, CONFIG.model, "7")
    assert ship.main([str(run_dir.path), "--name", "tiny_int8", "--out", str(tmp_path), "--latency-images", "5", "--latency-rounds", "2",
                      "--search", str(search)]) == 0
    registry = json.loads((tmp_path / "metrics.json").read_text())
    assert set(registry) == {"old_int8.tflite", "tiny_int8.tflite", "tiny_uint8.tflite"}
    assert registry["old_int8.tflite"]["test_accuracy"] == 0.5 and registry["old_int8.tflite"]["latency_ms"] > 0
    assert registry["old_int8.tflite"]["arena_bytes"] == registry["tiny_int8.tflite"]["arena_bytes"] > 0  # re-measured: the same file
    assert all(r["peer_latency_ms"] == registry["tiny_int8.tflite"]["peer_latency_ms"] for r in registry.values())
    figures = registry["tiny_int8.tflite"]
    assert figures["tflite_bytes"] == (tmp_path / "tiny_int8.tflite").stat().st_size
    assert (tmp_path / "tiny_int8.tflite").read_bytes() == run_dir.export_file("model_int8.tflite").read_bytes()
    assert figures["test_accuracy"] == registry["tiny_uint8.tflite"]["test_accuracy"]
    assert figures["training_seconds"] > 0 and set(figures["peer_latency_ms"]) == {"pretrainedResnet_quant.tflite", "pretrainedResnet_large_int8.tflite"}
    assert "tiny_int8[] = {" in (tmp_path / "tiny_int8.cc").read_text().replace("\n", " ")
    assert (tmp_path / "tiny_int8_float.h5").exists() and (tmp_path / "accuracy_vs_bytes.png").stat().st_size > 10_000
    assert (tmp_path / "accuracy_vs_arena.png").stat().st_size > 10_000 and figures["npu"]["ethos-u55-128"]["sram_bytes"] > 0
    shipped = (tmp_path / "tiny_int8.yaml").read_text()
    assert shipped.startswith("# Reproduces tiny_int8.tflite") and "growth_rate: 4" in shipped
    assert f"# Architecture chosen by the keras-tuner search {search.as_posix()} (trial 7)" in shipped
    assert figures["search"] == registry["tiny_uint8.tflite"]["search"] == f"{search.as_posix()} (trial 7)"


def test_ship_names_the_stages_a_run_skipped_in_its_reproduce_command(tmp_path):
    from tfdense.cli.ship import reproduce_command
    from tfdense.rundir import STAGES, RunDir

    run = RunDir(tmp_path / "run")
    for stage in STAGES:
        if stage != "prune":
            run.write_stage_metrics(stage, {})
    assert reproduce_command(run, "m_int8") == "python -m tfdense.train --config exports/m_int8.yaml --stages train,qat,export,evaluate"
    run.write_stage_metrics("prune", {})
    assert reproduce_command(run, "m_int8") == "python -m tfdense.train --config exports/m_int8.yaml"


def write_best_config(folder, model, trial_id):
    import yaml

    folder.mkdir(parents=True)
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(model).items()}
    (folder / "best_config.yaml").write_text(f"# Chosen by the search in this folder: trial {trial_id}, val accuracy 0.5\n" + yaml.safe_dump({"model": fields}))


def test_ship_refuses_a_search_that_did_not_choose_the_runs_model(tmp_path, run_dir, exported, capsys):
    from tfdense.cli import ship

    write_best_config(tmp_path / "search", dataclasses.replace(CONFIG.model, growth_rate=6), "3")
    out = tmp_path / "exports"
    assert ship.main([str(run_dir.path), "--name", "tiny_int8", "--out", str(out), "--search", str(tmp_path / "search")]) == 2
    assert "model.growth_rate differ" in capsys.readouterr().err and not out.exists()
    assert ship.main([str(run_dir.path), "--name", "tiny_int8", "--out", str(out), "--search", str(tmp_path / "nowhere")]) == 2
    assert "best_config.yaml is missing" in capsys.readouterr().err


def test_ship_refuses_a_run_without_an_export(tmp_path, capsys):
    from tfdense.cli import ship

    assert ship.main([str(tmp_path), "--name", "model_int8"]) == 2
    assert "run the export stage" in capsys.readouterr().err


@pytest.mark.parametrize("field", ["teacher", "init_from"])
def test_ship_refuses_to_replace_a_float_model_that_a_shipped_config_distils_or_starts_from(tmp_path, run_dir, exported, field):
    from tfdense.cli import ship

    teacher = tmp_path / "tiny_int8_float.h5"
    teacher.write_bytes(b"the teacher")
    (tmp_path / "student_int8.yaml").write_text(f"train:\n  {field}: {teacher}\n")
    assert ship.main([str(run_dir.path), "--name", "tiny_int8", "--out", str(tmp_path)]) == 2
    assert teacher.read_bytes() == b"the teacher" and not (tmp_path / "tiny_int8.tflite").exists()


def test_evaluate_without_an_export_names_the_missing_stage(tmp_path, data):
    run_dir = RunDir(tmp_path / "run")
    run_dir.open(CONFIG, "test")
    with pytest.raises(RunDirError, match="run the export stage first"):
        evaluation.run(None, data, CONFIG, run_dir)


@pytest.mark.parametrize("distil", [False, True], ids=["alone", "distilling"])
def test_weight_average_is_what_validation_scores_and_what_is_kept(tmp_path, data, trained, distil, monkeypatch):
    import tf_keras as keras

    from tfdense.model import build_densenet

    teacher = ()
    if distil:  # the optimizer then averages the student's weights inside the Distiller
        teacher = (str(tmp_path / "teacher.h5"),)
        trained[0].save(teacher[0], include_optimizer=False)
    config = dataclasses.replace(CONFIG, train=dataclasses.replace(CONFIG.train, ema_momentum=0.9, teacher=teacher))
    recipe = fitting.Recipe.for_stage(config, "train")
    paths = fitting.FitPaths(backup=tmp_path / "b", history=tmp_path / "h.csv", logs=tmp_path / "logs")
    # Record the model fit compiles (the Distiller, when distilling): it holds the optimizer.
    compiled, real_compile = [], fitting.compile_model

    def recording_compile(model, *args):
        compiled.append(model)
        return real_compile(model, *args)

    monkeypatch.setattr(fitting, "compile_model", recording_compile)
    model, _ = fitting.fit(lambda: build_densenet(config.model), data, config.data, recipe, paths)
    assert compiled[0].optimizer.use_ema and (compiled[0] is not model) == distil
    last = fitting.read_history(paths.history)[-1]
    # After fit the model holds the average; the last epoch's validation loss was computed on it.
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.train.label_smoothing)
    probs = model.predict(data.x_val.astype(np.float32), verbose=0)
    assert float(loss(keras.utils.to_categorical(data.y_val, 10), probs)) == pytest.approx(last["val_loss"], rel=1e-4)


def test_weight_average_forgets_the_initial_weights_within_a_hundred_steps():
    import tensorflow as tf

    # A weight that climbs 1 per step from 0: Keras' fixed 0.999 average would still sit near
    # 5 after 100 steps (the zero start weighs 90 %); the warmed-up one trails by ~10 steps.
    w = tf.Variable([0.0])
    optimizer = fitting.AveragingSGD(learning_rate=1.0, use_ema=True, ema_momentum=0.999)
    for _ in range(100):
        optimizer.apply_gradients([(tf.constant([-1.0]), w)])
    w_live = float(w.numpy()[0])
    optimizer.finalize_variable_values([w])
    assert w_live == 100.0 and 80.0 < float(w.numpy()[0]) < 100.0


def test_weight_average_swaps_batchnorm_statistics_with_the_weights():
    import tf_keras as keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization(momentum=0.0)])
    statistics = fitting.batchnorm_statistics(model)
    model.compile(optimizer=fitting.AveragingSGD(statistics, learning_rate=0.1, use_ema=True, ema_momentum=0.999), loss="mse")
    rng = np.random.default_rng(0)
    for scale in (1.0, 1.0, 1.0, 50.0):  # the last batch moves the live statistics far from their average
        model.train_on_batch(rng.normal(0.0, scale, (8, 4)).astype(np.float32), np.zeros((8, 3), np.float32))
    live = [v.numpy() for v in statistics]
    swap = fitting.AveragedWeights(model)
    swap.swap_in()
    averaged = [v.numpy() for v in statistics]
    assert not np.allclose(averaged[1], live[1])
    np.testing.assert_allclose(averaged[1], model.optimizer._statistics_average[1].numpy())
    swap.swap_out()
    for v, value in zip(statistics, live):
        np.testing.assert_array_equal(v.numpy(), value)


@pytest.mark.parametrize("ensemble", [False, True], ids=["one_teacher", "two_teachers_and_their_mirrors"])
def test_distillation_trains_the_student_against_a_saved_teacher(tmp_path, data, trained, ensemble):
    teacher_model, _ = trained
    teacher_path = tmp_path / "teacher.h5"
    teacher_model.save(str(teacher_path), include_optimizer=False)
    teachers = (str(teacher_path),) * (2 if ensemble else 1)
    train_config = dataclasses.replace(CONFIG.train, teacher=teachers, teacher_flip=ensemble, distill_alpha=0.7, distill_temperature=2.0)
    config = dataclasses.replace(CONFIG, model=dataclasses.replace(CONFIG.model, growth_rate=2), train=train_config)
    paths = fitting.FitPaths(backup=tmp_path / "b", history=tmp_path / "h.csv", logs=tmp_path / "logs", best_weights=tmp_path / "best.h5")
    from tfdense.model import build_densenet

    student, summary = fitting.fit(lambda: build_densenet(config.model), data, config.data, fitting.Recipe.for_stage(config, "train"), paths)
    history = fitting.read_history(paths.history)
    assert all(r["distill_loss"] > 0 for r in history) and summary.epochs == 2
    assert student.name == "tiny" and student.count_params() < teacher_model.count_params()
    # The teacher is untouched by the student's training.
    for a, b in zip(teacher_model.get_weights(), fitting.keras.models.load_model(str(teacher_path), compile=False).get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # The resume checkpoint holds the student and its optimizer, not the teacher's variables.
    import tensorflow as tf

    saved = [name for name, _ in tf.train.list_variables(tf.train.latest_checkpoint(str(paths.backup / "chief")))]
    assert any("student" in name for name in saved) and not any("teacher" in name for name in saved), saved


def test_a_distilled_fit_resumes_with_the_optimizer_state_it_saved(tmp_path, data, trained):
    import tf_keras as keras

    from tfdense.model import build_densenet

    class OptimizerState(keras.callbacks.Callback):
        """The optimizer's variables at the end of a fit and before the first step of the next."""

        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0 and not hasattr(self, "at_start"):
                self.at_start = {v.name: v.numpy() for v in self.model.optimizer.variables}

        def on_train_end(self, logs=None):
            self.at_end = {v.name: v.numpy() for v in self.model.optimizer.variables}

    teacher_path = tmp_path / "teacher.h5"
    trained[0].save(str(teacher_path), include_optimizer=False)
    config = dataclasses.replace(CONFIG, train=dataclasses.replace(CONFIG.train, teacher=(str(teacher_path),)))
    paths = fitting.FitPaths(backup=tmp_path / "b", history=tmp_path / "h.csv", logs=tmp_path / "logs")
    recipe = fitting.Recipe.for_stage(config, "train")
    first, second = OptimizerState(), OptimizerState()
    fitting.fit(lambda: build_densenet(config.model), data, config.data, dataclasses.replace(recipe, epochs=1), paths, callbacks=[first])
    fitting.fit(lambda: build_densenet(config.model), data, config.data, recipe, paths, callbacks=[second])
    # The resumed epoch's first step starts from the momentum and step count the first fit saved.
    assert len(first.at_end) > 1 and set(second.at_start) == set(first.at_end)
    for name, value in first.at_end.items():
        np.testing.assert_array_equal(second.at_start[name], value, err_msg=name)


def test_a_teacher_ensemble_predicts_the_geometric_mean_of_its_members_and_their_mirrors(tmp_path, data):
    import tf_keras as keras

    from tfdense.model import build_densenet

    files = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        member = build_densenet(CONFIG.model)
        files.append(str(tmp_path / f"member{seed}.h5"))
        member.save(files[-1], include_optimizer=False)
    x = data.x_val[:8].astype(np.float32)
    members = [keras.models.load_model(f, compile=False) for f in files]
    views = [m.predict(v, verbose=0) for m in members for v in (x, x[:, :, ::-1])]
    expected = np.exp(np.mean(np.log(views), axis=0))
    expected /= expected.sum(axis=1, keepdims=True)
    ensemble = load_teacher(tuple(files), flip=True)
    np.testing.assert_allclose(ensemble(x).numpy(), expected, rtol=1e-4, atol=1e-6)
    # Without the mirror, the members' views alone.
    plain = np.exp(np.mean(np.log(views[::2]), axis=0))
    np.testing.assert_allclose(load_teacher(tuple(files))(x).numpy(), plain / plain.sum(axis=1, keepdims=True), rtol=1e-4, atol=1e-6)
    # One file without the mirror is the saved model itself, so runs begun before ensembles resume.
    single = load_teacher(tuple(files[:1]))
    assert single.name == members[0].name and not isinstance(single, TeacherEnsemble)
    np.testing.assert_allclose(single(x).numpy(), views[0], rtol=1e-5, atol=1e-6)


def _every_stage_to_export(tmp_path, data, config):
    """A fresh run of `config` through train, prune, qat and export: (run dir, prune metrics, (QAT model, its metrics))."""
    run_dir = RunDir(tmp_path / "run")
    run_dir.open(config, "test")
    training.run(None, data, config, run_dir)
    _, prune_metrics = pruning.run(training.load(run_dir), data, config, run_dir)
    qat = quantization.run(pruning.load(run_dir), data, config, run_dir)
    export.run(quantization.load(run_dir), data, config, run_dir)
    return run_dir, prune_metrics, qat


def test_a_depthwise_densenet_at_32x32_keeps_its_depthwise_ops_and_zeros_through_every_stage(tmp_path, data):
    from tfdense.cli.latency import graph_prefixes

    # The ninety search's family (tuning/space.py): whitened stride-1 stem without a pool, dense
    # layers 1x1 -> depthwise 3x3 -> 1x1, max-first transitions.
    model = dataclasses.replace(
        CONFIG.model, stem_stride=1, stem_pool=False, stem_init="whiten", depthwise=True, transition_pool="max_first"
    )
    run_dir, prune_metrics, (_, qat_metrics) = _every_stage_to_export(tmp_path, data, dataclasses.replace(CONFIG, model=model))

    assert prune_metrics.sparsity_within_tolerance, prune_metrics.sparsity_misses
    assert prune_metrics.per_layer_sparsity["conv2_block1_1_conv"] == pytest.approx(0.5, abs=0.02)
    assert qat_metrics.sparsity == pytest.approx(prune_metrics.sparsity, abs=1e-3)
    content = run_dir.export_file("model_int8.tflite").read_bytes()
    ops = [p.op for p in graph_prefixes(content)]
    # One depthwise op per dense layer, its BN folded; the shared ranges leave no requantization.
    assert ops.count("DEPTHWISE_CONV_2D") == sum(model.block_layers), ops
    assert "QUANTIZE" not in ops and "DEQUANTIZE" not in ops, ops
    assert graph_stats(content).weight_bits == 8


def test_per_tensor_qat_keeps_the_zeros_and_converts_to_the_model_it_trained(tmp_path, data):
    config = dataclasses.replace(CONFIG, qat=dataclasses.replace(CONFIG.qat, per_channel=False))
    run_dir, prune_metrics, (quantized, metrics) = _every_stage_to_export(tmp_path, data, config)

    assert not metrics.per_channel and metrics.shared_ranges == 4
    assert metrics.scheme == "PerTensorPrunePreserveQuantizeScheme"
    assert metrics.sparsity == pytest.approx(prune_metrics.sparsity, abs=1e-3)
    content = run_dir.export_file("model_int8.tflite").read_bytes()
    assert set(kernel_scale_counts(content)) == {1}
    # The QAT model's outputs are what the int8 file computes, to an output step or two: not
    # so when kernels are quantized per tensor before their BatchNorm is folded in.
    expected = quantized.predict(data.x_val.astype(np.float32), verbose=0)
    np.testing.assert_allclose(TFLiteClassifier(content).scores(data.x_val), expected, atol=3 / 256)
