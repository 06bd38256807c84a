"""`python -m tfdense sizefit [--out FILE]`: measure the int8 file-size predictor against real conversions.

Builds nine DenseNets of 1k-173k weights (the presets' and the search's shapes, one with
depthwise layers), draws their weights from one seed (`conversion.trained_looking_weights`:
BatchNorms with trained-looking statistics, which fold into distinct biases the converter
cannot share), applies QAT with activation ranges calibrated on images (distinct ranges make
each concatenation need a requantize op, as after real QAT), converts and strips each one as
the export stage does, and fits `bytes - weights = a * channels + b * layers + c` by least
squares. Prints each model's measured and predicted bytes, with the coefficients in
`tfdense.costs` and with the new fit; `--out` also writes them as JSON. About 6 minutes on 2 cores.
`--per-tensor` converts them quantized per tensor (`qat.per_channel=false`) and refits only
the bytes per channel, the per-layer and fixed bytes held at `tfdense.costs`' values.
`--shared-ranges` ties each dense block's ranges as `qat.shared_concat_ranges` (the pipeline's
default) does, so the files carry no requantize op: the predictor's error on shipped files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

CANDIDATES = {
    "rung1-dn71k": dict(stem_filters=32, block_layers=(3, 3), growth_rate=16, bottleneck=0, compression=1.0),
    "search-trial09": dict(stem_filters=32, stem_stride=2, stem_pool=False, block_layers=(5, 5), growth_rate=8, bottleneck=32, compression=0.5),
    "quick": dict(stem_filters=16, block_layers=(3, 4, 6), growth_rate=12, bottleneck=24, compression=0.5),
    "full": dict(stem_filters=24, block_layers=(4, 6, 8), growth_rate=16, bottleneck=32, compression=0.5),
    "wide-2x2": dict(stem_filters=16, block_layers=(2, 2), growth_rate=24, bottleneck=0, compression=0.75),
    "thin-5-4-2": dict(stem_filters=32, block_layers=(5, 4, 2), growth_rate=8, bottleneck=0, compression=0.5),
    "smoke": dict(stem_filters=8, block_layers=(1, 1), growth_rate=4, bottleneck=8),
    "wide-6-6": dict(stem_filters=24, block_layers=(6, 6), growth_rate=20, bottleneck=48, compression=0.5),
    "depthwise-32x32": dict(stem_filters=32, stem_pool=False, block_layers=(2, 2, 2), growth_rate=24, bottleneck=64, compression=0.5,
                            depthwise=True, transition_pool="max_first"),
}


def measure(name: str, fields: dict, images: np.ndarray, seed: int = 1, per_channel: bool = True,
            shared_ranges: bool = False) -> dict:
    """Stripped int8 bytes of one candidate, beside the features the predictor reads."""
    from tfdense.config import DenseNetConfig
    from tfdense.costs import int8_size_features, predicted_int8_bytes
    from tfdense.model import build_densenet
    from tfdense.conversion import untrained_int8

    model = build_densenet(DenseNetConfig(name=name.replace("-", "_"), **fields))
    content = untrained_int8(model, images, shared_ranges=shared_ranges, seed=seed, per_channel=per_channel)
    weights, channels, num_layers = int8_size_features(model)
    return {
        "name": name,
        "weights": weights,
        "channels": channels,
        "layers": num_layers,
        "bytes": len(content),
        "predicted": predicted_int8_bytes(model, per_channel),
    }


def fit(rows: list[dict], per_channel: bool = True) -> np.ndarray:
    """(per channel, per layer, fixed) bytes on top of one byte per weight, least squares.

    Not `per_channel`: the per-layer and fixed bytes are `tfdense.costs`' (the graph is the same),
    and only the bytes per channel are fitted.
    """
    from tfdense.costs import INT8_BYTES_FIXED, INT8_BYTES_PER_LAYER

    overhead = np.array([r["bytes"] - r["weights"] for r in rows], dtype=float)
    if per_channel:
        features = np.array([[r["channels"], r["layers"], 1.0] for r in rows])
        return np.linalg.lstsq(features, overhead, rcond=None)[0]
    channels = np.array([[r["channels"]] for r in rows], dtype=float)
    rest = overhead - np.array([INT8_BYTES_PER_LAYER * r["layers"] + INT8_BYTES_FIXED for r in rows])
    return np.array([np.linalg.lstsq(channels, rest, rcond=None)[0][0], INT8_BYTES_PER_LAYER, INT8_BYTES_FIXED])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfdense sizefit", description=__doc__.split("\n\n")[0].replace("`", ""))
    parser.add_argument("--out", help="also write the measurements and both fits as JSON here")
    parser.add_argument("--per-tensor", action="store_true", help="one weight scale per kernel (qat.per_channel=false)")
    parser.add_argument("--shared-ranges", action="store_true", help="one activation range per dense block (qat.shared_concat_ranges=true)")
    args = parser.parse_args(argv)

    from tfdense.files import write_json
    from tfdense.tables import markdown_table

    images = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3)).astype(np.uint8)
    rows = []
    for i, (name, fields) in enumerate(CANDIDATES.items(), 1):
        print(f"[tfdense] converting {name} ({i}/{len(CANDIDATES)}) ...", file=sys.stderr, flush=True)
        rows.append(measure(name, fields, images, per_channel=not args.per_tensor, shared_ranges=args.shared_ranges))
    coefficients = fit(rows, per_channel=not args.per_tensor)
    def refit(r: dict) -> float:
        return r["weights"] + float(np.dot(coefficients, [r["channels"], r["layers"], 1.0]))

    print(markdown_table(("model", "weights", "channels", "layers", "bytes", "predicted (tfdense.costs)", "error", "refit"),
                         [(r["name"], f"{r['weights']:,}", f"{r['channels']:,}", r["layers"], f"{r['bytes']:,}", f"{r['predicted']:,}",
                           f"{100 * (r['predicted'] - r['bytes']) / r['bytes']:+.2f} %", f"{refit(r):,.0f}") for r in rows]))
    print(f"\nrefit: {coefficients[0]:.2f} bytes per channel, {coefficients[1]:.2f} per layer, {coefficients[2]:.0f} fixed")
    if args.out:
        write_json(Path(args.out), {"per_tensor": args.per_tensor, "shared_ranges": args.shared_ranges, "rows": rows,
                                    "refit": {"per_channel": coefficients[0], "per_layer": coefficients[1], "fixed": coefficients[2]}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
