"""keras-tuner tuners that train tfdense DenseNets with tfdense's own fit loop.

keras-tuner 1.4.8's `Tuner._try_build` rejects tf_keras models (its issue #1039: it checks
against Keras 3's Model class). These tuners override `run_trial`, the documented extension
point, so `_try_build` is never reached: `run_trial` maps the trial's hyperparameters to a
`RunConfig` (`tuning.space`), rejects it untrained when it is over budget (scored as the worst
candidate, marked `rejected`), trains it with
`tfdense.fitting.fit` on the proxy schedule, and returns its metrics.

Resume: keras-tuner keeps the search state in the project directory (`overwrite=False`); an
interrupted trial is retried when the search restarts, and its own fit resumes from the
trial's last completed epoch (BackupAndRestore in the trial directory). Two kill windows in
keras-tuner's own saving, both caught by the kill-and-resume test in CI rehearsals, are closed
here (`KillSafeState`): it rewrites its state files in place (a kill mid-write left an empty
`oracle.json`, and the restarted search saw no finished trial), and it writes a new trial's
file before the oracle's (a kill between them left a trial that was never run).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
import keras_tuner as kt

from tfdense import data as data_lib
from tfdense import fitting
from tfdense.config import ConfigError, RunConfig
from tfdense.hparams import log_hparams
from tfdense.files import write_atomic
from tfdense.scores import imt_score
from tuning import space

OBJECTIVES = ("accuracy", "imt")


@dataclass(frozen=True)
class Proxy:
    """The short training that scores a candidate: `epochs` on `train_subset` images."""

    epochs: int
    train_subset: int  # 0 = all 45,000 training images


@dataclass(frozen=True)
class SearchSettings:
    base: RunConfig  # everything the space does not set (data split, batch size, schedule kind, ...)
    budget: space.Budget
    proxy: Proxy
    objective: str = "accuracy"  # or "imt": lowest IMT score among candidates above the floor
    accuracy_floor: float = 0.0
    space: str = "full"
    verbose: int = 2
    # Hyperparameters held at fixed values (a refinement around an earlier trial): the oracle
    # searches only the space's other entries.
    pinned: tuple[tuple[str, Any], ...] = ()
    # Free hyperparameters searched over listed values only (`--free NAME=V1,V2`), not the space's range.
    narrowed: tuple[tuple[str, tuple[Any, ...]], ...] = ()


def objective_for(settings: SearchSettings) -> kt.Objective:
    if settings.objective == "accuracy":
        return kt.Objective("val_accuracy", direction="max")
    return kt.Objective("score", direction="min")


class DenseNetSearch:
    """The `run_trial` shared by every tuner below (a mixin over a keras-tuner Tuner)."""

    settings: SearchSettings
    _data: data_lib.Cifar | None = None

    def data(self) -> data_lib.Cifar:
        # Loaded on the first trial: a distributed chief never trains and never needs it.
        if self._data is None:
            base = self.settings.base
            self._data = data_lib.prepare(dataclasses.replace(base.data, train_subset=self.settings.proxy.train_subset))
        return self._data

    def run_trial(self, trial: kt.engine.trial.Trial, *args, **kwargs) -> dict[str, float]:
        settings = self.settings
        hp = trial.hyperparameters
        try:
            config = self.hypermodel.build(hp)
        except ConfigError as e:
            raise kt.errors.FailedTrialError(f"invalid candidate: {e}") from e
        costs = space.costs_of(config.model, config.qat.per_channel)
        measured: dict[str, float] = {}
        problems = settings.budget.violations(costs)
        if not problems and settings.budget.max_latency_ratio is not None:
            # Timed only once the counts pass: it converts the candidate, about half a minute.
            measured["latency_ratio"] = space.latency_ratio(config)
            problems = settings.budget.violations(costs, measured["latency_ratio"])
        if problems:
            # Rejected untrained, but scored as the worst possible candidate rather than failed:
            # a failed trial tells BayesianOptimization nothing, and it kept proposing
            # over-budget candidates (6 in a row in the first search); a zero teaches it where
            # the budget ends.
            return {"val_accuracy": 0.0, "imt_score": 1.0, "score": 2.0, "weights": float(costs.weights),
                    "macs": float(costs.macs), "int8_bytes": float(costs.int8_bytes), "epochs": 0.0, "seconds": 0.0, "rejected": 1.0,
                    **measured}
        # Hyperband gives each bracket its own number of epochs.
        epochs = int(hp.values.get("tuner/epochs", settings.proxy.epochs))
        recipe = dataclasses.replace(
            fitting.Recipe.for_stage(config, "train"),
            epochs=epochs,
            warmup_epochs=min(config.train.warmup_epochs, epochs / 4),
            seed=fitting.stage_seed(config.train.seed, "tune"),
            verbose=settings.verbose,
        )
        trial_dir = Path(self.get_trial_dir(trial.trial_id))
        paths = fitting.FitPaths(backup=trial_dir / "backup", history=trial_dir / "history.csv", logs=trial_dir / "logs")
        model, summary = fitting.fit_config(config, self.data(), paths, recipe)
        val_accuracy = fitting.accuracy(model, self.data().x_val, self.data().y_val)
        imt = imt_score(costs.weights, costs.macs)  # int8 weights and activations, unpruned
        metrics = {
            "val_accuracy": val_accuracy,
            "imt_score": imt,
            # Feasible candidates score their IMT (< 1); below the floor, 1 + the shortfall.
            "score": imt if val_accuracy >= settings.accuracy_floor else 1.0 + settings.accuracy_floor - val_accuracy,
            "weights": float(costs.weights),
            "macs": float(costs.macs),
            "int8_bytes": float(costs.int8_bytes),  # predicted
            "epochs": float(summary.epochs),
            # From the history, which a resumed trial keeps: the wall clock of this call would
            # count only the epochs after the resume (363 s for a 30-epoch trial resumed at 27).
            "seconds": summary.train_seconds,
            "rejected": 0.0,
            **measured,
        }
        hparams = {k: v for k, v in hp.values.items() if isinstance(v, (bool, int, float, str))}
        log_hparams(self.hparams_dir / f"trial_{trial.trial_id}", hparams, metrics, session=f"trial_{trial.trial_id}")
        fitting.discard_backup(paths)
        (trial_dir / "worker").write_text(os.environ.get("KERASTUNER_TUNER_ID", "local") + "\n")
        return metrics

    @property
    def hparams_dir(self) -> Path:
        return Path(self.project_dir) / "hparams"


class KillSafeState:
    """Oracle mixin: state files are replaced whole, and a trial the oracle lost is run again.

    keras-tuner writes a trial's `trial.json` before `oracle.json`. A kill between the two, when
    the trial starts, leaves a RUNNING trial that is reloaded but never scheduled (a CI
    rehearsal finished a 4-trial search with trial 1 never run): on reload it joins the retry
    queue. When the trial ends, the same kill would have it retried, trained again from
    scratch; so would a kill right after it ended, because `end_trial` saves `oracle.json`
    while the trial is still listed as running. On reload an ended trial counts as ended.
    """

    def save(self):
        write_atomic(Path(self._get_oracle_fname()), json.dumps(self.get_state()))

    def _save_trial(self, trial):
        write_atomic(Path(self._get_trial_dir(trial.trial_id)) / "trial.json", json.dumps(trial.get_state()))

    def reload(self):
        super().reload()
        status = kt.engine.trial.TrialStatus
        for trial_id in sorted(self.trials, key=int):
            trial = self.trials[trial_id]
            if trial.status in (status.COMPLETED, status.FAILED):
                if trial_id in self._retry_queue:
                    self._retry_queue.remove(trial_id)
                if trial_id not in self.end_order:
                    self.end_order.append(trial_id)
            elif trial.status == status.RUNNING and trial_id not in self._retry_queue:
                self._record_values(trial)
                if trial_id not in self.start_order:
                    self.start_order.append(trial_id)
                self._retry_queue.append(trial_id)
                self._adopt(trial)

    def _adopt(self, trial: kt.engine.trial.Trial) -> None:
        """Enter `trial`, created after the last `oracle.json`, in the oracle's own bookkeeping."""


