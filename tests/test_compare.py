"""`python -m tfdense compare`: runs judged against a reference only at the epochs both recorded."""

from __future__ import annotations

import pytest

from tfdense.cli import compare
from tfdense.files import validation_curve
from tfdense.rundir import RunDir


def write_history(run: RunDir, accuracies: list[float]) -> None:
    run.stage("train").mkdir(parents=True)
    rows = [f"{epoch},1.0,{acc}" for epoch, acc in enumerate(accuracies, start=1)]
    run.history("train").write_text("epoch,loss,val_accuracy\n" + "\n".join(rows) + "\n")


def test_a_run_still_training_is_compared_only_at_the_epochs_it_shares_with_the_reference(tmp_path, capsys):
    reference, other = RunDir(tmp_path / "finished"), RunDir(tmp_path / "training")
    write_history(reference, [0.50, 0.60, 0.70, 0.80])
    write_history(other, [0.52, 0.58, 0.73])

    result = compare.compare_curves(validation_curve(reference.history("train")), validation_curve(other.history("train")), "training", since=2)
    assert (result.epochs, result.last_epoch, result.ahead) == (3, 3, 2)
    assert result.mean_difference == pytest.approx(0.01)
    assert result.mean_difference_since == pytest.approx(0.005)
    # The reference's 0.80 at epoch 4 lies past what the other run has reached.
    assert (result.best, result.reference_best) == (pytest.approx(0.73), pytest.approx(0.70))

    assert compare.main([str(reference.path), str(other.path), "--since", "3", "--plot", str(tmp_path / "curves.png")]) == 0
    out = capsys.readouterr().out
    assert "| training | 1-3 | 2/3 | +1.00 | +3.00 | 73.00 % | 70.00 % |" in out
    assert "| 3 | 70.00 | 73.00 | +3.00 |" in out and "| 4 |" not in out
    assert (tmp_path / "curves.png").stat().st_size > 0

    # A finished run's curve kept as a bare history file serves as the reference just the same.
    kept = tmp_path / "kept.csv"
    kept.write_text(reference.history("train").read_text())
    assert compare.main([str(kept), str(other.path)]) == 0
    assert "| training | 1-3 | 2/3 | +1.00 | 73.00 % | 70.00 % |" in capsys.readouterr().out


def test_a_run_without_history_or_shared_epochs_is_an_error(tmp_path, capsys):
    reference, empty = RunDir(tmp_path / "a"), RunDir(tmp_path / "b")
    write_history(reference, [0.5])
    assert compare.main([str(reference.path), str(empty.path)]) == 2
    assert "no recorded train epoch" in capsys.readouterr().err
    assert compare.compare_curves([(1, 0.5)], [(2, 0.6)], "c") is None


def test_progress_compares_runs_of_different_lengths_at_equal_fractions_of_their_schedules(tmp_path, capsys):
    from tfdense.config import resolve

    # The reference is a kept 4-epoch curve; the other a 6-epoch run stopped after 5 epochs.
    kept = tmp_path / "short.csv"
    kept.write_text("epoch,loss,val_accuracy\n1,1.0,0.50\n2,1.0,0.60\n3,1.0,0.70\n4,1.0,0.80\n")
    longer = RunDir(tmp_path / "long")
    longer.open(resolve("smoke", overrides=["train.epochs=6"]), "smoke")
    write_history(longer, [0.40, 0.50, 0.60, 0.70, 0.80])

    # Reference epochs 1, 2, 3 fall at its epochs 1.5, 3 and 4.5; epoch 4 (its 6) is not recorded yet.
    read = compare.at_equal_progress(validation_curve(longer.history("train")), 6, [1, 2, 3, 4], 4)
    assert [e for e, _ in read] == [1, 2, 3]
    assert [a for _, a in read] == pytest.approx([0.45, 0.60, 0.75])

    assert compare.main([str(kept), str(longer.path), "--progress"]) == 0
    out = capsys.readouterr().out
    assert "short 4, long 6 epochs" in out
    assert "| long | 1-3 | 1/3 | +0.00 | 75.00 % | 70.00 % |" in out
    # At equal epochs the same runs compare otherwise: the longer run trails at all four shared epochs.
    assert compare.main([str(kept), str(longer.path)]) == 0
    assert "| long | 1-4 | 0/4 | -10.00 |" in capsys.readouterr().out


def test_progress_without_a_run_config_is_an_error(tmp_path, capsys):
    kept, bare = tmp_path / "a.csv", RunDir(tmp_path / "bare")
    kept.write_text("epoch,loss,val_accuracy\n1,1.0,0.5\n")
    write_history(bare, [0.5])
    assert compare.main([str(kept), str(bare.path), "--progress"]) == 2
    assert "config.json with train.epochs" in capsys.readouterr().err
