"""A finished (or interrupted) search as committed results: trials JSON, summary, plot, winner.

Writes into the search's output folder:
- `trials.json`: `{"settings": ..., "trials": [...]}`, each trial with its hyperparameters,
  weights, MACs, predicted int8 bytes, `val_accuracy`, seconds and status (COMPLETED; REJECTED over budget, with the
  reason; or keras-tuner's FAILED/INVALID with its message);
- `summary.md`: the top trials as a table, the cost per trial, and the plot;
- `accuracy_vs_weights.png`: every scored trial, coloured by MACs;
- `best_config.yaml`: the winner among the scored trials within the budget, trainable with
  `python -m tfdense.train --config FILE`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tfdense.costs import ModelCosts
from tfdense.plots import trials_scatter
from tfdense.files import write_atomic, write_json
from tfdense.tables import markdown_table

SCORE_KEYS = ("val_accuracy", "imt_score", "score", "weights", "macs", "int8_bytes", "epochs", "seconds", "latency_ratio")


def trial_records(tuner, budget) -> list[dict[str, Any]]:
    """One plain record per trial the oracle knows, in start order.

    Status: COMPLETED (trained and scored), REJECTED (over `budget`, never trained, with the
    reason), or keras-tuner's own (FAILED, INVALID, RUNNING) with its message.
    """
    from tuning import space

    records = []
    for trial_id in sorted(tuner.oracle.trials, key=int):
        trial = tuner.oracle.trials[trial_id]
        record: dict[str, Any] = {"trial_id": trial_id, "status": str(trial.status)}
        record["hyperparameters"] = {k: v for k, v in trial.hyperparameters.values.items()}
        rejected = trial.metrics.exists("rejected") and trial.metrics.get_last_value("rejected") == 1.0
        for key in SCORE_KEYS:
            if trial.metrics.exists(key) and not (rejected and key in ("val_accuracy", "imt_score", "score", "epochs", "seconds")):
                record[key] = float(trial.metrics.get_last_value(key))
        # Counted again from the hyperparameters (analytic, no training), so every record carries
        # today's size prediction whatever the trial logged when it ran.
        config = tuner.hypermodel.build(trial.hyperparameters.copy())
        costs = space.costs_of(config.model, config.qat.per_channel)
        record["int8_bytes"] = float(costs.int8_bytes)
        if rejected:
            record["status"] = "REJECTED"
            record["message"] = "over budget: " + "; ".join(budget.violations(costs, record.get("latency_ratio")))
        elif trial.message:
            record["message"] = trial.message.strip().splitlines()[-1][:300]
        records.append(record)
    return records


def over_budget(record: dict[str, Any], budget) -> list[str]:
    """What a scored trial's recorded costs break in `budget`: a search resumed under a tighter
    budget keeps the trials it scored before in its results, but they cannot win."""
    costs = ModelCosts(weights=int(record["weights"]), params=0, macs=int(record["macs"]), int8_bytes=int(record["int8_bytes"]))
    return budget.violations(costs, record.get("latency_ratio"))


def best_record(records: list[dict[str, Any]], objective: str, budget) -> dict[str, Any] | None:
    """The winner among the scored trials that fit `budget` (None if none does)."""
    scored = [r for r in records if "val_accuracy" in r and not over_budget(r, budget)]
    if not scored:
        return None
    if objective == "accuracy":
        return max(scored, key=lambda r: r["val_accuracy"])
    return min(scored, key=lambda r: r["score"])


def write_results(tuner, settings_dict: dict[str, Any], out: Path, objective: str, budget) -> dict[str, Any] | None:
    """Writes the files of the module docstring; returns the best record (None if nothing scored)."""
    records = trial_records(tuner, budget)
    best = best_record(records, objective, budget)
    write_json(out / "trials.json", {"settings": settings_dict, "trials": records})
    trials_scatter(records, best, out / "accuracy_vs_weights.png")
    scored = sorted((r for r in records if "val_accuracy" in r), key=lambda r: -r["val_accuracy"])
    failed = [r for r in records if "val_accuracy" not in r]
    lines = [
        "# Architecture search",
        "",
        f"Settings: `{json.dumps(settings_dict)}`",
        "",
        f"{len(scored)} scored trials, {len(failed)} rejected or failed. Validation accuracy after the proxy training "
        "(fixed validation split; the test set is never used here).",
        "",
    ]
    timed = any("latency_ratio" in r for r in records)
    lines.append(markdown_table(
        ("trial", "val accuracy", "weights", "MACs", "int8 bytes (predicted)") + (("latency / large ResNet",) if timed else ())
        + ("within budget", "epochs", "seconds", "hyperparameters"),
        [(r["trial_id"], f"{100 * r['val_accuracy']:.2f} %", f"{int(r['weights']):,}", f"{int(r['macs']):,}", f"{int(r['int8_bytes']):,}")
         + ((f"{r['latency_ratio']:.2f}x" if "latency_ratio" in r else "not timed",) if timed else ())
         + ("; ".join(over_budget(r, budget)) or "yes", int(r.get("epochs", 0)), f"{r['seconds']:.0f}",
            ", ".join(f"{k}={v}" for k, v in r["hyperparameters"].items() if not k.startswith("tuner/"))) for r in scored]))
    if scored:
        per_epoch = [r["seconds"] / max(r.get("epochs", 1), 1) for r in scored]
        lines += ["", f"Cost per trial: median {np.median([r['seconds'] for r in scored]):.0f} s ({np.median(per_epoch):.1f} s per proxy epoch)."]
    if failed:
        lines += ["", "Rejected or failed:", ""] + [f"- {r['trial_id']}: {r.get('message', r['status'])}" for r in failed]
    lines += ["", "![accuracy vs weights](accuracy_vs_weights.png)", ""]
    write_atomic(out / "summary.md", "\n".join(lines))
    if best is not None:
        config = tuner.hypermodel.build(_hp_from(tuner, best["trial_id"]))
        chosen = {section: values for section, values in config.to_dict().items() if section in ("model", "data", "train")}
        chosen["model"] = {k: list(v) if isinstance(v, tuple) else v for k, v in chosen["model"].items()}  # YAML has no tuples
        header = (
            f"# Chosen by the search in this folder: trial {best['trial_id']}, val accuracy {best['val_accuracy']:.4f} "
            f"after {int(best.get('epochs', 0))} proxy epochs,\n# {int(best['weights']):,} weights, {int(best['macs']):,} MACs. "
            f"Train it: python -m tfdense.train --preset {settings_dict['preset']} --config THIS_FILE\n"
        )
        write_atomic(out / "best_config.yaml", header + yaml.safe_dump(chosen, sort_keys=False))
    return best


def _hp_from(tuner, trial_id: str):
    return tuner.oracle.trials[trial_id].hyperparameters
