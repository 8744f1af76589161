"""The equal_time stage: the FC under the other budget rule, so one run can show the verdict
under both (pipeline/budget_rule.py).

With ``equal_time.run`` on, the FC's search gets the CNN's measured search minutes and its
final training the CNN's measured final-training minutes (by the clock alone: no epoch count
ends it first), and its augmentation is held at the CNN's. Everything else (space, oracle,
trial cap, seed) is the tune stage's. Off, the stage writes only ``status.json`` saying so,
in seconds. The output folder appears whole or not at all.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.budget_rule import EQUAL_TIME_EPOCH_CAP, FC, STATUS, equal_time_budget
from pipeline.config import FamilyOverrides, Params
from pipeline.data import store
from pipeline.errors import ConfigError
from pipeline.tracking import names

log = logging.getLogger(__name__)


def run_equal_time(params: Params, params_file: Path, space_file: Path, data_dir: Path,
                   cnn_results: Path, tuning_dir: Path, out: Path) -> dict:
    """Writes ``out``: status.json, and with the stage on models/fc/best.keras and
    results/fc/ (as the tune stage writes them)."""
    status = {"budget_rule": "equal_time", "ran": False}
    tuning_dir.mkdir(parents=True, exist_ok=True)  # a DVC output, even when nothing runs
    with store.atomic_directory(out) as scratch:
        if not params.equal_time.run:
            log.info("equal_time.run is false: the FC trains under equal epochs only")
        else:
            if params.tune.deterministic:
                raise ConfigError(params_file, "equal_time.run", True,
                                  "needs the clock, and tune.deterministic counts epochs "
                                  "only: set one of them to false")
            from pipeline.tune import TuneFolders, run_tune  # imports Keras, KerasTuner

            cnn = store.read_json(cnn_results / "best_hparams.json", "the tune@cnn stage")
            budget = equal_time_budget(cnn, params.tune.for_family("cnn").budget_minutes)
            fc = params.tune.for_family(FC)
            overrides = {**params.tune.per_family.get(FC, FamilyOverrides()).model_dump(),
                         "budget_minutes": budget["budget_minutes"],
                         "final_budget_minutes": budget["final_budget_minutes"],
                         "final_epochs": EQUAL_TIME_EPOCH_CAP}
            tune = params.tune.model_copy(update={"per_family": {
                **params.tune.per_family, FC: FamilyOverrides(**overrides)}})
            log.info("the FC under equal time: %.1f min of search, %.1f min of final training "
                     "(the CNN's), augmentation %s", budget["budget_minutes"],
                     budget["final_budget_minutes"], budget["augmentation"])
            best = run_tune(params.model_copy(update={"tune": tune}), FC, space_file,
                            data_dir, TuneFolders(tuning_dir, scratch / "models",
                                                  scratch / "results"),
                            run_tags={names.BUDGET_RULE: "equal_time"},
                            fixed=budget["augmentation"], budget_rule="equal_time")
            status.update(ran=True, cnn_search_minutes=round(budget["budget_minutes"], 2),
                          cnn_train_minutes=round(budget["final_budget_minutes"], 2),
                          fc_train_minutes=round(best["final"]["trained_seconds"] / 60, 2),
                          fc_epochs=best["final"]["epochs_run"],
                          default_search_minutes=round(fc.budget_minutes, 2))
        store.write_json(scratch / STATUS, status)
    return status

