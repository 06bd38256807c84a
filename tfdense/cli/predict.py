"""`python -m tfdense predict IMAGE... [--model FILE] [--top K]`: classify photos with a .tflite.

Any PNG, JPEG, GIF or BMP of any size: decoded to RGB, resized to 32x32 (bilinear, with
antialiasing so a large photo is averaged rather than sampled), and fed as raw pixels through
LiteRT; the input's quantization is read from the model. Prints the top-K CIFAR-10 labels with
their scores. Defaults to the shipped model, `exports/model_int8.tflite`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "exports" / "model_int8.tflite"


class ImageError(ValueError):
    """An image file that cannot be read as a picture."""


def load_image(path: str | Path, size: int = 32) -> np.ndarray:
    """The image as uint8 RGB (size, size, 3); ImageError if it cannot be decoded."""
    import tensorflow as tf

    try:
        content = Path(path).read_bytes()
        image = tf.io.decode_image(content, channels=3, expand_animations=False)
    except OSError as e:
        raise ImageError(f"{path}: {e.strerror}") from e
    except (tf.errors.InvalidArgumentError, ValueError) as e:
        raise ImageError(f"{path}: not a readable PNG/JPEG/GIF/BMP image") from e
    resized = tf.image.resize(tf.cast(image, tf.float32), (size, size), method="bilinear", antialias=True)
    return np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfdense predict", description="Classify images with a CIFAR-10 .tflite model.")
    parser.add_argument("images", nargs="+", help="PNG/JPEG/GIF/BMP files of any size")
    parser.add_argument("--model", default=str(SHIPPED_MODEL), help=f"a 32x32x3 CIFAR-10 .tflite (default: {SHIPPED_MODEL.relative_to(SHIPPED_MODEL.parents[1])})")
    parser.add_argument("--top", type=int, default=3, help="labels to print per image (default 3)")
    args = parser.parse_args(argv)
    if not 1 <= args.top <= 10:
        print(f"error: --top must be in 1..10, got {args.top}", file=sys.stderr)
        return 2

    from tfdense.data import CLASS_NAMES
    from tfdense.litert import ModelError, TFLiteClassifier

    try:
        model = TFLiteClassifier(args.model)
        images = [load_image(path) for path in args.images]
    except (ModelError, ImageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    scores = model.scores(np.stack(images))
    for path, row in zip(args.images, scores):
        best = np.argsort(-row)[: args.top]
        print(f"{path}: " + ", ".join(f"{CLASS_NAMES[i]} {row[i]:.3f}" for i in best))
    return 0


if __name__ == "__main__":
    sys.exit(main())
