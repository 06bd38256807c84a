"""The run directory: every path a run writes, and whether a directory may be resumed.

    RUN/config.json                 resolved config, preset, git revision
    RUN/metrics.json                the deployed model's figures and every stage's metrics
    RUN/<stage>/metrics.json        written last: its presence marks the stage complete
    RUN/<stage>/model.h5            the stage's output model (train, prune, qat)
    RUN/<stage>/history.csv         per-epoch log of a fitting stage
    RUN/<stage>/backup/             resume checkpoint while a fitting stage runs
    RUN/train/best.weights.h5       best validation accuracy so far
    RUN/logs/<stage>/               TensorBoard events
    RUN/logs/hparams/               the run's HParams record (config beside final figures)
    RUN/model_*.tflite, labels.txt, model_int8.cc/.h   the export stage's files

Only this module knows these names; stages ask it for paths.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import tfdense
from tfdense.config import RunConfig, result_identity
from tfdense.files import read_history, read_json, write_json

STAGES = ("train", "prune", "qat", "export", "evaluate")

# The config sections each fitting stage's result depends on (its own and every earlier one's).
STAGE_INPUTS = {
    "train": ("model", "data", "train"),
    "prune": ("model", "data", "train", "prune"),
    "qat": ("model", "data", "train", "prune", "qat"),
}


class RunDirError(ValueError):
    """A run directory that cannot be used as asked; reported in one line with exit code 2."""


def git_revision() -> str | None:
    """The commit of the tfdense checkout, if it is one, with '+dirty' for local edits."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


class RunDir:
    """One run's directory; see the module docstring for its layout."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # --- paths ------------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.json"

    def stage(self, name: str) -> Path:
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}")
        return self.path / name

    def stage_metrics(self, name: str) -> Path:
        return self.stage(name) / "metrics.json"

    def model(self, name: str) -> Path:
        return self.stage(name) / "model.h5"

    def history(self, name: str) -> Path:
        return self.stage(name) / "history.csv"

    def backup(self, name: str) -> Path:
        return self.stage(name) / "backup"

    def best_weights(self, name: str) -> Path:
        return self.stage(name) / "best.weights.h5"

    def logs(self, name: str) -> Path:
        return self.path / "logs" / name

    def export_file(self, name: str) -> Path:
        """A file of the export stage (`model_int8.tflite`, `labels.txt`, ...), at the run's top."""
        return self.path / name

    def tflite_files(self) -> list[Path]:
        return sorted(self.path.glob("model_*.tflite"))

    # --- state ------------------------------------------------------------------------------
    def float_source(self) -> str:
        """The stage whose float model QAT starts from: prune when it ran, else train."""
        return "prune" if self.is_complete("prune") else "train"

    def has_progress(self) -> bool:
        """Whether any stage has completed an epoch or finished: what a failed start must not delete."""
        return any(self.is_complete(s) for s in STAGES) or any(read_history(self.history(s)) for s in STAGE_INPUTS)

    def remove_if_empty_start(self) -> bool:
        """Deletes a directory this run created that holds no progress yet (a failure before the
        first epoch must not leave a config.json that refuses the corrected command). True if removed."""
        if self.has_progress():
            return False
        shutil.rmtree(self.path, ignore_errors=True)
        return True

    def is_complete(self, name: str) -> bool:
        return self.stage_metrics(name).exists()

    def read_stage_metrics(self, name: str) -> dict[str, Any]:
        return read_json(self.stage_metrics(name))

    def write_stage_metrics(self, name: str, metrics: dict[str, Any]) -> None:
        write_json(self.stage_metrics(name), metrics)

    def require(self, path: Path, stage: str) -> Path:
        """`path`, or a RunDirError telling the user which stage makes it."""
        if not path.exists():
            raise RunDirError(f"{path} is missing: run the {stage} stage first")
        return path

    def open(self, config: RunConfig, preset: str) -> bool:
        """Creates the directory or re-opens it for the same experiment; True when resuming.

        Refuses (RunDirError) a directory that holds anything other than a run of this config
        (compared on the fields that change results), so nothing of another run is overwritten.
        """
        out = self.path
        if out.exists() and not out.is_dir():
            raise RunDirError(f"--out {out} exists and is not a directory")
        if self.config_file.exists():
            try:
                previous = read_json(self.config_file)["config"]
            except (OSError, ValueError, KeyError) as e:
                raise RunDirError(f"--out {out} holds an unreadable config.json ({e}); choose another --out") from e
            ours = result_identity(config.to_dict())
            theirs = result_identity(previous)
            if ours != theirs:
                diff = _first_difference(theirs, ours)
                raise RunDirError(f"--out {out} holds a run with a different config ({diff}); choose another --out or delete it")
            self._check_writable()
            return True
        if out.exists() and any(out.iterdir()):
            raise RunDirError(f"--out {out} is not empty and holds no tfdense run; choose another --out")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"--out {out} cannot be created: {e.strerror}") from e
        self._check_writable()
        write_json(self.config_file, {"preset": preset, "config": config.to_dict(), "git_revision": git_revision(), "tfdense": tfdense.__version__})
        return False

    def adoptable_stages(self, source: RunDir, config: RunConfig) -> list[str]:
        """The leading fitting stages of `source` that a run of `config` would compute identically.

        Refuses (RunDirError) a source whose train stage is missing or differs, naming the field.
        """
        try:
            theirs = result_identity(read_json(source.config_file)["config"])
        except (OSError, ValueError, KeyError) as e:
            raise RunDirError(f"--from {source.path} is not a tfdense run ({e})") from e
        ours = result_identity(config.to_dict())
        stages = []
        for stage, sections in STAGE_INPUTS.items():
            same = all(theirs.get(s) == ours.get(s) for s in sections)
            if stage == "train" and not (same and source.is_complete("train")):
                why = _first_difference({s: theirs.get(s, {}) for s in sections}, {s: ours.get(s, {}) for s in sections}) if not same else "its train stage is not complete"
                raise RunDirError(f"--from {source.path} cannot provide the train stage ({why})")
            if not (same and source.is_complete(stage)):
                break
            stages.append(stage)
        return stages

    def adopt(self, source: RunDir, stages: list[str]) -> None:
        """Copies `stages` (outputs, metrics, history, TensorBoard logs) from `source`, recording where from."""
        for stage in stages:
            if self.is_complete(stage):
                continue
            shutil.copytree(source.stage(stage), self.stage(stage), dirs_exist_ok=True, ignore=shutil.ignore_patterns("backup"))
            if source.logs(stage).exists():
                shutil.copytree(source.logs(stage), self.logs(stage), dirs_exist_ok=True)
        saved = read_json(self.config_file)
        saved["adopted"] = {**saved.get("adopted", {}), **{stage: str(source.path) for stage in stages}}
        write_json(self.config_file, saved)

    def _check_writable(self) -> None:
        try:
            with tempfile.TemporaryFile(dir=self.path):
                pass
        except OSError as e:
            raise RunDirError(f"--out {self.path} is not writable: {e.strerror}") from e


def _first_difference(saved: dict[str, Any], new: dict[str, Any]) -> str:
    for section in sorted(set(saved) | set(new)):
        a, b = saved.get(section, {}), new.get(section, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return f"{section}.{key}: saved {a.get(key)!r}, now {b.get(key)!r}"
    return "no field differs"
