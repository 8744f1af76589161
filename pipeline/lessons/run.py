"""The lessons stage: run each claim's experiment, log it to MLflow, draw its figure, compute
its verdict, write reports/lessons.md.

MLflow: the experiment ``<tracking.experiment>-lessons`` gets one run per claim, with a child
run per setting (its configuration as params, per-epoch curves, final scores). One claim that
fails is reported and the others still run; the stage then exits non-zero so DVC keeps none
of it.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import time
from pathlib import Path

from pipeline.config import Params
from pipeline.data import store
from pipeline.errors import ConfigError, UserError
from pipeline.lessons import CLAIM_NAMES, CLAIMS
from pipeline.tracking import names

log = logging.getLogger(__name__)


# a claim judged on another claim's trainings: claim -> the claim whose results it reads
SHARED = {"adam_robustness": "learning_rate", "bn_landscape": "batch_norm"}


class LessonsFailed(UserError):
    exit_code = 1


def run_lessons(params: Params, params_file: Path, data_dir: Path, champion_file: Path,
                results_dir: Path, report_path: Path) -> dict:
    p = params.lessons
    claims = list(p.claims or CLAIM_NAMES)
    unknown = [c for c in claims if c not in CLAIMS]
    if unknown:
        raise ConfigError(params_file, "lessons.claims", unknown[0],
                          f"not a claim; one of {', '.join(CLAIM_NAMES)}")
    import keras

    from pipeline.lessons import report

    champion = None
    if "ablations" in claims:  # checked first: a missing champion fails before any training
        champion = store.read_json(champion_file, "the default pipeline")["hyperparameters"]
    tracker = _Tracker(params)
    counter = {"runs": 0, "shared": 0}
    started = time.monotonic()
    passes = [("main", p.seed)] + ([("confirmation", p.confirm_seed)]
                                   if p.confirm_seed is not None else [])
    done = {}
    for name, seed in passes:
        where = "" if name == "main" else f"{name}/"
        # a confirmation reruns the claims the main pass decided: an inconclusive verdict
        # stays inconclusive whatever a second pass says (report.standing), so rerunning it
        # would spend minutes that cannot change the report
        todo = claims if name == "main" else [
            c for c in claims if c in done["main"][0] and done["main"][0][c].supported
            is not None]
        done[name] = _run_pass(
            name, p.model_copy(update={"seed": seed}), todo, data_dir, champion, tracker,
            counter, results_dir / where, report_path.parent / "lessons" / where, started)
    found, drawn, failures, data = done["main"]
    confirmed = done.get("confirmation")
    setup = {"claims": claims, "train_images": len(data.y_train), "val_images": len(data.y_val),
             "test_images": len(data.y_test), "dataset": data.meta.get("title", "CIFAR"),
             "epochs": p.epochs, "seed": p.seed, "seeds": p.seeds,
             "confirm_seed": p.confirm_seed, "backend": keras.backend.backend(),
             "runs": counter["runs"], "shared_runs": counter["shared"],
             "minutes": (time.monotonic() - started) / 60}
    report.write_report(report_path, found, drawn, failures, setup,
                        confirmation=confirmed[0] if confirmed else None)
    log.info("wrote %s (%d claims, %d trainings, %.1f min)", report_path, len(claims),
             counter["runs"], setup["minutes"])
    failures = {**failures, **(confirmed[2] if confirmed else {})}
    if failures:
        raise LessonsFailed(f"lessons failed: {', '.join(failures)} (see the log above and "
                            f"{report_path})")
    return {"verdicts": {k: v.label for k, v in found.items()}, **setup}


def _run_pass(name: str, p, claims: list[str], data_dir: Path, champion: dict | None,
              tracker, counter: dict, results_dir: Path, figures_dir: Path, started: float):
    """Every claim once on the data subset and seeds of ``p.seed``: the verdicts, figures and
    failures (one claim's failure is reported and the others still run), and the data."""
    from pipeline.lessons import experiments, figures, verdicts
    from pipeline.lessons.training import load_lesson_data

    gc.unfreeze()  # what an earlier pass kept is garbage now: collected, the rest frozen again
    _freeze_what_is_alive()
    data = load_lesson_data(data_dir, p.train_per_class, p.eval_per_class, p.seed)

    def report_setting(claim: str, setting: str, cfg: dict, result: dict,
                       shared: bool = False) -> None:
        counter["runs" if not shared else "shared"] += 1
        scores = {k: v for k, v in result.items() if isinstance(v, (int, float))
                  and not isinstance(v, bool) and math.isfinite(v)}
        log.info("  %s / %s%s: %s", claim, setting,
                 " (trained for an earlier claim, shared)" if shared else "",
                 ", ".join(f"{k} {v:.4g}" for k, v in scores.items() if k != "seconds"))
        tracker.setting(setting, cfg, result.get("history", {}), scores)

    lab = experiments.Lab(data, p, report_setting, champion)
    results, found, drawn, failures = {}, {}, {}, {}
    for index, claim in enumerate(claims, 1):
        log.info("%s pass (seed %d), lesson %d of %d: %s (%s; %.1f min so far)", name, p.seed,
                 index, len(claims), CLAIMS[claim][0], CLAIMS[claim][1],
                 (time.monotonic() - started) / 60)
        tracker.open_claim(claim, claim if name == "main" else f"{claim} ({name})")
        try:
            if claim in SHARED:  # it reads another claim's runs: reused when that one ran
                results[claim] = getattr(experiments, claim)(lab, results.get(SHARED[claim]))
            else:
                results[claim] = getattr(experiments, claim)(lab)
        except Exception as exc:  # one claim's failure is reported; the rest still run
            log.exception("lesson %s failed", claim)
            failures[claim] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            tracker.close_claim(None, None, failed=True)
            continue
        found[claim] = verdicts.VERDICTS[claim](results[claim])
        drawn[claim] = figures.FIGURES[claim](results[claim], found[claim].label,
                                              figures_dir / f"{claim}.png")
        store.atomic_write_bytes(results_dir / f"{claim}.json", json.dumps(
            {"claim": CLAIMS[claim][1], "pass": name, "seed": p.seed,
             "verdict": found[claim].label, "verdict_text": found[claim].text,
             "result": results[claim]}, indent=1, default=float).encode())
        log.info("lesson %s: %s: %s", claim, found[claim].label, found[claim].text)
        tracker.close_claim(found[claim], drawn[claim])
        _freeze_what_is_alive()
    return found, drawn, failures, data


def _freeze_what_is_alive() -> None:
    """What a claim leaves alive (the trainings other claims share, with their models) frozen
    out of the garbage collector until the pass ends: ``training.build`` clears the Keras
    session, a full collection, before every training, and each one scanned every model kept
    so far (the tiny lessons' run: 38 s of collection in 185 s, then 11 s in 144 s)."""
    gc.collect()
    gc.freeze()


class _Tracker:
    """MLflow runs of the lessons, or nothing when tracking is off."""

    def __init__(self, params: Params):
        from pipeline.tracking.store import TrackingStore

        tracking = params.tracking.model_copy(
            update={"experiment": names.lessons_experiment(params.tracking.experiment)})
        self.store = TrackingStore.from_params(tracking)
        self.claim_run = None
        if self.store:  # a killed lessons run left its runs RUNNING: mark them KILLED
            closed = self.store.close_running(names.tag_is(names.ROLE, names.ROLE_LESSON))
            if closed:
                log.info("marked %d runs of an interrupted lessons run as killed", closed)

    def open_claim(self, claim: str, run_name: str) -> None:
        if self.store:
            self.claim_run = self.store.create_run(
                run_name, {names.ROLE: names.ROLE_LESSON, names.NOTE: CLAIMS[claim][1]})

    def setting(self, name: str, cfg: dict, history: dict, scores: dict) -> None:
        if not self.store:
            return
        run = self.store.create_run(name, {names.ROLE: names.ROLE_LESSON},
                                    parent=self.claim_run)
        self.store.log_params(run, cfg)
        for epoch in range(max((len(v) for v in history.values()), default=0)):
            self.store.log_metrics(run, {k: v[epoch] for k, v in history.items()
                                         if epoch < len(v) and math.isfinite(v[epoch])}, epoch)
        self.store.log_metrics(run, scores)
        self.store.end_run(run)

    def close_claim(self, verdict, figure: Path | None, failed: bool = False) -> None:
        if not self.store or self.claim_run is None:
            return
        if verdict is not None:
            self.store.set_tags(self.claim_run, {names.VERDICT: verdict.label,
                                                 names.NOTE: verdict.text})
        if figure is not None:
            self.store.log_artifact(self.claim_run, figure)
        self.store.end_run(self.claim_run, "FAILED" if failed else "FINISHED")
        self.claim_run = None
