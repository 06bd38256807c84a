"""Files the project writes and reads back: atomic writes, JSON, and a fit's per-epoch history.csv.

Every writer goes through `write_atomic`, so a kill at any moment leaves either the old file or
the new one, never half of one: runs resume from what they wrote.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_atomic(path: Path, content: bytes | str) -> None:
    """Writes through a temp file in the same folder + fsync + rename: a kill never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


def read_history(path: Path) -> list[dict[str, float]]:
    """The rows of a fitting stage's history.csv (epoch as int, 1-based); none if it has not started."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
    for r in rows:
        r["epoch"] = int(r["epoch"])
    return rows


def validation_curve(path: Path) -> list[tuple[int, float]]:
    """(epoch, validation accuracy) of every epoch a fit's history recorded."""
    return [(r["epoch"], r["val_accuracy"]) for r in read_history(path) if "val_accuracy" in r]


def half_precision_copy(source: Path, destination: Path) -> None:
    """Writes a Keras .h5 model file again with every float32 array stored as float16.

    Keras loads it into the model's float32 variables as it would the original, so a teacher
    of 1.97M parameters fits in git's 5 MiB per file (3.9 MB instead of 7.9 MB); the predictions
    move by float16 rounding, which `python -m tfdense teacher` scores beside the original. A
    new file, not an edit in place: HDF5 keeps the space of deleted datasets.
    """
    import h5py
    import numpy as np

    def copy(src, dst) -> None:
        dst.attrs.update(src.attrs)
        for key, item in src.items():
            if isinstance(item, h5py.Group):
                copy(item, dst.create_group(key))
            else:
                data = item[()]
                dst.create_dataset(key, data=data.astype(np.float16) if item.dtype == np.float32 else data)
                dst[key].attrs.update(item.attrs)

    destination = Path(destination)
    tmp = destination.with_name("." + destination.name + ".tmp")
    try:
        with h5py.File(source, "r") as src, h5py.File(tmp, "w") as dst:
            copy(src, dst)
        os.replace(tmp, destination)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
