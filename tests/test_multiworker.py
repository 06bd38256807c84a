"""Training across machines: two MultiWorkerMirroredStrategy workers on localhost, same command."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_finish_with_identical_weights(tmp_path, cifar10):
    import tf_keras as keras

    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    start = time.perf_counter()
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})}
        # Each worker owns its run directory, as it would on its own machine.
        command = [sys.executable, "-m", "tfdense.train", "--preset", "smoke", "--stages", "train", "--out", str(tmp_path / f"w{index}"),
                   "--set", "train.epochs=2", "--set", "data.train_subset=1000"]
        log = open(tmp_path / f"w{index}.log", "w")
        procs.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
    for index, proc in enumerate(procs):
        assert proc.wait(timeout=900) == 0, (tmp_path / f"w{index}.log").read_text()[-3000:]
    seconds = time.perf_counter() - start
    models = [keras.models.load_model(str(tmp_path / f"w{i}" / "train" / "model.h5"), compile=False) for i in range(2)]
    for a, b in zip(models[0].get_weights(), models[1].get_weights()):
        np.testing.assert_array_equal(a, b)
    history = (tmp_path / "w0" / "train" / "history.csv").read_text().splitlines()
    assert len(history) == 3  # header + 2 epochs, trained together
    print(f"two-worker smoke training: {seconds:.1f} s")
