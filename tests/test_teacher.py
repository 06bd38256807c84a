"""Scoring a set of trained models as a teacher before a student trains against it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from tfdense.config import DenseNetConfig
from tfdense.costs import model_costs
from tfdense.model import build_densenet
from tfdense.cli.teacher import format_scores, main, score_teachers


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    import tf_keras as keras

    folder = tmp_path_factory.mktemp("teachers")
    files, models = [], []
    for seed, growth in ((1, 4), (2, 6)):
        keras.utils.set_random_seed(seed)
        models.append(build_densenet(DenseNetConfig(name="tiny", stem_filters=8, block_layers=(1, 1), growth_rate=growth, bottleneck=0)))
        files.append(str(folder / f"member{seed}.h5"))
        models[-1].save(files[-1], include_optimizer=False)
    return files, models


def test_each_model_then_the_ensemble_is_scored_without_and_with_the_mirror(members):
    files, models = members
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 32, 32, 3)).astype(np.uint8)
    views = [m.predict(v.astype(np.float32), verbose=0) for m in models for v in (x, x[:, :, ::-1])]
    # Labels the full ensemble gets right by construction; member 1 alone only where it agrees.
    y = np.mean(np.log(views), axis=0).argmax(axis=1)
    scores = score_teachers(files, x, y, batch_size=16)
    assert [(len(s.files), s.flip) for s in scores] == [(1, False), (1, True), (1, False), (1, True), (2, False), (2, True)]
    assert scores[-1].val_accuracy == 1.0
    assert scores[0].val_accuracy == pytest.approx(np.mean(views[0].argmax(axis=1) == y))
    macs = [model_costs(m).macs for m in models]
    assert [s.macs for s in scores] == [macs[0], 2 * macs[0], macs[1], 2 * macs[1], sum(macs), 2 * sum(macs)]
    table = format_scores(scores)
    assert f"| member1.h5 + member2.h5 | yes | 100.00 % | {2 * sum(macs):,} |" in table


def test_cli_scores_on_the_real_validation_split(members, cifar10):
    files, _ = members
    done = run_cli("tfdense", "teacher", files[0])
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| member1.h5 |")]
    assert len(rows) == 2 and all(line.endswith(" |") and " % |" in line for line in rows)


def test_a_missing_model_file_is_refused_before_any_data_loads(members, capsys):
    assert main([members[0][0], "nowhere.h5", "--data-dir", "/no/such/dir"]) == 2
    assert "no such model file: nowhere.h5" in capsys.readouterr().err


def test_half_precision_copy_loads_into_the_same_model_and_predicts_within_float16_rounding(members, tmp_path):
    import h5py
    import tf_keras as keras

    from tfdense.files import half_precision_copy

    files, models = members
    half = tmp_path / "half.h5"
    half_precision_copy(files[1], half)
    with h5py.File(half) as f:
        dtypes = set()
        f.visititems(lambda name, obj: dtypes.add(obj.dtype.name) if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f" else None)
    assert dtypes == {"float16"}
    assert half.stat().st_size < Path(files[1]).stat().st_size  # a new file: HDF5 keeps deleted datasets' space
    copy = keras.models.load_model(str(half), compile=False)
    assert [w.dtype for w in copy.weights] == [w.dtype for w in models[1].weights]  # float32 variables again
    x = np.random.default_rng(1).integers(0, 256, (16, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(copy.predict(x, verbose=0), models[1].predict(x, verbose=0), atol=2e-3)
