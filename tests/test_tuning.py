"""`python -m tuning.search` on the tiny space: budgets, results, resume after SIGKILL, chief + workers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from tfdense.config import resolve
from tfdense.files import read_history

pytestmark = pytest.mark.slow

# Four candidates (growth 2 or 4, learning rate 0.05 or 0.1), 1 proxy epoch on 200 images.
TINY = ["--space", "tiny", "--preset", "smoke", "--epochs", "1", "--train-subset", "200", "--verbose", "0"]


def search_command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tuning.search", "--tuner", "random", "--max-trials", "4", "--out", str(out), *TINY, *extra]


def trials(out: Path) -> dict[str, dict]:
    return {t["trial_id"]: t for t in json.loads((out / "trials.json").read_text())["trials"]}


def test_over_budget_candidates_are_rejected_without_training(tmp_path, cifar10):
    out = tmp_path / "search"
    # growth 2 -> 532 weights, growth 4 -> 1,076: a 600-weight budget admits only growth 2.
    result = subprocess.run(search_command(out, "--max-weights", "600"), cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    records = trials(out)
    assert len(records) == 4
    for trial_id, record in records.items():
        history = out / "search" / f"trial_{trial_id}" / "history.csv"
        assert record["int8_bytes"] > record["weights"]  # every trial carries its predicted file size
        if record["hyperparameters"]["growth_rate"] == 4:
            assert record["status"] == "REJECTED" and record["message"] == "over budget: 1,076 weights > 600"
            assert "val_accuracy" not in record
            assert not history.exists()  # never trained
        else:
            assert record["status"] == "COMPLETED" and record["weights"] == 532 and 0 <= record["val_accuracy"] <= 1
            assert history.exists()
    best = (out / "best_config.yaml").read_text()
    assert "growth_rate: 2" in best
    # The winner is a config `python -m tfdense.train --config` accepts.
    assert resolve("smoke", str(out / "best_config.yaml")).model.growth_rate == 2
    summary = (out / "summary.md").read_text()
    assert "2 scored trials, 2 rejected or failed" in summary
    assert summary.count(" | 532 | ") == 2  # one table row per scored trial, weights in their column
    assert (out / "accuracy_vs_weights.png").read_bytes()[:4] == b"\x89PNG"
    assert any((out / "search" / "hparams").rglob("events.out.tfevents.*"))


def test_byte_budget_rejects_on_the_predicted_int8_size():
    from tfdense.config import DenseNetConfig
    from tuning.space import Budget, costs_of

    costs = costs_of(DenseNetConfig(name="tiny", stem_filters=8, block_layers=(1, 1), growth_rate=4, bottleneck=8))
    assert Budget(10**6, 10**9, max_bytes=costs.int8_bytes).violations(costs) == []
    assert Budget(10**6, 10**9, max_bytes=costs.int8_bytes - 1).violations(costs) == [
        f"{costs.int8_bytes:,} predicted int8 bytes > {costs.int8_bytes - 1:,}"
    ]


def test_a_per_tensor_candidate_is_held_to_the_byte_budget_at_its_smaller_predicted_size():
    from tfdense.config import DenseNetConfig
    from tfdense.costs import INT8_BYTES_PER_CHANNEL, INT8_BYTES_PER_CHANNEL_PER_TENSOR
    from tuning.space import Budget, costs_of

    model = DenseNetConfig(name="tiny", stem_filters=8, block_layers=(1, 1), growth_rate=4, bottleneck=8)
    per_channel, per_tensor = costs_of(model), costs_of(model, per_channel=False)
    channels = 8 + (8 + 4) + 6 + (8 + 4) + 10  # stem, dense layer (1x1, 3x3), transition (12 x 0.5), dense layer, classifier
    saved = (INT8_BYTES_PER_CHANNEL - INT8_BYTES_PER_CHANNEL_PER_TENSOR) * channels
    assert per_channel.int8_bytes - per_tensor.int8_bytes == pytest.approx(saved, abs=1)
    assert Budget(10**6, 10**9, max_bytes=per_tensor.int8_bytes).violations(per_tensor) == []
    assert Budget(10**6, 10**9, max_bytes=per_tensor.int8_bytes).violations(per_channel) != []


def test_latency_budget_rejects_a_candidate_timed_slower_than_allowed():
    from tfdense.config import DenseNetConfig
    from tuning.space import Budget, costs_of

    costs = costs_of(DenseNetConfig(name="tiny", stem_filters=8, block_layers=(1, 1), growth_rate=4, bottleneck=8))
    budget = Budget(10**6, 10**9, max_latency_ratio=1.0)
    assert budget.violations(costs) == []  # not timed yet: the counts alone pass
    assert budget.violations(costs, 0.8) == []
    assert budget.violations(costs, 1.25) == ["latency 1.25x the large ResNet's > 1.00x"]


def test_a_search_times_candidates_and_rejects_those_over_the_latency_budget(tmp_path, cifar10):
    out = tmp_path / "search"
    # A smoke-sized DenseNet runs far faster than the large ResNet, but not 1,000 times faster.
    result = subprocess.run(search_command(out, "--max-trials", "1", "--max-latency-ratio", "0.001"), cwd=REPO,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 1, result.stderr[-3000:]  # nothing scored
    (record,) = trials(out).values()
    assert record["status"] == "REJECTED" and 0.001 < record["latency_ratio"] < 1.0
    assert record["message"] == f"over budget: latency {record['latency_ratio']:.2f}x the large ResNet's > 0.00x"
    assert not (out / "search" / f"trial_{record['trial_id']}" / "history.csv").exists()  # never trained


def test_first_kernel_3_gives_the_32x32_block_a_3x3_kernel_and_its_absence_keeps_one_kernel():
    import keras_tuner as kt

    from tfdense.config import PRESETS
    from tuning.space import declare, to_config

    hp = kt.HyperParameters()
    declare(hp, "ninety")
    hp.values.update(kernel_size=5, first_kernel_3=True)
    assert to_config(hp, PRESETS["full"]).model.block_kernels == (3, 5, 5)
    # A trial recorded before the space had first_kernel_3 builds its default: one kernel.
    old = {k: v for k, v in hp.values.items() if k != "first_kernel_3"}
    hp = kt.HyperParameters()
    hp.values.update(old)
    declare(hp, "ninety")
    model = to_config(hp, PRESETS["full"]).model
    assert model.kernel_size == 5 and model.block_kernels == ()


def test_ninety_space_builds_depthwise_densenets_that_keep_32x32_and_a_whitened_stem():
    import keras_tuner as kt

    from tfdense.config import PRESETS
    from tuning.space import PROFILES, costs_of, declare, to_config

    hp = kt.HyperParameters()
    declare(hp, "ninety")
    model = to_config(hp, PRESETS["full"]).model  # every hyperparameter at its default
    assert model.depthwise and not model.stem_pool and model.stem_stride == 1
    assert model.stem_init == "whiten" and model.transition_pool == "max_first" and len(model.block_layers) == 3
    assert PROFILES["ninety"].violations(costs_of(model)) == []
    # The Bayesian oracle hands the boolean choice back as 0 or 1; the config stays boolean,
    # as the best_config.yaml a search writes must resolve.
    hp.values["depthwise"] = 0
    assert to_config(hp, PRESETS["full"]).model.depthwise is False
    hp.values["depthwise"] = 1
    assert to_config(hp, PRESETS["full"]).model.depthwise is True


def test_winner_is_the_best_trial_within_the_budget_even_if_a_bigger_one_scored_higher():
    from tuning.results import best_record
    from tuning.space import Budget

    def trial(trial_id, accuracy, int8_bytes):
        return {"trial_id": trial_id, "val_accuracy": accuracy, "weights": 60_000, "macs": 7_000_000, "int8_bytes": int8_bytes}

    # Trial 10 was scored before the byte budget existed: it stays in the results but cannot win.
    records = [trial("10", 0.61, 103_023), trial("13", 0.60, 77_948), trial("12", 0.59, 52_484), {"trial_id": "14", "status": "REJECTED"}]
    assert best_record(records, "accuracy", Budget(70_000, 12_500_000, max_bytes=98_496))["trial_id"] == "13"
    assert best_record(records, "accuracy", Budget(70_000, 12_500_000))["trial_id"] == "10"
    assert best_record(records, "accuracy", Budget(70_000, 12_500_000, max_bytes=50_000)) is None


def tiny_settings():
    """Search settings over the tiny space, for driving an oracle without training."""
    from tuning import space
    from tuning.tuner import Proxy, SearchSettings

    return SearchSettings(base=resolve("smoke", None, []), budget=space.Budget(10**6, 10**9), proxy=Proxy(1, 200), space="tiny")


@pytest.mark.parametrize("tuner", ["random", "bayesian", "hyperband"])
def test_search_state_files_are_replaced_whole_not_rewritten_in_place(tmp_path, tuner):
    # An in-place rewrite keeps the file's inode; a SIGKILL during it left an empty oracle.json.
    from tuning.tuner import TUNERS

    settings = tiny_settings()
    extra = {"max_epochs": 2} if tuner == "hyperband" else {"max_trials": 2}
    search = TUNERS[tuner](settings, tmp_path, **extra)
    trial = search.oracle.create_trial("tester")
    project = tmp_path / "search"
    files = [project / "oracle.json", project / f"{search.tuner_id}.json", project / f"trial_{trial.trial_id}" / "trial.json"]
    search.save()
    before = [f.stat().st_ino for f in files]
    search.oracle._save_trial(trial)
    search.save()
    assert all(f.stat().st_ino != inode for f, inode in zip(files, before))
    assert json.loads(files[0].read_text())["ongoing_trials"] == {"tester": trial.trial_id}
    assert not [p.name for p in project.rglob("*.tmp")]


def test_a_trial_the_oracle_never_recorded_is_retried_after_a_reload(tmp_path):
    # The kill window: trial_1/trial.json written, oracle.json still from before trial 1.
    from tuning.tuner import TUNERS

    settings = tiny_settings()
    search = TUNERS["random"](settings, tmp_path, max_trials=4)
    first = search.oracle.create_trial("tester")
    first.status = "COMPLETED"
    search.oracle.update_trial(first.trial_id, {"val_accuracy": 0.5})
    search.oracle.end_trial(first)
    search.save()
    before = (tmp_path / "search" / "oracle.json").read_text()
    orphan = search.oracle.create_trial("tester")
    (tmp_path / "search" / "oracle.json").write_text(before)

    reloaded = TUNERS["random"](settings, tmp_path, max_trials=4)
    assert reloaded.oracle.trials[orphan.trial_id].status == "RUNNING"
    retried = reloaded.oracle.create_trial("tester")
    assert retried.trial_id == orphan.trial_id and retried.hyperparameters.values == orphan.hyperparameters.values


def test_a_trial_that_ended_before_the_oracle_recorded_it_is_not_run_again(tmp_path):
    # The other window: trial_0/trial.json says COMPLETED, oracle.json still has it running.
    from tuning.tuner import TUNERS

    settings = tiny_settings()
    search = TUNERS["random"](settings, tmp_path, max_trials=4)
    trial = search.oracle.create_trial("tester")
    search.save()
    running = (tmp_path / "search" / "oracle.json").read_text()
    trial.status = "COMPLETED"
    search.oracle.update_trial(trial.trial_id, {"val_accuracy": 0.5})
    search.oracle.end_trial(trial)
    (tmp_path / "search" / "oracle.json").write_text(running)

    reloaded = TUNERS["random"](settings, tmp_path, max_trials=4)
    assert reloaded.oracle.end_order == [trial.trial_id]
    assert reloaded.oracle.create_trial("tester").trial_id != trial.trial_id


def test_a_trial_killed_right_after_it_ended_is_not_run_again(tmp_path):
    # end_trial saves oracle.json while the trial is still listed as running; the tuner's own
    # save, which drops it, comes after. keras-tuner's reload sends every running trial to retry.
    from tuning.tuner import TUNERS

    settings = tiny_settings()
    search = TUNERS["random"](settings, tmp_path, max_trials=4)
    trial = search.oracle.create_trial("tester")
    search.save()
    trial.status = "COMPLETED"
    search.oracle.update_trial(trial.trial_id, {"val_accuracy": 0.5})
    search.oracle.end_trial(trial)
    assert json.loads((tmp_path / "search" / "oracle.json").read_text())["ongoing_trials"] == {"tester": trial.trial_id}

    reloaded = TUNERS["random"](settings, tmp_path, max_trials=4)
    assert reloaded.oracle.end_order == [trial.trial_id]
    assert reloaded.oracle.create_trial("tester").trial_id != trial.trial_id


def hyperband_rounds(project: Path, kill_before_trial: int | None = None) -> list[tuple[int, int]]:
    """Drive a Hyperband oracle to the end, killed once between a trial's file and oracle.json.

    Returns each trial's (bracket, round), in creation order. The space is large enough that
    random draws never collide, so the search's length depends on the bracket bookkeeping alone.
    """
    import keras_tuner as kt

    from tuning.tuner import HyperbandOracle

    def oracle() -> HyperbandOracle:
        hp = kt.HyperParameters()
        hp.Int("x", 0, 10**6)
        o = HyperbandOracle(objective=kt.Objective("score", "max"), hyperparameters=hp, max_epochs=9, factor=3, seed=0)
        o._set_project_dir(str(project), "search")
        if (project / "search" / "oracle.json").exists():
            o.reload()
        return o

    hb, created = oracle(), []
    while True:
        if len(created) == kill_before_trial:
            before = (project / "search" / "oracle.json").read_text()
            hb.create_trial("tester")
            (project / "search" / "oracle.json").write_text(before)
            hb, kill_before_trial = oracle(), None
        trial = hb.create_trial("tester")
        if trial.status == "STOPPED":
            return created
        values = trial.hyperparameters.values
        created.append((values["tuner/bracket"], values["tuner/round"]))
        hb.update_trial(trial.trial_id, {"score": values["x"]})
        trial.status = "COMPLETED"
        hb.end_trial(trial)
        hb.save()  # as Tuner.on_trial_end does, once the trial is no longer running


# Trials 0-12 are bracket 2 (rounds of 9, 3 and 1 trials), 13-19 bracket 1, 20-22 bracket 0.
@pytest.mark.parametrize("kill_before_trial", [1, 9, 13])  # in round 0, first of round 1, opens bracket 1
def test_hyperband_killed_as_a_trial_starts_keeps_its_brackets(tmp_path, kill_before_trial):
    # Without putting the orphan back in its bracket, the bracket drew a replacement: one more trial.
    uninterrupted = hyperband_rounds(tmp_path / "uninterrupted")
    killed = hyperband_rounds(tmp_path / "killed", kill_before_trial)
    assert len(uninterrupted) == 23
    assert sorted(killed) == sorted(uninterrupted)


def grid_values(project: Path, restart_after: int | None = None, mid_trial: bool = False) -> list[tuple[int, str]]:
    """Drive a grid oracle over 3 x 2 combinations to the end, restarted once after
    `restart_after` trials: between trials, or (`mid_trial`) while the next one runs.

    Returns each trial's (a, b), in creation order; a resumed trial counts once.
    """
    import keras_tuner as kt

    from tuning.tuner import GridSearchOracle

    def oracle() -> GridSearchOracle:
        hp = kt.HyperParameters()
        hp.Choice("a", [1, 2, 3])
        hp.Choice("b", ["x", "y"])
        o = GridSearchOracle(objective=kt.Objective("score", "max"), hyperparameters=hp, max_trials=100, seed=0)
        o._set_project_dir(str(project), "search")
        if (project / "search" / "oracle.json").exists():
            o.reload()
        return o

    grid, created, restarted = oracle(), {}, False
    while True:
        trial = grid.create_trial("tester")
        if trial.status == "STOPPED":
            return list(created.values())
        values = trial.hyperparameters.values
        created[trial.trial_id] = (values["a"], values["b"])  # a resumed trial keeps its id
        if mid_trial and not restarted and len(created) == restart_after + 1:
            grid.save()  # as the tuner does when a trial starts
            grid, restarted = oracle(), True
            continue
        grid.update_trial(trial.trial_id, {"score": values["a"]})
        trial.status = "COMPLETED"
        grid.end_trial(trial)
        grid.save()
        if not mid_trial and not restarted and len(created) == restart_after:
            grid, restarted = oracle(), True


@pytest.mark.parametrize("restart_after, mid_trial", [(1, False), (4, False), (1, True), (2, True)])
def test_a_grid_search_resumed_in_a_new_process_tries_every_combination_once(tmp_path, restart_after, mid_trial):
    # keras-tuner alone stopped at the restart between trials (1 or 4 of 6 tried) and raised
    # KeyError when the trial resumed mid-way ended.
    uninterrupted = grid_values(tmp_path / "uninterrupted")
    resumed = grid_values(tmp_path / "resumed", restart_after, mid_trial)
    assert len(uninterrupted) == 6 and len(set(uninterrupted)) == 6
    assert resumed == uninterrupted


def test_search_killed_mid_trial_continues_where_it_stopped(tmp_path, cifar10):
    out = tmp_path / "search"
    # 3 of the tiny space's 4 candidates: random search gives up after 20 repeated draws, which
    # finding the last unseen candidate (1 in 4 per draw) occasionally takes; a CI rehearsal
    # ended a 4-trial search at 3 that way, after a clean resume.
    command = search_command(out, "--max-trials", "3")
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "search" / "trial_0" / "trial.json"
    deadline = time.time() + 600
    while time.time() < deadline and not (first.exists() and '"COMPLETED"' in first.read_text()):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first.exists() and '"COMPLETED"' in first.read_text(), "the kill must land after the first trial"
    finished_first = (out / "search" / "trial_0" / "history.csv").stat().st_mtime_ns

    report = subprocess.run(command + ["--results-only"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert trials(out)["0"]["status"] == "COMPLETED"  # the interrupted state, reported as it stands
    assert not (out / "search" / "trial_2").exists()  # and no trial run for it

    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Reloading Tuner" in result.stdout + result.stderr
    records = trials(out)
    assert sorted(records) == ["0", "1", "2"] and all(r["status"] == "COMPLETED" for r in records.values())
    assert (out / "search" / "trial_0" / "history.csv").stat().st_mtime_ns == finished_first  # not trained again
    # A trial's seconds are its epochs' training time, read from the history a resume keeps.
    for trial_id, record in records.items():
        rows = read_history(out / "search" / f"trial_{trial_id}" / "history.csv")
        assert record["seconds"] == pytest.approx(sum(row["epoch_seconds"] for row in rows))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_chief_and_two_workers_share_trials_and_survive_a_killed_worker(tmp_path, cifar10):
    port = str(_free_port())

    def start(role: str) -> subprocess.Popen:
        env = {**os.environ, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": port, "KERASTUNER_TUNER_ID": role}
        log = open(tmp_path / f"{role}.log", "a")
        return subprocess.Popen(search_command(tmp_path / role), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)

    chief = start("chief")
    time.sleep(3)
    workers = {name: start(name) for name in ("worker0", "worker1")}
    # Kill worker1 as soon as it has started a trial, then restart it under the same ID.
    started = tmp_path / "worker1" / "search"
    deadline = time.time() + 600
    while time.time() < deadline and not list(started.glob("trial_*")):
        time.sleep(0.1)
    assert list(started.glob("trial_*")), (tmp_path / "worker1.log").read_text()[-3000:]
    os.kill(workers["worker1"].pid, signal.SIGKILL)
    workers["worker1"].wait()
    workers["worker1"] = start("worker1")
    for name, proc in workers.items():
        assert proc.wait(timeout=900) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
    assert chief.wait(timeout=300) == 0, (tmp_path / "chief.log").read_text()[-3000:]

    records = trials(tmp_path / "chief")
    assert len(records) == 4 and all(r["status"] == "COMPLETED" for r in records.values())
    ran_by = {}
    for name in workers:
        for marker in (tmp_path / name / "search").glob("trial_*/worker"):
            ran_by[marker.parent.name.removeprefix("trial_")] = marker.read_text().strip()
    assert sorted(ran_by) == sorted(records)  # every trial finished on some worker
    assert set(ran_by.values()) == {"worker0", "worker1"}  # and both workers took trials


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-trials", "0"], "--max-trials must be >= 1"),
        (["--train-subset", "46000"], "--train-subset must be in [0, 45000]"),
        (["--set", "train.epochz=1"], "unknown config key 'train.epochz'"),
        (["--accuracy-floor", "1.5"], "--accuracy-floor must be in [0, 1)"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(tmp_path, args, message):
    result = run_cli("tuning.search", "--out", str(tmp_path / "s"), *args, timeout=60)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "s").exists()


def test_spearman_matches_hand_computed_ranks():
    from tuning.proxy_check import spearman

    assert spearman([0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.9]) == pytest.approx(1.0)
    assert spearman([0.1, 0.2, 0.3, 0.4], [0.9, 0.7, 0.6, 0.5]) == pytest.approx(-1.0)
    # d = (0, 0, 1, -1): rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(0.8)
    # A ranking that is all ties ranks nothing: undefined, not NaN in the report's JSON.
    assert spearman([0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.5, 0.5]) is None


def test_proxy_check_refuses_too_few_trials(tmp_path):
    (tmp_path / "trials.json").write_text(json.dumps({"settings": {}, "trials": [{"trial_id": "0", "val_accuracy": 0.5}]}))
    result = run_cli("tuning.proxy_check", "--search", str(tmp_path), "--trials", "0", "--out", str(tmp_path / "o"), timeout=60)
    assert result.returncode == 2 and "need >= 4 scored trial ids" in result.stderr


def test_proxy_check_reports_and_a_second_call_scores_the_trained_trials_without_retraining(tmp_path, cifar10, monkeypatch):
    import keras_tuner as kt

    from tfdense import fitting
    from tuning import proxy_check
    from tuning.space import declare

    hp = kt.HyperParameters()
    declare(hp, "tiny")
    # The tiny space's four points, so the long trainings differ and their ranking is defined.
    points = [dict(hp.values, growth_rate=g, learning_rate=lr) for g in (2, 4) for lr in (0.05, 0.1)]
    trials = [{"trial_id": str(i), "val_accuracy": 0.2 + i / 100, "weights": 1000, "macs": 10_000, "hyperparameters": p} for i, p in enumerate(points)]
    search = tmp_path / "search"
    search.mkdir()
    (search / "trials.json").write_text(json.dumps({"settings": {"preset": "smoke", "overrides": ["train.batch_size=500"]}, "trials": trials}))
    args = ["--search", str(search), "--trials", "0,1,2,3", "--epochs", "1", "--out", str(tmp_path / "check")]
    assert proxy_check.main(args) == 0
    first = json.loads((tmp_path / "check" / "proxy_check.json").read_text())
    assert [r["trial_id"] for r in first["trials"]] == ["0", "1", "2", "3"] and -1 <= first["spearman"] <= 1

    def no_training(*a, **k):
        raise AssertionError("a trial trained before was trained again")

    monkeypatch.setattr(fitting, "fit_config", no_training)
    assert proxy_check.main(args) == 0
    again = json.loads((tmp_path / "check" / "proxy_check.json").read_text())
    assert [r["long_val_accuracy"] for r in again["trials"]] == [r["long_val_accuracy"] for r in first["trials"]]


def tiny_search_folder(folder: Path, growth_rate: int, learning_rate: float) -> Path:
    """A search folder whose trials.json holds one scored trial ("07") of the tiny space."""
    import keras_tuner as kt

    from tuning.space import declare

    hp = kt.HyperParameters()
    declare(hp, "tiny")
    values = dict(hp.values, growth_rate=growth_rate, learning_rate=learning_rate)
    folder.mkdir()
    trial = {"trial_id": "07", "status": "COMPLETED", "val_accuracy": 0.3, "weights": 1000, "macs": 10_000, "hyperparameters": values}
    (folder / "trials.json").write_text(json.dumps({"settings": {"space": "tiny"}, "trials": [trial]}))
    return folder


def grid_refinement(tmp_path: Path, free: str) -> tuple[str, Path]:
    """A grid search around trial 07 (growth rate 4, learning rate 0.1) of a tiny earlier search, `free` free."""
    earlier = tiny_search_folder(tmp_path / "earlier", growth_rate=4, learning_rate=0.1)
    out = tmp_path / "refine"
    command = [sys.executable, "-m", "tuning.search", "--tuner", "grid", "--max-trials", "10", "--around", f"{earlier}:07",
               "--free", free, "--out", str(out), *TINY]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return f"{earlier}:07", out


def test_a_grid_refinement_tries_each_free_choice_once_with_the_rest_pinned_to_the_trial(tmp_path, cifar10):
    around, out = grid_refinement(tmp_path, "growth_rate")
    records = trials(out)
    # The tiny space has 2 growth rates x 2 learning rates; pinned, only the growth rates remain.
    assert sorted(r["hyperparameters"]["growth_rate"] for r in records.values()) == [2, 4]
    assert {r["hyperparameters"]["learning_rate"] for r in records.values()} == {0.1}
    settings = json.loads((out / "trials.json").read_text())["settings"]
    assert settings["around"] == around and settings["free"] == ["growth_rate"]


def test_a_free_hyperparameter_with_listed_values_is_searched_over_those_only(tmp_path, cifar10):
    _, out = grid_refinement(tmp_path, "growth_rate=2")
    assert [r["hyperparameters"]["growth_rate"] for r in trials(out).values()] == [2]


def test_free_values_parses_names_and_listed_values():
    from tfdense.config import ConfigError
    from tuning.search import free_values

    assert free_values(["growth_rate", "compression=0.5, 0.75", "depthwise=true"]) == {
        "growth_rate": (), "compression": (0.5, 0.75), "depthwise": (True,)}
    for specs in (["growth_rate="], ["=4"], ["growth_rate", "growth_rate=4"]):
        with pytest.raises(ConfigError, match="--free"):
            free_values(specs)


def test_a_refinement_needs_a_free_hyperparameter(tmp_path):
    from tuning.trials import TrialsError, pinned_around

    earlier = tiny_search_folder(tmp_path / "earlier", growth_rate=4, learning_rate=0.1)
    with pytest.raises(TrialsError, match="--around needs at least one --free hyperparameter"):
        pinned_around(earlier, "07", [])


def test_a_refinement_may_free_a_hyperparameter_the_space_gained_after_the_trial(tmp_path):
    from tuning.trials import pinned_around

    earlier = tiny_search_folder(tmp_path / "earlier", growth_rate=4, learning_rate=0.1)
    pinned = dict(pinned_around(earlier, "07", ["first_kernel_3"]))
    assert pinned["growth_rate"] == 4 and pinned["learning_rate"] == 0.1 and "first_kernel_3" not in pinned


def test_a_refinement_refuses_an_unscored_trial_and_free_without_around(tmp_path):
    earlier = tiny_search_folder(tmp_path / "earlier", growth_rate=4, learning_rate=0.1)
    for extra, message in ((["--around", f"{earlier}:08", "--free", "growth_rate"], "has no scored trial '08'"),
                           (["--free", "growth_rate"], "--free needs --around SEARCH:TRIAL"),
                           (["--around", str(earlier), "--free", "growth_rate"], "--around must be SEARCH_FOLDER:TRIAL_ID"),
                           (["--around", f"{earlier}:07", "--free", "kernel"], "--free kernel: not a hyperparameter of --space tiny"),
                           (["--around", f"{earlier}:07", "--free", "growth_rate=3"], "3 is not a value of growth_rate in --space tiny (one of 2, 4)")):
        result = subprocess.run(search_command(tmp_path / "out", *extra), cwd=REPO, capture_output=True, text=True, timeout=300)
        assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
