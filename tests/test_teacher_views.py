"""The teacher's predictions on fixed augmented views: computed once, cached, read by the batches."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tfdense import data as data_lib
from tfdense import distillation, fitting
from tfdense.config import PRESETS, ConfigError, DataConfig, DenseNetConfig, RunConfig, TrainConfig

CONFIG = dataclasses.replace(
    PRESETS["smoke"],
    model=DenseNetConfig(name="tiny", stem_filters=8, block_layers=(1, 1), growth_rate=4, bottleneck=8),
    data=DataConfig(train_subset=0, crop_padding=1),
    train=TrainConfig(epochs=2, batch_size=16, warmup_epochs=0.5, verbose=0),
)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (24, 32, 32, 3)).astype(np.uint8), rng.integers(0, 10, 24).astype(np.uint8)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    import tf_keras as keras

    from tfdense.model import build_densenet

    keras.utils.set_random_seed(3)
    path = tmp_path_factory.mktemp("teacher") / "teacher.h5"
    model = build_densenet(CONFIG.model)
    model.save(str(path), include_optimizer=False)
    return model, str(path)


def view_of(image: np.ndarray, padding: int, dy: int, dx: int, flip: bool) -> np.ndarray:
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    crop = padded[dy : dy + image.shape[0], dx : dx + image.shape[1]]
    return crop[:, ::-1] if flip else crop


def test_each_image_gets_distinct_views_and_all_of_them_when_asked_for_as_many():
    data_config = DataConfig(crop_padding=1, flip=True)
    dy, dx, flip = distillation.draw_views(50, data_config, mirrored_alike=False, count=18, seed=0)
    for i in range(50):
        assert len({(a, b, c) for a, b, c in zip(dy[i], dx[i], flip[i], strict=True)}) == 18
    dy, dx, flip = distillation.draw_views(50, data_config, mirrored_alike=True, count=4, seed=0)
    assert flip is None and dy.min() >= 0 and dx.max() <= 2
    assert all(len(set(zip(dy[i], dx[i], strict=True))) == 4 for i in range(50))
    with pytest.raises(ValueError, match=r"\[1, 9\]"):
        distillation.draw_views(50, data_config, mirrored_alike=True, count=10, seed=0)


def test_the_cached_log_probabilities_are_the_teachers_on_those_views_and_a_second_call_reads_them(tmp_path, images, teacher, monkeypatch):
    x, _ = images
    model, path = teacher
    views = distillation.teacher_views((path,), False, x, CONFIG.data, 5, seed=0, cache_dir=tmp_path)
    assert views.log_probs.shape == (24, 5, 10) and views.log_probs.dtype == np.float16 and views.flip is not None
    crops = np.stack([view_of(x[i], 1, views.dy[i, k], views.dx[i, k], views.flip[i, k]) for i in range(24) for k in range(5)])
    expected = np.log(np.maximum(model.predict(crops.astype(np.float32), verbose=0), 1e-7)).reshape(24, 5, 10)
    np.testing.assert_allclose(views.log_probs, expected, atol=2e-2)
    assert len(list(tmp_path.glob("*.npz"))) == 1

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher was loaded although its predictions are cached")

    monkeypatch.setattr(distillation, "load_teacher", no_teacher)
    again = distillation.teacher_views((path,), False, x, CONFIG.data, 5, seed=0, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.log_probs, views.log_probs)
    np.testing.assert_array_equal(again.dy, views.dy)
    # Other images are other predictions: the cache does not answer for them.
    with pytest.raises(AssertionError, match="cached"):
        distillation.teacher_views((path,), False, x[::-1].copy(), CONFIG.data, 5, seed=0, cache_dir=tmp_path)


def test_batches_of_views_carry_each_images_view_and_the_teachers_log_probabilities_on_it(tmp_path, images, teacher):
    x, y = images
    _, path = teacher
    views = distillation.teacher_views((path,), False, x, CONFIG.data, 3, seed=1, cache_dir=tmp_path)
    seen = 0
    for xb, yb, tb in data_lib.train_dataset(x, y, 8, CONFIG.data, seed=0, views=views):
        for image, label, log_probs in zip(xb.numpy(), yb.numpy(), tb.numpy(), strict=True):
            matches = [
                (i, k) for i in range(len(x)) for k in range(3)
                if np.array_equal(view_of(x[i], 1, views.dy[i, k], views.dx[i, k], views.flip[i, k]), image)
            ]
            assert len(matches) == 1, "every image of a batch is exactly one of the precomputed views"
            (i, k), = matches
            assert np.argmax(label) == y[i]
            np.testing.assert_array_equal(log_probs, views.log_probs[i, k].astype(np.float32))
            seen += 1
    assert seen == 24


def test_rotated_views_hold_the_teachers_predictions_on_exactly_the_batches_images(tmp_path, images, teacher):
    import tensorflow as tf

    x, y = images
    model, path = teacher
    rotated = dataclasses.replace(CONFIG.data, rotation=15)
    views = distillation.teacher_views((path,), False, x, rotated, 3, seed=1, cache_dir=tmp_path)
    plain = distillation.teacher_views((path,), False, x, CONFIG.data, 3, seed=1, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 2, "rotated views are cached under a key of their own"
    np.testing.assert_array_equal(views.dy, plain.dy)  # the same crops and flips, then turned
    assert plain.angle is None and np.abs(views.angle).max() <= 15 and views.angle.std() > 3

    def turned(i, k):
        crop = view_of(x[i], 1, views.dy[i, k], views.dx[i, k], views.flip[i, k])
        return data_lib.rotate(tf.constant(crop[None]), tf.constant([views.angle[i, k]])).numpy()[0]

    expected = np.log(np.maximum(model.predict(np.stack([turned(i, 0) for i in range(24)]), verbose=0), 1e-7))
    np.testing.assert_allclose(views.log_probs[:, 0], expected, atol=2e-2)
    for xb, _, tb in data_lib.train_dataset(x, y, 8, rotated, seed=0, views=views).take(1):
        for image, log_probs in zip(xb.numpy(), tb.numpy(), strict=True):
            (i, k), = [(i, k) for i in range(len(x)) for k in range(3) if np.allclose(turned(i, k), image, atol=1e-3)]
            np.testing.assert_array_equal(log_probs, views.log_probs[i, k].astype(np.float32))


def test_rotated_views_predicted_with_their_mirror_reach_the_batch_as_that_view_or_its_mirror(tmp_path, images, teacher):
    import tensorflow as tf

    x, y = images
    _, path = teacher
    rotated = dataclasses.replace(CONFIG.data, rotation=15)
    views = distillation.teacher_views((path,), True, x, rotated, 3, seed=1, cache_dir=tmp_path)
    assert views.flip is None and views.angle is not None

    def turned(i, k):
        crop = view_of(x[i], 1, views.dy[i, k], views.dx[i, k], False)
        return data_lib.rotate(tf.constant(crop[None]), tf.constant([views.angle[i, k]])).numpy()[0]

    mirrored = 0
    for xb, _, tb in data_lib.train_dataset(x, y, 8, rotated, seed=0, views=views):
        for image, log_probs in zip(xb.numpy(), tb.numpy(), strict=True):
            # The teacher averaged view k and its mirror image; a mirror taken before the turn
            # would be neither (the mirror of a turn by -angle).
            matches = [(i, k, m) for i in range(len(x)) for k in range(3) for m in (False, True)
                       if np.allclose(turned(i, k)[:, ::-1] if m else turned(i, k), image, atol=1e-3)]
            assert len(matches) == 1
            (i, k, m), = matches
            mirrored += m
            np.testing.assert_array_equal(log_probs, views.log_probs[i, k].astype(np.float32))
    assert 0 < mirrored < 24


def test_views_cached_without_rotation_keep_the_key_they_had_before_rotation_existed(tmp_path):
    teacher_file = tmp_path / "t.h5"
    teacher_file.write_bytes(b"weights")
    x = np.arange(2 * 32 * 32 * 3, dtype=np.uint8).reshape(2, 32, 32, 3)
    key = distillation.views_key((str(teacher_file),), True, x, DataConfig(), 32, 0)
    assert key == "ab30ff3936f31f4fa49293b8"
    assert distillation.views_key((str(teacher_file),), True, x, DataConfig(rotation=10), 32, 0) != key


def test_a_student_distils_from_cached_views_and_the_config_says_when_it_cannot(tmp_path, images, teacher, monkeypatch):
    x, y = images
    _, path = teacher
    train = dataclasses.replace(CONFIG.train, teacher=(path,), teacher_flip=True, teacher_views=4, distill_alpha=0.7)
    config = dataclasses.replace(CONFIG, model=dataclasses.replace(CONFIG.model, growth_rate=2), train=train)
    data = data_lib.Cifar(x_train=x[:16], y_train=y[:16], x_val=x[16:], y_val=y[16:])
    paths = fitting.FitPaths(backup=tmp_path / "b", history=tmp_path / "h.csv", logs=tmp_path / "logs")
    from tfdense.model import build_densenet

    monkeypatch.setenv("TFDENSE_CACHE", str(tmp_path / "cache"))
    _, summary = fitting.fit(lambda: build_densenet(config.model), data, config.data, fitting.Recipe.for_stage(config, "train"), paths)
    assert summary.epochs == 2 and all(r["distill_loss"] > 0 for r in fitting.read_history(paths.history))
    assert len(list((tmp_path / "cache" / "teacher_views").glob("*.npz"))) == 1
    # Prune and QAT read them only when they distil from the train stage's teacher (distill_from).
    assert fitting.Recipe.for_stage(config, "prune").teacher_views == 0

    with pytest.raises(ConfigError, match="teacher_views needs train.teacher"):
        TrainConfig(teacher_views=4)
    with pytest.raises(ConfigError, match="data.cutout 0"):
        RunConfig(data=DataConfig(cutout=8), train=train)
    # A teacher that averages an image with its mirror sees 9 views in a 1-pixel crop, 18 without.
    with pytest.raises(ConfigError, match="must be <= 9"):
        RunConfig(data=CONFIG.data, train=dataclasses.replace(train, teacher_views=10))
    RunConfig(data=CONFIG.data, train=dataclasses.replace(train, teacher_flip=False, teacher_views=18))
