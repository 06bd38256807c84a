"""Knowledge distillation: a student fitted to a frozen teacher's softened predictions.

`load_teacher` turns `train.teacher` (one saved Keras model or several, optionally with their
mirrored views) into one teacher; `Distiller` wraps the student so that `fitting.fit` trains it
on (1 - alpha) * its hard-label loss + alpha * T^2 * KL(teacher_T || student_T).
"""

from __future__ import annotations

import types

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras


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

    def _soften(self, probs):
        return tf.nn.softmax(tf.math.log(tf.maximum(probs, 1e-7)) / self.temperature, axis=-1)

    def train_step(self, data):
        x, y = data
        teacher_probs = self._soften(self.teacher(x, training=False))
        with tf.GradientTape() as tape:
            probs = self.student(x, training=True)
            hard = self.compiled_loss(y, probs, regularization_losses=self.student.losses)
            soft = tf.reduce_mean(keras.losses.kl_divergence(teacher_probs, self._soften(probs))) * self.temperature**2
            loss = (1.0 - self.alpha) * hard + self.alpha * soft
        self.optimizer.minimize(loss, self.student.trainable_variables, tape=tape)
        self.compiled_metrics.update_state(y, probs)
        return {"distill_loss": soft, **{m.name: m.result() for m in self.metrics}}


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
        logs = [tf.math.log(tf.maximum(m(v, training=False), 1e-7)) for m in self.members for v in views]
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
