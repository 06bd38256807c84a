"""Knowledge distillation: a student fitted to a frozen teacher's softened predictions.

`load_teacher` turns `train.teacher` (one saved Keras model or several, optionally with their
mirrored views) into one teacher; `Distiller` wraps the student so that `fitting.fit` trains it
on (1 - alpha) * its hard-label loss + alpha * T^2 * KL(teacher_T || student_T). With
`train.teacher_views`, `teacher_views` computes the teacher's predictions on a fixed set of
augmented views once (cached on disk) and the Distiller reads them from the batches instead.
"""

from __future__ import annotations

import hashlib
import io
import sys
import types
from pathlib import Path

import numpy as np

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

from tfdense import data as data_lib
from tfdense.files import write_atomic

# Bump when what a cached file holds changes meaning; old files are then recomputed.
VIEWS_FORMAT = 1


class Distiller(keras.Model):
    """Trains `student` on (1 - alpha) * its compiled loss + alpha * T^2 * KL(teacher_T || student_T).

    Both models output softmax probabilities; softening by T works on their logs (log p equals
    the logits up to a per-image constant, which the softmax removes). The teacher sees the same
    augmented batch and is never trained. Calls, evaluation and predictions are the student's.

    The teacher is held outside Keras' tracking, so the resume checkpoint holds the student and
    its optimizer only: a 1.97M-parameter teacher (tuning/configs/teacher_plain.yaml) would add
    7.9 MB to every backup, over the 5 MiB a committed checkpoint may weigh. It is loaded again
    from its file when a run resumes.
    """

    def __init__(self, student: keras.Model, teacher: keras.Model, alpha: float, temperature: float):
        super().__init__(name="distiller")
        self.student = student
        teacher.trainable = False
        self._untracked = types.SimpleNamespace(teacher=teacher)  # not a Layer attribute: no checkpoint dependency
        self.alpha = alpha
        self.temperature = temperature

    @property
    def teacher(self) -> keras.Model:
        return self._untracked.teacher

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def _soften(self, log_probs):
        return tf.nn.softmax(log_probs / self.temperature, axis=-1)

    def train_step(self, data):
        if len(data) == 3:  # batches of precomputed views carry the teacher's log-probabilities
            x, y, teacher_log_probs = data
        else:
            x, y = data
            teacher_log_probs = clipped_log(self.teacher(x, training=False))
        teacher_probs = self._soften(teacher_log_probs)
        with tf.GradientTape() as tape:
            probs = self.student(x, training=True)
            hard = self.compiled_loss(y, probs, regularization_losses=self.student.losses)
            soft = tf.reduce_mean(keras.losses.kl_divergence(teacher_probs, self._soften(clipped_log(probs)))) * self.temperature**2
            loss = (1.0 - self.alpha) * hard + self.alpha * soft
        self.optimizer.minimize(loss, self.student.trainable_variables, tape=tape)
        self.compiled_metrics.update_state(y, probs)
        return {"distill_loss": soft, **{m.name: m.result() for m in self.metrics}}


def clipped_log(probs):
    """log p, floored at log 1e-7 so a zero probability stays finite."""
    return tf.math.log(tf.maximum(probs, 1e-7))


class TeacherEnsemble(keras.Model):
    """Several trained models (and optionally their mirrored views) as one: the normalized
    geometric mean of their softmax outputs, i.e. the softmax of their averaged log-probabilities.

    Averaging log-probabilities keeps what the members agree on sharp and softens where they
    disagree; on the validation split two DenseNets of 87.6 % and 86.5 % score 89.0 % this way,
    89.8 % with their mirrored views (python -m tfdense teacher tuning/teachers/dn111k_float.h5
    tuning/teachers/dn71k_float.h5).
    """

    def __init__(self, members: list[keras.Model], flip: bool):
        super().__init__(name="teacher_ensemble")
        self.members = members
        self.flip = flip

    def call(self, inputs, training=None):
        views = [inputs, tf.reverse(inputs, axis=[2])] if self.flip else [inputs]
        logs = [clipped_log(m(v, training=False)) for m in self.members for v in views]
        return tf.nn.softmax(tf.add_n(logs) / len(logs), axis=-1)


def load_teacher(files: tuple[str, ...], flip: bool = False) -> keras.Model:
    """The teacher `files` describe: one saved model as it is, or a `TeacherEnsemble` of them.

    A single file without the flip stays the bare model, so runs started with one teacher
    resume from their checkpoints (which hold the teacher's variables) unchanged.
    """
    members = [keras.models.load_model(f, compile=False) for f in files]
    for member in members:
        member.trainable = False
    if len(members) == 1 and not flip:
        return members[0]
    return TeacherEnsemble(members, flip)


