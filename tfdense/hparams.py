"""TensorBoard HParams records: a run's (or a tuner trial's) settings beside its final figures.

Each call writes one HParams "session" into `logdir`; TensorBoard's HParams dashboard then lists
every run and trial under a common parent log directory as sortable rows.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp_api

# The last record written, beside its event file; TensorBoard ignores non-event files.
RECORD_FILE = "record.json"


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """A nested config as `section.field` scalars (tuples as text), the types HParams accepts."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        elif value is None:
            flat[name] = "none"
        else:
            flat[name] = ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
    return flat


def log_hparams(logdir: Path, hparams: dict[str, bool | int | float | str], metrics: dict[str, float], session: str) -> None:
    """Writes the session's hyperparameters and final metrics (as step-0 scalars) to `logdir`.

    Replaces an earlier record there, so a resumed run still shows as one row. An identical
    record is left as it is: rerunning a finished run then does not churn its committed files.
    """
    record = json.dumps({"session": session, "hparams": hparams, "metrics": metrics}, sort_keys=True, default=float)
    record_file = logdir / RECORD_FILE
    if record_file.exists() and record_file.read_text() == record and any(logdir.glob("events.out.tfevents.*")):
        return
    shutil.rmtree(logdir, ignore_errors=True)
    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        hp_api.hparams(hparams, trial_id=session)
        for name, value in metrics.items():
            tf.summary.scalar(name, float(value), step=0)
    writer.flush()
    writer.close()
    record_file.write_text(record)
