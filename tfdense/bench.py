"""Throughput of one config: training through the input pipeline vs on in-memory tensors.

    python -m tfdense.bench --preset full [--set train.batch_size=256] [--steps 40]

Reports training img/s through the full tf.data pipeline (real CIFAR-10, augmentation on),
model-only training img/s on one batch held in memory, their ratio (the pipeline is not the
bottleneck when it is >= 0.9), inference img/s, and the input pipeline alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import numpy as np

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
from tfdense.config import PRESETS, ConfigError, RunConfig, resolve


class _SteadyTimer:
    """Times the batches after `warmup` inside one `fit`, so tracing and start-up are excluded."""

    def __init__(self, warmup: int):
        import tf_keras as keras

        timer = self

        class Callback(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                if batch == warmup:
                    timer.start = time.perf_counter()

            def on_train_end(self, logs=None):
                timer.end = time.perf_counter()

        self.callback = Callback()
        self.start = self.end = 0.0


def _time_fit(model, dataset, steps: int, warmup_steps: int) -> float:
    """Steps/s of `model.fit` over `steps` batches that follow `warmup_steps` untimed ones."""
    timer = _SteadyTimer(warmup_steps)
    model.fit(dataset, steps_per_epoch=warmup_steps + steps, epochs=1, verbose=0, callbacks=[timer.callback])
    return steps / (timer.end - timer.start)


def benchmark(config: RunConfig, steps: int = 40, warmup_steps: int = 8) -> dict[str, float]:
    """Measures the throughputs described in the module doc for `config`; returns img/s figures."""
    import tensorflow as tf

    from tfdense import data as data_lib
    from tfdense import fitting
    from tfdense.costs import model_costs
    from tfdense.model import build_densenet

    train = config.train
    data = data_lib.prepare(config.data)
    bs = train.batch_size
    pipeline = data_lib.train_dataset(data.x_train, data.y_train, bs, config.data, seed=train.seed).repeat()

    start = time.perf_counter()
    for _ in pipeline.take(steps):
        pass
    pipeline_only = steps * bs / (time.perf_counter() - start)

    model = build_densenet(config.model)
    recipe = fitting.Recipe.for_stage(config, "train")
    fitting.compile_model(model, recipe, fitting.steps_per_epoch(len(data.x_train), bs))
    batch = next(iter(pipeline))
    in_memory = tf.data.Dataset.from_tensors(batch).repeat()
    model_only = _time_fit(model, in_memory, steps, warmup_steps) * bs
    through_pipeline = _time_fit(model, pipeline, steps, warmup_steps) * bs

    infer_bs = 500
    images = tf.constant(data.x_val[:infer_bs].astype(np.float32))
    predict = tf.function(lambda x: model(x, training=False))
    predict(images)
    start = time.perf_counter()
    repeats = 5
    for _ in range(repeats):
        predict(images).numpy()
    inference = repeats * infer_bs / (time.perf_counter() - start)
    return {
        **dataclasses.asdict(model_costs(model)),
        "batch_size": bs,
        "train_img_per_s_pipeline": through_pipeline,
        "train_img_per_s_model_only": model_only,
        "pipeline_to_model_ratio": through_pipeline / model_only,
        "inference_img_per_s": inference,
        "input_pipeline_img_per_s": pipeline_only,
        "seconds_per_epoch_estimate": len(data.x_train) / through_pipeline,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfdense.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="full", help=f"one of {', '.join(PRESETS)} (default: full)")
    parser.add_argument("--config", help="JSON or YAML config file applied over the preset")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per measurement")
    parser.add_argument("--intra-op-threads", type=int, default=0, help="TensorFlow intra-op threads (0 = TF's default)")
    parser.add_argument("--inter-op-threads", type=int, default=0, help="TensorFlow inter-op threads (0 = TF's default)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    try:
        config = resolve(args.preset, args.config, args.set)
        if args.steps < 1:
            raise ConfigError(f"--steps must be >= 1, got {args.steps}")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import tensorflow as tf

    # Thread pools must be sized before TensorFlow runs its first op.
    tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    result = benchmark(config, steps=args.steps)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"config: preset {args.preset}, batch {result['batch_size']}, {result['macs'] / 1e6:.2f}M MACs, {result['params']:,} params")
        print(f"training through the input pipeline  {result['train_img_per_s_pipeline']:8.0f} img/s  (~{result['seconds_per_epoch_estimate']:.0f} s/epoch)")
        print(f"training on in-memory tensors        {result['train_img_per_s_model_only']:8.0f} img/s")
        print(f"ratio pipeline / model-only          {result['pipeline_to_model_ratio']:8.2f}   (target >= 0.9)")
        print(f"inference (batch 500)                {result['inference_img_per_s']:8.0f} img/s")
        print(f"input pipeline alone                 {result['input_pipeline_img_per_s']:8.0f} img/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