class HyperbandOracle(KillSafeState, kt.oracles.HyperbandOracle):
    def _adopt(self, trial: kt.engine.trial.Trial) -> None:
        # populate_space had put the trial in a bracket's round before the kill. Unless it goes
        # back there, the round draws a replacement and the retried trial runs outside any bracket.
        values = trial.hyperparameters.values
        round_num, past_id = values["tuner/round"], values.get("tuner/trial_id")
        if round_num > 0:
            # keras-tuner stamps later rounds with the newest bracket's number, so find the
            # bracket by the trial this one continues.
            bracket = next(b for b in self._brackets if any(i["id"] == past_id for i in b["rounds"][round_num - 1]))
        else:
            bracket = next((b for b in self._brackets if b["bracket_num"] == values["tuner/bracket"]), None)
            if bracket is None:  # the orphan opened a new bracket
                self._increment_bracket_num()
                self._start_new_bracket()
                bracket = self._brackets[-1]
        bracket["rounds"][round_num].append({"past_id": past_id, "id": trial.trial_id})


class BayesianOptimizationOracle(KillSafeState, kt.oracles.BayesianOptimizationOracle):
    pass


class RandomSearchOracle(KillSafeState, kt.oracles.RandomSearchOracle):
    pass


class GridSearchOracle(KillSafeState, kt.oracles.GridSearchOracle):
    """keras-tuner's grid oracle keeps its place in the grid in memory only (its issue #1055):
    the tried combinations in grid order, and the ended trials whose next combination is still
    to be drawn. Reloaded without them, a search resumed between trials stopped as if the grid
    were done, and one resumed mid-trial failed with a KeyError when that trial ended (the
    per-tensor refinement, after its trial 1). Both are rebuilt from the trials on reload
    (pytest tests/test_tuning.py -k grid_search_resumed fails without it)."""

    def reload(self):
        super().reload()
        grid_order = functools.cmp_to_key(lambda a, b: self._compare(self.trials[a].hyperparameters.values,
                                                                     self.trials[b].hyperparameters.values))
        self._ordered_ids = type(self._ordered_ids)()
        for trial_id in sorted(self.trials, key=grid_order):
            self._ordered_ids.insert(trial_id)
        # An ended trial whose successor was tried is skipped when it is drawn.
        self._populate_next = list(self.end_order)


