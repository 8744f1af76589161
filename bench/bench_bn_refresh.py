"""Benchmark: what batch norm's lagging moving statistics cost a search trial's score.

A search trial trains for 1-3 epochs of the search subset (40-120 steps at the CNN's batch
256); Keras' moving averages (momentum 0.99) then still hold 30-67% of their initial values,
so the validation score, computed in inference mode, uses statistics that match no weights
the net had. This trains the family's defaults exactly as a trial does (the search subset,
the trial's schedule for its rung, float32), then scores the same weights twice on the
validation split: with Keras' moving statistics, and after ``refresh_batch_norm`` on 512
training images. Same weights, so the difference is the statistics' alone.

    python bench/bench_bn_refresh.py --data <prepared> --family cnn --epochs 1 3 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    import keras
    import keras_tuner as kt

    from pipeline.config import load_params
    from pipeline.families import FAMILIES, FAMILY_NAMES
    from pipeline.search.hypermodel import FamilyHyperModel
    from pipeline.training import REFRESH_IMAGES, refresh_batch_norm
    from pipeline.tune import load_search_data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="cnn", choices=FAMILY_NAMES)
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "prepared")
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    params = load_params(args.params)
    t = params.tune.for_family(args.family)
    data = load_search_data(t, args.family,
                            FAMILIES[args.family].space_file(ROOT / "search_spaces"), args.data)
    x, y = data.x_train[data.search_idx], data.y_train[data.search_idx]
    hypermodel = FamilyHyperModel(args.family, data.space, data.meta, params.augmentation,
                                  n_train=len(y), equal_compute=True, precision="float32")
    rows = []
    for epochs in args.epochs:
        for seed in args.seeds:
            keras.backend.clear_session()
            keras.utils.set_random_seed(seed)
            hypermodel.seed = seed
            hp = kt.HyperParameters()
            hypermodel.declare_hyperparameters(hp)
            model = hypermodel.build(hp)
            started = time.monotonic()
            hypermodel.fit(hp, model, x, y, epochs=epochs, verbose=0)
            scores = {}
            for name in ("moving", "refreshed"):
                if name == "refreshed":
                    refresh_batch_norm(model, x[:REFRESH_IMAGES])
                scores[name] = float(model.evaluate(data.x_val, data.y_val, batch_size=512,
                                                    verbose=0, return_dict=True)["accuracy"])
            rows.append({"epochs": epochs, "seed": seed,
                         "steps": hypermodel.last_schedule.summary()["steps"], **scores,
                         "gain": scores["refreshed"] - scores["moving"],
                         "seconds": round(time.monotonic() - started, 1)})
            print(json.dumps(rows[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"family": args.family, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
