"""`python -m tfdense ship RUN --name NAME [--out exports]`: publish a finished run's model.

Copies the run's deployable files into `exports/` under `NAME` (`NAME.tflite` from
`model_int8.tflite`, `NAME` with `int8` -> `uint8` from `model_uint8.tflite`, the TFLite Micro C
array regenerated with `NAME` as its symbol, `labels.txt`, and `NAME.yaml`: the run's full
config, which `python -m tfdense.train --config exports/NAME.yaml` trains again; with `--search
FOLDER`, also the keras-tuner search whose `best_config.yaml` chose the architecture, after
checking that the run trained exactly that model). Each shipped
.tflite is measured here on all 10,000 test images with LiteRT (1 thread), and its figures are
merged into `exports/metrics.json`; the latency of the MLPerf Tiny peers and of every file
shipped there is then timed again, all together, interleaved in one process, so the latencies
in metrics.json stay comparable. CI checks metrics.json against the files
(`tests/test_exports.py`). The figures come with the run's training time (train + prune +
QAT epochs, summed over resumed sessions). The float Keras model QAT started from is copied
as `NAME_float.h5` when under 2 MiB, and the model card's plots are redrawn, every shipped int8
file beside the peers: `exports/accuracy_vs_bytes.png` (flash) and `exports/accuracy_vs_arena.png`
(the tensor arena's RAM, `tfdense.device`, recorded with the Ethos-U figures of Vela).

    python -m tfdense ship --refresh
    python -m tfdense ship --table

`--refresh` re-measures what `exports/` already holds without shipping a run: every file's arena
RAM and Vela figures, the peers (`exports/peers.json`), the interleaved latencies, and the plots.
`--table` prints the README's results table from those files (`tests/test_exports.py` checks
that the README holds exactly it).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from tfdense.config import ConfigError, DataConfig, RunConfig, apply_dict, from_dict, load_config_file
from tfdense.files import read_json, write_atomic, write_json
from tfdense.rundir import STAGES, RunDir

EXPORTS = Path(__file__).resolve().parents[2] / "exports"
FLOAT_SOURCE_LIMIT = 2 * 1024 * 1024
PEERS_FILE = "peers.json"  # the MLPerf Tiny peers, measured beside the shipped files
SHIPPED_KEYS = ("test_accuracy", "tflite_bytes", "gzip_bytes", "weights", "nonzero_weights", "params", "macs", "imt_score", "latency_ms",
                "arena_bytes", "arena_peak_op", "npu")


def shipped_figures(metrics, run_dir: RunDir) -> dict[str, Any]:
    """A shipped file's entry of metrics.json; `refresh_latency` then sets its latencies."""
    figures = {k: getattr(metrics, k) for k in SHIPPED_KEYS}
    figures["run"] = str(run_dir.path)
    figures["training_seconds"] = round(training_seconds(run_dir), 1)
    return figures


def refresh_latency(registry: dict[str, dict[str, Any]], out: Path, peers: list[Path], pixels, rounds: int) -> dict[str, float]:
    """Times the peers and every shipped file of `registry` found in `out` together
    (`interleaved_latency_ms`) and rewrites their `latency_ms` and `peer_latency_ms`, so every
    latency in metrics.json comes from the same process. Returns the peers' latencies."""
    from tfdense.litert import TFLiteClassifier, interleaved_latency_ms

    shipped = [name for name in registry if (out / name).is_file()]
    paths = [*peers, *(out / name for name in shipped)]
    times = dict(zip([p.name for p in peers] + shipped, interleaved_latency_ms([TFLiteClassifier(p) for p in paths], pixels, rounds)))
    peer_latency = {p.name: times[p.name] for p in peers}
    for name in shipped:
        registry[name]["latency_ms"] = times[name]
        registry[name]["peer_latency_ms"] = peer_latency  # measured in the same process, interleaved
    return peer_latency