class _Search(DenseNetSearch, kt.Tuner):
    """A keras-tuner Tuner over `oracle` whose own state file is replaced whole, like the oracle's."""

    def __init__(self, settings: SearchSettings, out: Path, oracle: kt.Oracle):
        self.settings = settings
        hypermodel = space.DenseNetHyperModel(settings.base, settings.space)
        super().__init__(oracle=oracle, hypermodel=hypermodel, directory=str(out), project_name="search", overwrite=False)

    def save(self):
        if not self._is_worker():
            self.oracle.save()
        write_atomic(Path(self._get_tuner_fname()), json.dumps(self.get_state()))


def pinned_hyperparameters(pinned: tuple[tuple[str, Any], ...],
                           narrowed: tuple[tuple[str, tuple[Any, ...]], ...] = ()) -> kt.HyperParameters | None:
    """`pinned` and `narrowed` as keras-tuner's override: the space's entries of these names
    become Fixed, or Choices of the listed values."""
    if not pinned and not narrowed:
        return None
    hp = kt.HyperParameters()
    for name, value in pinned:
        hp.Fixed(name, value)
    for name, values in narrowed:
        hp.Choice(name, list(values))
    return hp


def _oracle_kwargs(settings: SearchSettings, seed: int) -> dict[str, Any]:
    # Over-budget candidates fail by design; they must not end the search.
    return dict(objective=objective_for(settings), seed=seed, max_consecutive_failed_trials=1_000,
                hyperparameters=pinned_hyperparameters(settings.pinned, settings.narrowed))


class HyperbandSearch(_Search):
    def __init__(self, settings: SearchSettings, out: Path, max_epochs: int, factor: int = 3, seed: int = 0):
        oracle = HyperbandOracle(max_epochs=max_epochs, factor=factor, hyperband_iterations=1, **_oracle_kwargs(settings, seed))
        super().__init__(settings, out, oracle)


class BayesianSearch(_Search):
    def __init__(self, settings: SearchSettings, out: Path, max_trials: int, seed: int = 0):
        oracle = BayesianOptimizationOracle(max_trials=max_trials, num_initial_points=min(4, max_trials), **_oracle_kwargs(settings, seed))
        super().__init__(settings, out, oracle)


class RandomSearch(_Search):
    def __init__(self, settings: SearchSettings, out: Path, max_trials: int, seed: int = 0):
        super().__init__(settings, out, RandomSearchOracle(max_trials=max_trials, **_oracle_kwargs(settings, seed)))


class GridSearch(_Search):
    """Every combination of the space's unpinned choices, in order (a refinement: a few free
    hyperparameters around an earlier search's trial, on a longer proxy)."""

    def __init__(self, settings: SearchSettings, out: Path, max_trials: int, seed: int = 0):
        super().__init__(settings, out, GridSearchOracle(max_trials=max_trials, **_oracle_kwargs(settings, seed)))


TUNERS = {"hyperband": HyperbandSearch, "bayesian": BayesianSearch, "random": RandomSearch, "grid": GridSearch}
