"""Config presets, overrides and validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tfdense.config import PRESETS, ConfigError, apply_overrides, from_dict, resolve


def test_every_preset_round_trips_through_its_saved_form():
    for name, config in PRESETS.items():
        assert from_dict(json.loads(json.dumps(config.to_dict()))) == config, name


REPO = Path(__file__).resolve().parents[1]


COMMITTED_CONFIGS = sorted(REPO.glob("tuning/configs/*.yaml")) + sorted(REPO.glob("exports/*.yaml")) + sorted(REPO.glob("tuning/searches/*/best_config.yaml"))


@pytest.mark.parametrize("path", COMMITTED_CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_committed_config_resolves_and_a_shipped_one_names_an_existing_teacher(path):
    config = resolve("full", str(path), [])
    if path.parent.name == "exports":
        for teacher in config.train.teacher:
            assert (REPO / teacher).is_file(), f"{path.name} distils from {teacher}, which is not in the repository"


def test_two_to_four_pruning_refuses_settings_it_cannot_honour():
    with pytest.raises(ConfigError, match="prune.target_sparsity must be 0.5 with m_by_n=2:4"):
        apply_overrides(PRESETS["smoke"], ["prune.m_by_n=2:4", "prune.target_sparsity=0.7"])
    assert apply_overrides(PRESETS["smoke"], ["prune.m_by_n=2:4", "prune.target_sparsity=0.5"]).prune.m_by_n == "2:4"


def test_set_overrides_coerce_to_field_types():
    config = apply_overrides(PRESETS["smoke"], ["train.epochs=7", "model.block_layers=2,3", "data.flip=false", "train.learning_rate=0.05"])
    assert config.train.epochs == 7
    assert config.model.block_layers == (2, 3)
    assert config.data.flip is False
    assert config.train.learning_rate == 0.05


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "unknown config key 'train.epoch'"),
        ("optim.lr=3", "unknown config section 'optim'"),
        ("train.epochs=three", "train.epochs must be an integer"),
        ("train.epochs=-1", "train.epochs must be >= 1"),
        ("model.growth_rate=0", "model.growth_rate must be >= 1"),
        ("prune.target_sparsity=1.0", "prune.target_sparsity must be in [0, 1)"),
        ("data.flip=maybe", "data.flip must be true or false"),
        ("data.rotation=60", "data.rotation must be in [0, 45] degrees"),
        ("model.block_layers=4,0", "model.block_layers entries must be >= 1"),
        ("trainepochs=3", "--set expects section.field=value"),
        ("model.stem_init=pca", "model.stem_init must be 'he_normal' or 'whiten'"),
        ("prune.channel_fraction=1", "prune.channel_fraction must be in [0, 1)"),
        ("train.teacher_flip=true", "train.teacher_flip needs train.teacher"),
        ("model.block_kernels=3,5,5", "model.block_kernels must give one kernel size per entry of model.block_layers"),
        ("model.block_kernels=3,4", "model.block_kernels entries must be odd"),
    ],
)
def test_bad_override_is_rejected_naming_the_field(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        apply_overrides(PRESETS["smoke"], [override])


def test_a_teacher_is_one_file_or_several_and_a_single_name_still_reads_as_before(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  teacher: tuning/teachers/dn111k_float.h5\n")
    assert resolve("smoke", str(path)).train.teacher == ("tuning/teachers/dn111k_float.h5",)
    path.write_text("train:\n  teacher: [a.h5, b.h5]\n  teacher_flip: true\n")
    assert resolve("smoke", str(path)).train.teacher == ("a.h5", "b.h5")
    assert apply_overrides(PRESETS["smoke"], ["train.teacher=[a.h5,b.h5]"]).train.teacher == ("a.h5", "b.h5")
    assert apply_overrides(PRESETS["smoke"], ["train.teacher="]).train.teacher == ()


def test_whitened_stem_needs_an_even_width_within_twice_the_patch_size():
    with pytest.raises(ConfigError, match="model.stem_filters must be even and <= 54"):
        apply_overrides(PRESETS["smoke"], ["model.stem_init=whiten", "model.stem_filters=56"])
    with pytest.raises(ConfigError, match="model.stem_filters must be even"):
        apply_overrides(PRESETS["smoke"], ["model.stem_init=whiten", "model.stem_filters=9"])


def test_unknown_preset_is_rejected():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        resolve("huge")


def test_config_file_applies_over_preset_and_set_over_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 4\n  batch_size: 32\nmodel:\n  growth_rate: 6\n")
    config = resolve("smoke", str(path), ["train.epochs=5"])
    assert (config.train.epochs, config.train.batch_size, config.model.growth_rate) == (5, 32, 6)
    as_json = tmp_path / "c.json"
    as_json.write_text(json.dumps({"train": {"epochs": "x"}}))
    with pytest.raises(ConfigError, match="train.epochs must be an integer"):
        resolve("smoke", str(as_json))


def test_too_many_blocks_for_the_map_is_rejected():
    with pytest.raises(ConfigError, match="too many blocks"):
        apply_overrides(PRESETS["smoke"], ["model.stem_stride=2", "model.block_layers=1,1,1,1,1"])


def test_a_run_saved_before_new_fields_existed_resumes_as_the_same_experiment():
    from tfdense.config import result_identity

    saved = json.loads(json.dumps(PRESETS["full"].to_dict()))
    for field in ("ema_momentum", "teacher", "distill_alpha", "distill_temperature"):
        del saved["train"][field]  # absent from configs written before these existed
    saved["train"]["verbose"] = 2  # does not change results
    assert result_identity(saved) == result_identity(PRESETS["full"].to_dict())
    saved["train"]["epochs"] = 7
    assert result_identity(saved) != result_identity(PRESETS["full"].to_dict())
