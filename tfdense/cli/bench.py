"""Throughput of one config: training through the input pipeline vs on in-memory tensors.

    python -m tfdense bench --preset full [--set train.batch_size=256] [--steps 40] [--layers]
    python -m tfdense bench --config C.yaml --device [--arm NAME=OVERRIDES ...] [--rounds 15]

Reports training img/s through the full tf.data pipeline (real CIFAR-10, augmentation on),
model-only training img/s on one batch held in memory, their ratio (the pipeline is not the
bottleneck when it is >= 0.9), inference img/s, and the input pipeline alone. `--layers`
instead times each layer's training step alone (forward and backward on a batch of random
inputs of its shape), beside its MACs: a MAC count misses what memory-bound layers (BatchNorm,
ReLU, pooling, concatenation on large maps) cost on a CPU.

With `train.teacher` set, it also times distillation with the teacher predicting every batch
(the Distiller's step through the pipeline) and the teacher's own rate, so the one-time cost of
`train.teacher_views` (each view of each image predicted once) can be set against the per-epoch
cost of a teacher in the loop.

`--device` answers the inference question before any training: it converts each arm (the config
plus its overrides, as `tfdense.ablate` takes them) untrained to the full-int8 file the pipeline
would ship (`conversion.untrained_int8`: same QAT, converter and stripping; size and speed do not
depend on trained values) and times the files with LiteRT on one thread, interleaved with the
MLPerf Tiny peers in the same rounds, so arms compare to each other and to ResNet-8 under the
same load.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass

import numpy as np

import tfdense  # noqa: F401  (forces legacy Keras before TensorFlow loads)
from tfdense.config import ConfigError, RunConfig, add_config_arguments, apply_overrides, check_paths, config_from_args, parse_arms
from tfdense.tables import markdown_table


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


def _inference_img_per_s(model, images, repeats: int = 5) -> float:
    """Images/s of `model` in inference on the batch `images`, after one untimed trace."""
    import tensorflow as tf

    predict = tf.function(lambda x: model(x, training=False))
    predict(images)
    start = time.perf_counter()
    for _ in range(repeats):
        predict(images).numpy()
    return repeats * len(images) / (time.perf_counter() - start)


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
    pipeline = data_lib.train_dataset(data.x_train, data.y_train, bs, config.data, seed=train.seed, repeat=True)

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
    inference = _inference_img_per_s(model, images)
    distilling = {}
    if train.teacher:
        from tfdense.distillation import Distiller, load_teacher

        teacher = load_teacher(train.teacher, train.teacher_flip)
        distiller = Distiller(build_densenet(config.model), teacher, train.distill_alpha, train.distill_temperature)
        fitting.compile_model(distiller, recipe, fitting.steps_per_epoch(len(data.x_train), bs))
        with_teacher = _time_fit(distiller, pipeline, steps, warmup_steps) * bs
        views_per_s = _inference_img_per_s(teacher, images)
        distilling = {
            "train_img_per_s_teacher_every_batch": with_teacher,
            "seconds_per_epoch_teacher_every_batch": len(data.x_train) / with_teacher,
            "teacher_views_per_s": views_per_s,
            "seconds_to_cache_one_view_per_image": len(data.x_train) / views_per_s,
        }
    return {
        **dataclasses.asdict(model_costs(model, config.qat.per_channel)),
        "batch_size": bs,
        "train_img_per_s_pipeline": through_pipeline,
        "train_img_per_s_model_only": model_only,
        "pipeline_to_model_ratio": through_pipeline / model_only,
        "inference_img_per_s": inference,
        "input_pipeline_img_per_s": pipeline_only,
        "seconds_per_epoch_estimate": len(data.x_train) / through_pipeline,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        **distilling,
    }


@dataclass(frozen=True)
class LayerTime:
    """One layer's training step alone, for a batch of `batch_size` images."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    macs: int  # per image
    ms: float  # forward + backward, median of the timed steps


def layer_step_times(model, batch_size: int, steps: int = 5) -> list[LayerTime]:
    """Times each layer of `model` on its own: a copy fed random inputs of its input shapes.

    Gradients flow to the layer's trainable weights and to those of its inputs that depend on a
    trainable weight upstream, as in the whole model's backward pass. The sum over layers
    approximates a training step (it leaves out the loss and the optimizer update).
    """
    import tensorflow as tf
    import tf_keras as keras

    from tfdense.costs import layer_costs

    macs = {c.name: c.macs for c in layer_costs(model)}
    carries_gradient: set[str] = set()  # layers whose output a trainable weight upstream depends on
    rows = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        tensors = layer.input if isinstance(layer.input, list) else [layer.input]
        needs_input_grad = [t._keras_history.layer.name in carries_gradient for t in tensors]
        if any(needs_input_grad) or layer.trainable_weights:
            carries_gradient.add(layer.name)
        inputs = [keras.Input(t.shape[1:]) for t in tensors]
        clone = layer.__class__.from_config(layer.get_config())
        single = keras.Model(inputs, clone(inputs if len(inputs) > 1 else inputs[0]))
        clone.set_weights(layer.get_weights())
        clone.trainable = layer.trainable
        values = [tf.random.uniform((batch_size, *t.shape[1:]), 0.0, 1.0) for t in tensors]

        @tf.function
        def step(values):
            with tf.GradientTape() as tape:
                tape.watch(values)
                out = single(values if len(values) > 1 else values[0], training=True)
                loss = tf.reduce_sum(tf.square(out))
            sources = [v for v, grad in zip(values, needs_input_grad) if grad] + single.trainable_variables
            return tape.gradient(loss, sources) if sources else [loss]

        step(values)  # trace
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            _ = [g.numpy() for g in step(values) if g is not None]
            times.append(time.perf_counter() - start)
        rows.append(LayerTime(layer.name, type(layer).__name__, tuple(layer.output.shape[1:]), macs.get(layer.name, 0), 1000 * float(np.median(times))))
    return rows


