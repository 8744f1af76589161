"""The scheduled retuning job: the one command a scheduler calls (``cifar-automl retune``).

Under a lock: bring the prepared data up to date (DVC reruns prepare only if its inputs
changed), look up every champion (a store that cannot answer stops the job here: it never
takes "could not ask" for "there is none"), then per family a search under the retune budget
that starts from the champion's configuration, never draws a configuration an earlier
search tried (seeded afresh each time) and ranks the earlier searches' scores at its fidelity
with its own (its incumbent may be a trial of an earlier night), the challenger trained under
the pipeline's budget rule, and a paired verdict challenger vs champion on the **holdout
split** (carved out by prepare, never searched on, trained on or selected on). The test split
is reported beside it, never used to decide. The challenger is registered and made champion
only when it wins by the margin with McNemar support (the old champion keeps its version and
gets the alias ``previous``).

Crash safety: nothing in the registry changes before the verdict, and the champion alias moves
in one call; the lock is an ``flock`` the kernel drops with its holder; runs a killed retune
left RUNNING in MLflow are closed as KILLED by the next one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from pipeline.config import Params
from pipeline.data import store as files
from pipeline.errors import UserError
from pipeline.families import FAMILIES
from pipeline.lineage import earlier_trials, tried_configurations
from pipeline.lock import RunLock
from pipeline.stats import format_p, mcnemar_exact
from pipeline.tracking import names, registry
from pipeline.tracking.store import TrackingStore
from pipeline.workspace import home

log = logging.getLogger(__name__)
CURRENT = "current"  # the workdir's scratch folder of the running retune


class RetuneFailed(UserError):
    exit_code = 1


@dataclass(frozen=True)
class Night:
    """What every family's retune shares: the store and the retune's run, the prepared data
    and its deciding (holdout) and reported (test) splits."""

    store: TrackingStore
    run_id: str
    retune_id: str
    dataset: str
    data_dir: Path
    splits: dict  # "holdout" and "test": (images, labels)


def run_retune(params: Params, params_path: Path, data_dir: Path,
               space_dir: Path | None = None) -> dict:
    r = params.retune
    space_dir = Path(space_dir or params.tune.space_dir)
    workdir = Path(r.workdir)
    with RunLock(home(r.lock_file), "retune"):
        started = time.monotonic()
        scratch = workdir / CURRENT
        shutil.rmtree(scratch, ignore_errors=True)  # a killed retune's leftovers
        _bring_data_up_to_date(params_path, data_dir)
        meta = files.load_meta(data_dir)
        if not meta["sizes"].get("holdout"):
            raise RetuneFailed(f"{data_dir}: no holdout split (prepare.holdout_fraction is 0 or "
                               "the data was prepared before it existed): set "
                               "prepare.holdout_fraction, for example 0.1, and prepare again; "
                               "retune decides on it, never on the test split")
        splits = {name: tuple(np.asarray(a) for a in files.load_split(data_dir, name))
                  for name in ("holdout", "test")}
        store = TrackingStore.from_params(params.tracking)
        if store is None:
            raise RetuneFailed("tracking is off (tracking.uri: off): the champion lives in "
                               "MLflow, so nothing was retuned")
        model_names = {f: FAMILIES[f].registered_model(meta["dataset"]) for f in r.families}
        # fail closed: every lookup before anything is written or trained
        champions = {f: registry.champion(store, model_names[f]) for f in r.families}
        closed = close_killed_retunes(store)
        if closed:
            log.info("closed %d run(s) a killed retune left RUNNING", closed)
        retune_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]
        run_id = store.create_run(names.retune_run(retune_id),
                                  {names.ROLE: names.ROLE_RETUNE, names.RETUNE_ID: retune_id,
                                   names.DATASET: meta["dataset"]})
        store.log_params(run_id, {f"retune.{k}": v for k, v in r.model_dump().items()})
        night = Night(store, run_id, retune_id, meta["dataset"], data_dir, splits)
        outcomes = {}
        try:
            for family in r.families:
                outcomes[family] = _retune_family(
                    params, family, FAMILIES[family].space_file(space_dir), scratch / family,
                    night, model_names[family], champions[family])
        except BaseException:
            store.end_run(run_id, "FAILED")
            raise
        summary = summarize(retune_id, outcomes, r.margin, r.alpha,
                            (time.monotonic() - started) / 60)
        store.set_tags(run_id, {names.NOTE: summary,
                                **{names.family_decision_tag(f): o["decision"]
                                   for f, o in outcomes.items()}})
        store.end_run(run_id, "FINISHED")
    print(summary, flush=True)
    _to_job_summary(summary)
    return {"retune_id": retune_id, "run_id": run_id, "families": outcomes, "summary": summary}


def earlier_retune_searches(store: TrackingStore, family: str, dataset: str) -> int:
    return len(store.find_runs(f"{names.tag_is(names.ROLE, names.ROLE_SEARCH)} and "
                               f"{names.tag_is(names.FAMILY, family)} and "
                               f"{names.tag_is(names.DATASET, dataset)} and "
                               f"{names.tag_set(names.RETUNE_ID)}", max_results=50_000))


def decide(challenger_right: np.ndarray, champion_right: np.ndarray, margin: float,
           alpha: float) -> dict:
    """The promotion rule on one split: the challenger wins when its accuracy exceeds the
    champion's by ``margin`` at least and the exact McNemar p-value is ``alpha`` at most. The
    difference is a count over the split's size (one rounding), so an exact margin counts."""
    n = len(challenger_right)
    difference = (int(np.sum(challenger_right)) - int(np.sum(champion_right))) / n
    p_value = float(mcnemar_exact(challenger_right, champion_right)["p_value"])
    return {"difference": difference, "p_value": p_value,
            "wins": difference >= margin and p_value <= alpha}