def refresh_device(registry: dict[str, dict[str, Any]], out: Path, measured: frozenset[str] = frozenset()) -> None:
    """Rewrites the arena RAM and Vela figures of every shipped file of `registry` found in `out`,
    but for the `measured` ones, whose figures `evaluate_tflite` has just recorded."""
    from tfdense.device import device_figures

    for name, figures in registry.items():
        if name not in measured and (out / name).is_file():
            figures.update(device_figures((out / name).read_bytes()).to_metrics())


def refresh(out: Path, x_test, y_test, latency_images: int, latency_rounds: int, measured: frozenset[str] = frozenset()) -> dict[str, dict[str, Any]]:
    """Measures the peers, re-times every latency together, re-measures device figures (but of
    `measured`, the files just evaluated), redraws the plots."""
    from tfdense.litert import evaluate_tflite
    from tfdense.peers import peer_files
    from tfdense.plots import accuracy_scatter

    peers = {}
    for peer in peer_files("mlperf-tiny"):
        print(f"[tfdense] measuring peer {peer.name} ...", file=sys.stderr, flush=True)
        peers[peer.name] = evaluate_tflite(peer, x_test, y_test, 1, latency_images)[0]
    registry_path = out / "metrics.json"
    registry = read_json(registry_path)
    refresh_device(registry, out, measured)
    if latency_rounds:
        print(f"[tfdense] timing the peers and {len(registry)} shipped files in {latency_rounds} interleaved rounds ...", file=sys.stderr, flush=True)
        peer_latency = refresh_latency(registry, out, peer_files("mlperf-tiny"), x_test[:latency_images], latency_rounds)
    else:  # the peers' latencies timed beside the recorded ones, in the same process
        peer_latency = next(iter(registry.values()))["peer_latency_ms"]
    peers = {name: dataclasses.replace(m, latency_ms=peer_latency[name]) for name, m in peers.items()}
    write_json(registry_path, registry)
    write_json(out / PEERS_FILE, {name: {k: getattr(m, k) for k in SHIPPED_KEYS} for name, m in peers.items()})
    points = [{**figures, "label": name, "kind": "ours"} for name, figures in sorted(registry.items()) if "uint8" not in name]
    points += [{**m.to_dict(), "label": Path(name).stem, "kind": "peer"} for name, m in peers.items()]
    accuracy_scatter(points, "tflite_bytes", ".tflite bytes = flash (log)", out / "accuracy_vs_bytes.png")
    accuracy_scatter(points, "arena_bytes", "tensor arena RAM, bytes (TFLM greedy plan, log)", out / "accuracy_vs_arena.png")
    return registry


PEER_LABELS = {"pretrainedResnet_quant.tflite": "MLPerf Tiny ResNet-8", "pretrainedResnet_large_int8.tflite": "MLPerf Tiny large ResNet"}


def results_table(out: Path = EXPORTS) -> str:
    """The README's results table: every shipped int8 file, then the peers, from `out`'s metrics.json and peers.json."""
    from tfdense.tables import markdown_table

    rows = [(f"`exports/{name}`", figures) for name, figures in read_json(out / "metrics.json").items() if "uint8" not in name]
    rows += [(PEER_LABELS.get(name, name), figures) for name, figures in read_json(out / PEERS_FILE).items()]
    header = ("model", "test accuracy", "flash (.tflite bytes)", "arena RAM bytes", "weights", "MACs", "IMT score",
              "latency ms (LiteRT, 1 thread)", "Ethos-U55-128 ms (Vela)")
    return markdown_table(header, [
        (label, f"{100 * f['test_accuracy']:.2f} %", f"{f['tflite_bytes']:,}", f"{f['arena_bytes']:,}", f"{f['weights']:,}",
         f"{f['macs']:,}", f"{f['imt_score']:.4f}", f"{f['latency_ms']:.3f}", f"{f['npu']['ethos-u55-128']['inference_ms']:.3f}")
        for label, f in rows])