def format_layer_times(rows: list[LayerTime]) -> str:
    total = sum(r.ms for r in rows) or 1.0
    cells = [(r.name, r.kind, "x".join(str(d) for d in r.output_shape), f"{r.macs:,}", f"{r.ms:.1f}", f"{100 * r.ms / total:.1f} %") for r in rows]
    cells.append(("**sum**", "", "", f"{sum(r.macs for r in rows):,}", f"{total:.1f}", ""))
    return markdown_table(("layer", "kind", "output", "MACs", "ms per step", "share"), cells)


@dataclass(frozen=True)
class DeviceTime:
    """One int8 file's single-image LiteRT latency, timed in the same rounds as every other row."""

    name: str
    weights: int
    macs: int
    tflite_bytes: int
    latency_ms: float
    vs_reference: float  # latency over the first peer's (MLPerf Tiny ResNet-8)


def device_times(arms: list[tuple[str, RunConfig]], rounds: int = 15) -> list[DeviceTime]:
    """Untrained full-int8 files of `arms`, then the MLPerf Tiny peers, timed interleaved."""
    from tfdense.conversion import untrained_int8
    from tfdense.litert import graph_stats, latencies_beside_peers
    from tfdense.model import build_densenet
    from tfdense.peers import peer_files

    files: list[tuple[str, bytes]] = []
    for name, config in arms:
        print(f"[tfdense] {name}: converting the untrained architecture to full int8", file=sys.stderr, flush=True)
        files.append((name, untrained_int8(build_densenet(config.model), shared_ranges=config.qat.shared_concat_ranges,
                                           per_channel=config.qat.per_channel)))
    print(f"[tfdense] timing {len(files) + 2} files interleaved, {rounds} rounds of 300 images", file=sys.stderr, flush=True)
    latencies, peer_latencies = latencies_beside_peers([content for _, content in files], rounds)
    files += [(path.name, path.read_bytes()) for path in peer_files("mlperf-tiny")]
    reference = peer_latencies[0]
    rows = []
    for (name, content), ms in zip(files, latencies + peer_latencies):
        stats = graph_stats(content)
        rows.append(DeviceTime(name, stats.weights, stats.macs, len(content), ms, ms / reference))
    return rows


def format_device_times(rows: list[DeviceTime]) -> str:
    return markdown_table(("file", "weights", "MACs", "int8 bytes", "latency ms", "vs ResNet-8"),
                          [(r.name, f"{r.weights:,}", f"{r.macs / 1e6:.2f}M", f"{r.tflite_bytes:,}", f"{r.latency_ms:.3f}", f"{r.vs_reference:.2f}x") for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfdense bench", description=__doc__.split("\n\n")[0])
    add_config_arguments(parser, what="the benchmark")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per measurement")
    parser.add_argument("--intra-op-threads", type=int, default=0, help="TensorFlow intra-op threads (0 = TF's default)")
    parser.add_argument("--inter-op-threads", type=int, default=0, help="TensorFlow inter-op threads (0 = TF's default)")
    parser.add_argument("--layers", action="store_true", help="time each layer's training step alone instead (a markdown table)")
    parser.add_argument("--device", action="store_true", help="time the untrained full-int8 file of each arm beside the peers instead")
    parser.add_argument("--arm", action="append", default=[], metavar="NAME[=OVERRIDES]", help="with --device: one architecture (default: the config)")
    parser.add_argument("--rounds", type=int, default=15, help="with --device: rounds of 300 invocations per file (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        if args.steps < 1 or args.rounds < 1:
            raise ConfigError(f"--steps and --rounds must be >= 1, got {args.steps} and {args.rounds}")
        if args.arm and not args.device:
            raise ConfigError("--arm only applies with --device")
        arms = [(name, apply_overrides(config, overrides)) for name, overrides in parse_arms(args.arm or ["config"])]
        for _, arm in arms:
            check_paths(arm)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.device:
        rows = device_times(arms, rounds=args.rounds)
        print(json.dumps([dataclasses.asdict(r) for r in rows], indent=2) if args.json else format_device_times(rows))
        return 0
    import tensorflow as tf

    # Thread pools must be sized before TensorFlow runs its first op.
    tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    if args.layers:
        from tfdense.model import build_densenet

        model = build_densenet(config.model)
        # A whitened stem is frozen in training: no gradient reaches it or anything before it.
        model.get_layer("stem_conv").trainable = config.model.stem_init != "whiten"
        rows = layer_step_times(model, config.train.batch_size, steps=args.steps)
        print(json.dumps([dataclasses.asdict(r) for r in rows], indent=2) if args.json else format_layer_times(rows))
        return 0
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
        if "teacher_views_per_s" in result:
            print(f"training, teacher on every batch     {result['train_img_per_s_teacher_every_batch']:8.0f} img/s  "
                  f"(~{result['seconds_per_epoch_teacher_every_batch']:.0f} s/epoch)")
            print(f"teacher alone (as train.teacher_flip) {result['teacher_views_per_s']:7.0f} views/s (train.teacher_views=N: "
                  f"~N x {result['seconds_to_cache_one_view_per_image']:.0f} s once)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