def _retune_family(params: Params, family: str, space_file: Path, scratch: Path, night: Night,
                   name: str, current: registry.Champion | None) -> dict:
    from pipeline.evaluate import load_model
    from pipeline.tune import TuneFolders, run_tune

    r, store, dataset = params.retune, night.store, night.dataset
    warm = [current.hyperparameters] if current and current.hyperparameters else None
    tried = tried_configurations(store, family, dataset)
    # their scores too: the oracle ranks those at its own fidelity with its trials, so its
    # incumbent may be an earlier night's best and nights build on each other
    scored = earlier_trials(store, family, dataset)
    # a fresh seed each retune: with the digests above, this search draws new configurations
    seed = params.tune.seed + 1 + earlier_retune_searches(store, family, dataset)
    log.info("%s: champion %s; %d configurations tried before (%d scored trials); searching "
             "for a challenger (%d trials, %.1f min at most, seed %d)", family,
             f"version {current.version}" if current else "none yet", len(tried), len(scored),
             r.max_trials, r.budget_minutes, seed)
    # the search under the retune budget; the final training under the pipeline's own rule
    # for this family unless the retune section sets its own
    final = {k: v for k, v in (("final_epochs", r.final_epochs),
                               ("final_budget_minutes", r.final_budget_minutes)) if v is not None}
    tune = params.tune.for_family(family).model_copy(update={
        "max_trials": r.max_trials, "budget_minutes": r.budget_minutes, "seed": seed, **final,
        "per_family": {}})
    best = run_tune(params.model_copy(update={"tune": tune}), family, space_file,
                    night.data_dir,
                    TuneFolders(scratch / "tuning", scratch / "models", scratch / "results"),
                    first_values=warm, run_tags={names.RETUNE_ID: night.retune_id},
                    tried_before=tried, history=scored)
    challenger = registry.inference_model(load_model(scratch / "models" / family /
                                                     "best.keras"))
    right = {split: _predict(challenger, x) == y for split, (x, y) in night.splits.items()}
    outcome = {"champion_version": current.version if current else None,
               "challenger_accuracy": float(right["holdout"].mean()),
               "challenger_test_accuracy": float(right["test"].mean()),
               "holdout_images": len(right["holdout"]),
               # the store now holds this search's trials too
               "configurations_tried": len(tried_configurations(store, family, dataset)),
               "search_run": best.get("mlflow_parent_run")}
    if current is None:
        decision = "created"
    else:
        champion = registry.load_version(store, current.uri)
        champion_right = {split: _predict(champion, x) == y
                          for split, (x, y) in night.splits.items()}
        verdict = decide(right["holdout"], champion_right["holdout"], r.margin, r.alpha)
        outcome.update(champion_accuracy=float(champion_right["holdout"].mean()),
                       champion_test_accuracy=float(champion_right["test"].mean()),
                       difference=verdict["difference"], p_value=verdict["p_value"])
        decision = "promoted" if verdict["wins"] else "kept"
    outcome["decision"] = decision
    if decision != "kept":
        version = registry.register(
            store, challenger, name, night.run_id, family,
            {names.VERSION_TEST_ACCURACY: round(outcome["challenger_test_accuracy"], 4),
             names.VERSION_HOLDOUT_ACCURACY: round(outcome["challenger_accuracy"], 4),
             names.VERSION_REGISTERED_BY: "retune", names.RETUNE_ID: night.retune_id,
             names.VERSION_HYPERPARAMETERS: json.dumps(best["hyperparameters"])})
        registry.promote(store, name, version, current)
        outcome["new_version"] = version
    store.log_metrics(night.run_id, {f"{family}_{k}": v for k, v in outcome.items()
                                 if isinstance(v, (int, float)) and not isinstance(v, bool)
                                 and k != "champion_version"})
    log.info("%s: %s", family, _describe(family, outcome, r.margin, r.alpha))
    return outcome