def training_seconds(run_dir: RunDir) -> float:
    """Seconds spent in the epochs of every fitting stage that ran (resumed sessions summed)."""
    return sum(run_dir.read_stage_metrics(stage)["train_seconds"] for stage in ("train", "prune", "qat") if run_dir.is_complete(stage))


def searched_architecture(search: Path, config: RunConfig) -> str:
    """The provenance line for a model a search chose: "FOLDER (trial N)".

    Raises ConfigError unless `search`/best_config.yaml holds exactly `config.model`.
    """
    best = search / "best_config.yaml"
    if not best.is_file():
        raise ConfigError(f"{best} is missing: --search takes a folder written by python -m tuning.search")
    chosen = apply_dict(RunConfig(), load_config_file(best)).model
    if chosen != config.model:
        differ = [f.name for f in dataclasses.fields(chosen) if getattr(chosen, f.name) != getattr(config.model, f.name)]
        raise ConfigError(f"the run's model is not the one {best} chose (model.{', model.'.join(differ)} differ)")
    trial = re.search(r"trial (\w+)", best.read_text().splitlines()[0])
    return f"{search.as_posix()} (trial {trial.group(1) if trial else '?'})"


def configs_reading(float_file: Path, configs: list[Path]) -> list[Path]:
    """The configs among `configs` whose `train.teacher` or `train.init_from` is `float_file`
    (which shipping would replace)."""
    named = []
    for path in configs:
        train = apply_dict(RunConfig(), load_config_file(path)).train
        sources = [*train.teacher, *([train.init_from] if train.init_from else [])]
        if any(Path(t).resolve() == float_file.resolve() for t in sources):
            named.append(path)
    return named


