"""The replicate stage of one family: its best configuration trained again with other seeds,
under the same budget rule as the tune stage's final training, so the verdict can set the
CNN - FC gap against the run-to-run variance of training (evaluate tests every seed's model).

``tune.final_seeds`` counts the trainings per family: the tune stage's final model is the first
(seed ``tune.seed``), this stage trains the others (seeds ``tune.seed + 1`` and up) into
``models/<family>/seeds/``, with a ``seeds.json`` manifest. With one seed it writes an empty
manifest and trains nothing. A change of the seed count reruns this stage and evaluate, not
the search.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from pipeline.config import Params
from pipeline.data import store
from pipeline.seeds import MANIFEST, replicate_seeds

log = logging.getLogger(__name__)


def run_replicate(params: Params, family: str, space_file: Path, data_dir: Path,
                  models_dir: Path, results_dir: Path) -> dict:
    """Train the replicates; the folder and its manifest appear whole or not at all."""
    t = params.tune.for_family(family)
    seeds = replicate_seeds(t.seed, t.final_seeds)
    manifest = {"family": family, "first_seed": t.seed, "seeds": []}
    if not seeds:
        log.info("%s: tune.final_seeds is 1: the tune stage's model is the only one", family)
    with store.atomic_directory(models_dir / family / "seeds") as scratch:
        if seeds:
            best = store.read_json(results_dir / family / "best_hparams.json", "the tune stage")
            manifest["hyperparameters"] = best["hyperparameters"]
            manifest["seeds"] = _train_seeds(params, family, space_file, data_dir, best, seeds,
                                             scratch)
        store.write_json(scratch / MANIFEST, manifest)
    return manifest


def _train_seeds(params: Params, family: str, space_file: Path, data_dir: Path, best: dict,
                 seeds: list[int], folder: Path) -> list[dict]:
    import keras_tuner as kt

    from pipeline.search.hypermodel import FamilyHyperModel
    from pipeline.tracking.search_runs import SearchRuns
    from pipeline.tune import configure_devices, load_search_data, train_final

    t = params.tune.for_family(family)
    data = load_search_data(t, family, space_file, data_dir)
    # the seeds train in the precision the tune stage's final training used
    precision, parallel = configure_devices(t, family, data, params.augmentation,
                                            policy=best.get("precision"))
    strategy = parallel.get("distribution_strategy")
    hp = kt.HyperParameters()
    hp.values.update(best["hyperparameters"])  # declaring the space keeps preset values
    entries = []
    for i, seed in enumerate(seeds, start=2):
        log.info("[%d/%d] %s: the best configuration (trial %s) with seed %d", i,
                 len(seeds) + 1, family, best.get("trial_id"), seed)
        hypermodel = FamilyHyperModel(family, data.space, data.meta, params.augmentation,
                                      n_train=len(data.y_train), seed=seed, precision=precision)
        with strategy.scope() if strategy else contextlib.nullcontext():
            # no MLflow record of its own: the evaluation run carries every seed's test score
            model, final, _ = train_final(hypermodel, hp, data,
                                          t.model_copy(update={"seed": seed}),
                                          SearchRuns(None), family)
        name = f"seed-{seed}.keras"
        model.save(folder / name)
        entries.append({"seed": seed, "model": name, **final})
    return entries