def close_killed_retunes(store: TrackingStore) -> int:
    """Runs a retune left RUNNING can only belong to a dead process once we hold the lock:
    the retune run, its searches and their trials."""
    of_retunes = names.tag_set(names.RETUNE_ID)
    searches = store.find_runs(f"{of_retunes} and {names.RUNNING}")
    trials = sum(store.close_dangling_children(run.info.run_id) for run in searches)
    return trials + store.close_running(of_retunes)


def summarize(retune_id: str, outcomes: dict, margin: float, alpha: float,
              minutes: float) -> str:
    parts = [_describe(f, o, margin, alpha) for f, o in outcomes.items()]
    return f"Retune {retune_id} ({minutes:.1f} min): " + " ".join(parts)


def _describe(family: str, o: dict, margin: float, alpha: float) -> str:
    test = f"challenger {100 * o['challenger_test_accuracy']:.2f}%"
    if o["decision"] == "created":
        return (f"{family}: no champion yet; the challenger (holdout "
                f"{100 * o['challenger_accuracy']:.2f}%, test "
                f"{100 * o['challenger_test_accuracy']:.2f}%) is champion "
                f"(version {o['new_version']}).")
    test += f" vs champion {100 * o['champion_test_accuracy']:.2f}%"
    numbers = (f"on the holdout ({o['holdout_images']:,} images) challenger "
               f"{100 * o['challenger_accuracy']:.2f}% vs champion version "
               f"{o['champion_version']} {100 * o['champion_accuracy']:.2f}% "
               f"({100 * o['difference']:+.2f} points, McNemar {format_p(o['p_value'])}); "
               f"test split, reported only: {test}")
    if o["decision"] == "promoted":
        return (f"{family}: {numbers}: promoted to champion (version {o['new_version']}); "
                f"version {o['champion_version']} is now 'previous'.")
    return (f"{family}: {numbers}: champion kept (promotion needs {100 * margin:+.2f} points "
            f"and p <= {alpha:g} on the holdout).")


def _to_job_summary(summary: str) -> None:
    """On GitHub Actions, the verdict on the run's page too (not only in the job log)."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if path:
        with open(path, "a") as handle:
            handle.write(f"### cifar-automl retune\n\n{summary}\n")


def _predict(model, images: np.ndarray) -> np.ndarray:
    return np.argmax(model.predict(images, batch_size=512, verbose=0), axis=1)


def _bring_data_up_to_date(params_path: Path, data_dir: Path) -> None:
    """In a DVC project, ``dvc repro prepare`` (it reruns only if an input changed);
    elsewhere, the prepared data must be there."""
    root = Path(params_path).resolve().parent
    if (root / "dvc.yaml").is_file() and (root / ".dvc").is_dir():
        done = subprocess.run([sys.executable, "-m", "dvc", "repro", "prepare"], cwd=root,
                              capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:]
            raise RetuneFailed(f"dvc repro prepare failed: {last[0] if last else 'no output'}")
        log.info("data: %s", "prepared again" if "Running stage" in done.stdout
                 else "up to date")
    elif not (data_dir / "meta.json").is_file():
        raise RetuneFailed(f"{data_dir}: no prepared data; run `cifar-automl prepare` first")
