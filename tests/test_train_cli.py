"""`python -m tfdense.train`: resume after SIGKILL, bad input, ablation arms (the smoke run itself is checked in test_pipeline)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, run_cli
from tfdense.config import PRESETS, apply_overrides
from tfdense.files import read_history
from tfdense.fitting import WarmupDecay


@pytest.mark.slow
def test_run_killed_mid_training_resumes_from_last_epoch(tmp_path, cifar10):
    out = tmp_path / "run"
    epochs = 4
    # Only the train stage: resuming is the train stage's job, and the later stages would double
    # the test's time without checking anything about it.
    command = [sys.executable, "-m", "tfdense.train", "--preset", "smoke", "--out", str(out), "--set", f"train.epochs={epochs}", "--stages", "train"]
    history = out / "train" / "history.csv"
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(read_history(history)) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(read_history(history))
    assert 2 <= done_before < epochs, "the kill must land mid-run"

    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming run" in result.stderr
    rows = read_history(history)
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    # The learning rate follows the schedule across the kill: the optimizer's step counter
    # (and with it the schedule position) was restored, not restarted.
    steps = PRESETS["smoke"].data.train_subset // PRESETS["smoke"].train.batch_size
    train = PRESETS["smoke"].train
    schedule = WarmupDecay(train.learning_rate, round(train.warmup_epochs * steps), epochs * steps)
    for row in rows:
        assert row["lr"] == pytest.approx(float(schedule(row["epoch"] * steps - 1)), rel=1e-4, abs=1e-7)
    # Training went on from the restored weights: the resumed epochs do not start over.
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert not (out / "train" / "backup").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--set", "train.epochz=3"], "unknown config key 'train.epochz'"),
        (["--set", "train.epochs=3.5"], "train.epochs must be an integer"),
        (["--set", "train.epochs=-2"], "train.epochs must be >= 1"),
        (["--set", "model.growth_rate=0"], "model.growth_rate must be >= 1"),
        (["--set", "prune.target_sparsity=1"], "prune.target_sparsity must be in [0, 1)"),
        (["--stages", "train,distill"], "unknown stage(s) distill"),
        (["--from", "/nonexistent/run"], "--from /nonexistent/run is not a tfdense run"),
        (["--set", "train.teacher=/nope.h5"], "train.teacher names no such file: /nope.h5"),
        (["--data-dir", "/nonexistent/cifar"], "data.data_dir names no such file or folder: /nonexistent/cifar"),
    ],
)
def test_bad_command_line_fails_fast_with_one_line(tmp_path, args, message):
    result = run_cli("tfdense.train", "--preset", "smoke", "--out", str(tmp_path / "run"), *args, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_a_run_that_fails_before_its_first_epoch_leaves_no_directory_behind(tmp_path, cifar10):
    # The smoke preset trains on 2,000 images: a batch of 4,096 fails once the data is loaded.
    out = tmp_path / "run"
    result = run_cli("tfdense.train", "--preset", "smoke", "--out", str(out), "--set", "train.batch_size=4096", timeout=300)
    assert result.returncode == 2 and "train.batch_size 4096 exceeds the 2000 training images" in result.stderr
    assert not out.exists()
    result = run_cli("tfdense.train", "--preset", "smoke", "--out", str(out), "--stages", "train", "--set", "train.epochs=1", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]  # the corrected command is not refused


def test_unwritable_out_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_cli("tfdense.train", "--preset", "smoke", "--out", str(blocker / "run"), timeout=120)
    assert result.returncode == 2
    assert "cannot be created" in result.stderr


def test_existing_run_with_other_config_is_not_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    saved = {"preset": "smoke", "config": {"model": {"growth_rate": 99}}}
    (out / "config.json").write_text(json.dumps(saved))
    result = run_cli("tfdense.train", "--preset", "smoke", "--out", str(out), timeout=120)
    assert result.returncode == 2
    assert "holds a run with a different config" in result.stderr
    assert json.loads((out / "config.json").read_text()) == saved


def test_bad_command_line_is_refused_before_tensorflow_loads():
    start = time.perf_counter()
    result = run_cli("tfdense.train", "--preset", "nope", timeout=60)
    elapsed = time.perf_counter() - start
    assert result.returncode == 2 and "unknown preset 'nope'" in result.stderr
    probe = subprocess.run([sys.executable, "-c", "import sys, tfdense.train; print('tensorflow' in sys.modules)"],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "False"
    assert elapsed < 3.0, elapsed


def test_non_run_directory_is_not_overwritten(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = run_cli("tfdense.train", "--preset", "smoke", "--out", str(tmp_path), timeout=120)
    assert result.returncode == 2
    assert "not empty and holds no tfdense run" in result.stderr


@pytest.mark.slow
def test_stage_without_its_input_model_is_refused(tmp_path, cifar10):
    result = run_cli("tfdense.train", "--preset", "smoke", "--out", str(tmp_path / "run"), "--stages", "export", timeout=300)
    assert result.returncode == 2
    assert "run the qat stage first" in result.stderr


@pytest.mark.slow
def test_ablation_trains_each_arm_and_tabulates_the_differences(tmp_path, cifar10):
    out = tmp_path / "ablation"
    args = ["tfdense", "ablate", "--preset", "smoke", "--set", "train.epochs=1", "--set", "data.train_subset=500", "--out", str(out),
            "--arm", "base", "--arm", "ls0=train.label_smoothing=0.0"]
    result = run_cli(*args, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((out / "ablation.json").read_text())
    assert [r["arm"] for r in rows] == ["base", "ls0"] and rows[1]["overrides"] == ["train.label_smoothing=0.0"]
    saved = json.loads((out / "ls0" / "config.json").read_text())["config"]
    assert saved["train"]["label_smoothing"] == 0.0
    assert "| ls0 | train.label_smoothing=0.0 |" in (out / "ablation.md").read_text()
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    again = run_cli(*args, timeout=600)  # finished arms are skipped
    assert again.returncode == 0 and again.stderr.count("stage train: complete, skipped") == 2


def test_ablation_arm_splits_overrides_but_not_the_commas_of_a_list_value():
    from tfdense.config import parse_arm

    assert parse_arm("deep=model.block_layers=[6,6],model.growth_rate=10") == ("deep", ["model.block_layers=[6,6]", "model.growth_rate=10"])
    assert parse_arm("two=train.seed=1, data.cutout=8") == ("two", ["train.seed=1", "data.cutout=8"])
    assert parse_arm("base") == ("base", [])
    config = apply_overrides(PRESETS["smoke"], parse_arm("deep=model.block_layers=[6,6],model.growth_rate=10")[1])
    assert config.model.block_layers == (6, 6) and config.model.growth_rate == 10


def test_two_arms_of_one_name_are_refused():
    from tfdense.config import ConfigError, parse_arms

    assert parse_arms(["a", "b=train.seed=1"]) == [("a", []), ("b", ["train.seed=1"])]
    with pytest.raises(ConfigError, match="distinct"):
        parse_arms(["a", "a=train.seed=1"])


def test_ablation_refuses_a_bad_arm_before_any_work(tmp_path):
    result = run_cli("tfdense", "ablate", "--preset", "smoke", "--out", str(tmp_path / "a"), "--arm", "x=train.epochz=1", timeout=60)
    assert result.returncode == 2 and "unknown config key 'train.epochz'" in result.stderr