def draw_views(images: int, data_config, mirrored_alike: bool, count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """`count` different (dy, dx[, flip]) views per image, drawn without replacement from the
    ones `data_config`'s crop and flip make (all of them, in random order, when `count` is their number)."""
    offsets = (2 * data_config.crop_padding + 1) ** 2
    distinct = data_config.distinct_views(mirrored_alike)
    if not 1 <= count <= distinct:
        raise ValueError(f"count must be in [1, {distinct}], got {count}")
    rng = np.random.default_rng(seed)
    chosen = np.argsort(rng.random((images, distinct)), axis=1)[:, :count]
    offset = chosen % offsets
    side = 2 * data_config.crop_padding + 1
    flip = (chosen // offsets).astype(bool) if distinct > offsets else None
    return (offset // side).astype(np.int32), (offset % side).astype(np.int32), flip


def draw_angles(images: int, data_config, count: int, seed: int) -> np.ndarray | None:
    """A rotation in degrees, uniform in +-`data_config.rotation`, for each view; None without rotation.

    A stream of its own, so the crops and flips `draw_views` gives the same seed stay as they are."""
    if not data_config.rotation:
        return None
    rng = np.random.default_rng([seed, 1])
    return rng.uniform(-data_config.rotation, data_config.rotation, (images, count)).astype(np.float32)


def views_key(teacher_files: tuple[str, ...], teacher_flip: bool, x: np.ndarray, data_config, count: int, seed: int) -> str:
    """What decides a cached file's content: the teacher's bytes, the images, the views drawn."""
    drawn = f"{VIEWS_FORMAT}|{teacher_flip}|{data_config.crop_padding}|{data_config.flip}|{count}|{seed}"
    if data_config.rotation:  # named only when on, so the files cached before rotation existed keep their keys
        drawn += f"|rotation={data_config.rotation:g}"
    h = hashlib.sha256(drawn.encode())
    for name in teacher_files:
        h.update(hashlib.sha256(Path(name).read_bytes()).digest())
    h.update(hashlib.sha256(np.ascontiguousarray(x).tobytes()).digest())
    return h.hexdigest()[:24]


def teacher_views(
    teacher_files: tuple[str, ...],
    teacher_flip: bool,
    x: np.ndarray,
    data_config,
    count: int,
    seed: int,
    cache_dir: Path | None = None,
    batch_size: int = 500,
) -> data_lib.Views:
    """The teacher's log-probabilities on `count` augmented views of every image in `x`.

    Read from `cache_dir` (default ~/.cache/tfdense/teacher_views) when this teacher, these
    images and these views were computed before; otherwise computed with a progress bar and
    written there (float16, 20 bytes per view of an image).
    """
    folder = Path(cache_dir) if cache_dir is not None else data_lib.default_cache_dir() / "teacher_views"
    path = folder / f"{views_key(teacher_files, teacher_flip, x, data_config, count, seed)}.npz"
    dy, dx, flip = draw_views(len(x), data_config, teacher_flip, count, seed)
    angle = draw_angles(len(x), data_config, count, seed)
    if path.is_file():
        with np.load(path) as cached:
            log_probs = cached["log_probs"]
        if log_probs.shape[:2] == (len(x), count):
            return data_lib.Views(data_config.crop_padding, dy, dx, flip, log_probs, angle)
    teacher = load_teacher(teacher_files, teacher_flip)
    predict = tf.function(lambda images: clipped_log(teacher(images, training=False)))
    log_probs = np.empty((len(x), count, data_lib.NUM_CLASSES), np.float16)
    print(f"[tfdense.distillation] the teacher predicts {count} views of {len(x):,} images once -> {path}", file=sys.stderr, flush=True)
    bar = keras.utils.Progbar(len(x) * count, unit_name="view")
    for k in range(count):
        for start in range(0, len(x), batch_size):
            rows = slice(start, start + batch_size)
            images = data_lib.view(tf.constant(x[rows]), data_config.crop_padding, tf.constant(dy[rows, k]), tf.constant(dx[rows, k]),
                                   None if flip is None else tf.constant(flip[rows, k]), None if angle is None else tf.constant(angle[rows, k]))
            log_probs[rows, k] = predict(tf.cast(images, tf.float32)).numpy()
            bar.add(len(x[rows]))
    buffer = io.BytesIO()
    np.savez(buffer, log_probs=log_probs)
    write_atomic(path, buffer.getvalue())
    return data_lib.Views(data_config.crop_padding, dy, dx, flip, log_probs, angle)