def reproduce_command(run_dir: RunDir, name: str) -> str:
    """The command that trains the shipped file again from `exports/NAME.yaml`.

    A run that skipped a stage (QAT straight from the train stage) needs the same `--stages`:
    from the config alone the pipeline would run the prune stage, as a fine-tune at 0 %.
    """
    ran = [stage for stage in STAGES if run_dir.is_complete(stage)]
    stages = f" --stages {','.join(ran)}" if len(ran) < len(STAGES) else ""
    return f"python -m tfdense.train --config exports/{name}.yaml{stages}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfdense ship", description=__doc__.split("\n\n")[0].replace("`", ""))
    parser.add_argument("run", nargs="?", help="a run directory whose export stage completed")
    parser.add_argument("--name", help="file stem in exports/, e.g. model_int8 or model_int8_large (must contain 'int8')")
    parser.add_argument("--refresh", action="store_true",
                        help="ship nothing: re-measure what --out holds (arena RAM, Vela, latencies) and redraw the plots")
    parser.add_argument("--table", action="store_true", help="ship nothing: print the README's results table from --out")
    parser.add_argument("--search", help="the tuning/searches folder whose best_config.yaml chose the run's architecture (checked)")
    parser.add_argument("--out", default=str(EXPORTS), help="exports folder (default: the repository's exports/)")
    parser.add_argument("--latency-images", type=int, default=300)
    parser.add_argument("--latency-rounds", type=int, default=5,
                        help="rounds of interleaved latency timing of the peers and every shipped file (default 5; "
                        "0 with --refresh keeps the recorded latencies, e.g. while a training loads the machine)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.table:
        if args.run or args.name or args.refresh:
            parser.error("--table only prints: give no run, --name or --refresh")
        print(results_table(out))
        return 0
    if args.latency_rounds < 0 or (args.latency_rounds == 0 and not args.refresh):
        parser.error("--latency-rounds must be >= 1 (0 only with --refresh)")
    if args.refresh:
        if args.run or args.name:
            parser.error("--refresh ships nothing: give no run and no --name")
        if not (out / "metrics.json").is_file():
            print(f"error: {out / 'metrics.json'} is missing: nothing has been shipped to {out}", file=sys.stderr)
            return 2
        from tfdense.data import load_test

        x_test, y_test = load_test(DataConfig())
        registry = refresh(out, x_test, y_test, args.latency_images, args.latency_rounds)
        for name, figures in registry.items():
            print(f"{name}: arena {figures['arena_bytes']:,} bytes, latency {figures['latency_ms']:.3f} ms")
        return 0
    if not args.run or not args.name:
        parser.error("give a run directory and --name (or --refresh)")
    run_dir = RunDir(args.run)
    if not re.fullmatch(r"[a-z0-9_]*int8[a-z0-9_]*", args.name):
        print(f"error: --name {args.name!r} must be lower-case letters, digits and _, and contain 'int8'", file=sys.stderr)
        return 2
    sources = {"int8": run_dir.export_file("model_int8.tflite"), "uint8": run_dir.export_file("model_uint8.tflite")}
    for path in [*sources.values(), run_dir.config_file]:
        if not path.exists():
            print(f"error: {path} is missing: run the export stage of {run_dir.path} first", file=sys.stderr)
            return 2

    float_file = out / f"{args.name}_float.h5"
    users = configs_reading(float_file, sorted(out.glob("*.yaml"))) if float_file.exists() else []
    if users:
        print(f"error: {float_file} is the teacher or start (train.init_from) of {', '.join(map(str, users))}; "
              f"shipping would replace it. Move it (e.g. to tuning/teachers/ or tuning/starts/) and point those configs there first", file=sys.stderr)
        return 2

    from tfdense.data import load_test
    from tfdense.litert import evaluate_tflite
    from tfdense.conversion import c_array

    config = from_dict(read_json(run_dir.config_file)["config"])
    try:
        searched = searched_architecture(Path(args.search), config) if args.search else None
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    names = {"int8": f"{args.name}.tflite", "uint8": f"{args.name.replace('int8', 'uint8')}.tflite"}
    for kind, path in sources.items():
        shutil.copyfile(path, out / names[kind])
    content = (out / names["int8"]).read_bytes()
    source, header = c_array(content, args.name)
    write_atomic(out / f"{args.name}.cc", source)
    write_atomic(out / f"{args.name}.h", header)
    shutil.copyfile(run_dir.export_file("labels.txt"), out / "labels.txt")
    float_model = run_dir.model(run_dir.float_source())
    if float_model.exists() and float_model.stat().st_size <= FLOAT_SOURCE_LIMIT:
        shutil.copyfile(float_model, out / f"{args.name}_float.h5")
    # YAML's safe dumper writes lists, not tuples.
    recipe = {section: {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()} for section, fields in config.to_dict().items()}
    provenance = f"# Architecture chosen by the keras-tuner search {searched}\n" if searched else ""
    write_atomic(out / f"{args.name}.yaml", f"# Reproduces {names['int8']}: {reproduce_command(run_dir, args.name)}\n"
                 + provenance + yaml.safe_dump(recipe, sort_keys=False))

    x_test, y_test = load_test(config.data)
    registry_path = out / "metrics.json"
    registry = read_json(registry_path) if registry_path.exists() else {}
    for kind in ("int8", "uint8"):
        print(f"[tfdense] measuring {names[kind]} on {len(x_test):,} test images ...", file=sys.stderr, flush=True)
        metrics, _ = evaluate_tflite(out / names[kind], x_test, y_test, 1, args.latency_images)
        registry[names[kind]] = shipped_figures(metrics, run_dir)
        if searched:
            registry[names[kind]]["search"] = searched
    write_json(registry_path, registry)
    registry = refresh(out, x_test, y_test, args.latency_images, args.latency_rounds, measured=frozenset(names.values()))
    for name in names.values():
        figures = registry[name]
        print(f"{name}: {100 * figures['test_accuracy']:.2f} % at {figures['tflite_bytes']:,} bytes, {figures['macs']:,} MACs, "
              f"{figures['weights']:,} weights, arena {figures['arena_bytes']:,} bytes, latency {figures['latency_ms']:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
