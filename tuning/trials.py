"""A committed search's `trials.json` read back (no TensorFlow): its trials by id, and one
trial's hyperparameters as the pinned values of a refinement search around it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class TrialsError(ValueError):
    """A search folder or trial that cannot be read as asked; the message names it."""


@dataclass(frozen=True)
class SearchResults:
    settings: dict[str, Any]  # how the search ran: tuner, budget, proxy, preset, overrides, ...
    trials: dict[str, dict[str, Any]]  # by trial id


def read_search(search: Path) -> SearchResults:
    """`search`/trials.json as `tuning.results` wrote it."""
    path = Path(search) / "trials.json"
    try:
        results = json.loads(path.read_text())
        return SearchResults(settings=results["settings"], trials={t["trial_id"]: t for t in results["trials"]})
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TrialsError(f"{path} is not a search's results ({e})") from e


def pinned_around(search: Path, trial_id: str, free: list[str]) -> tuple[tuple[str, Any], ...]:
    """Scored trial `trial_id`'s hyperparameters, all but the `free` ones, as (name, value) pairs."""
    trials = read_search(search).trials
    if trial_id not in trials or "val_accuracy" not in trials[trial_id]:
        raise TrialsError(f"{Path(search) / 'trials.json'} has no scored trial {trial_id!r}")
    values = {k: v for k, v in trials[trial_id]["hyperparameters"].items() if not k.startswith("tuner/")}
    # A free name the trial lacks is one the space gained since (tuning.search checks it is
    # declared); the trial built that hyperparameter's default.
    if not free:
        raise TrialsError("--around needs at least one --free hyperparameter to search")
    return tuple((k, v) for k, v in values.items() if k not in free)
