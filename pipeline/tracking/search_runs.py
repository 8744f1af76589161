"""The MLflow record of one search, written best-effort: a parent run for the search and a
nested child run per trial. A store that fails (after the store's own retries) costs a warning
and a count, never the search: training goes on and the files under results/ stay complete."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pipeline.tracking import names
from pipeline.tracking.store import TrackingError, TrackingStore

log = logging.getLogger(__name__)


class SearchRuns:
    """``store`` None: tracking is off, and every method does nothing."""

    def __init__(self, store: TrackingStore | None):
        self.store = store
        self.parent: str | None = None
        self.failures = 0

    @classmethod
    def open(cls, tracking) -> SearchRuns:
        """For a ``tracking`` params section; an unreachable store turns tracking off for this
        run (with a warning) instead of stopping it."""
        try:
            store = TrackingStore.from_params(tracking)
        except TrackingError as exc:
            log.warning("%s; tracking is off for this run", exc)
            store = None
        if store is None:
            log.info("MLflow: tracking is off for this run")
        return cls(store)

    def _try(self, fn, *args, **kwargs):
        if self.store is None:
            return None
        try:
            return fn(*args, **kwargs)
        except TrackingError as exc:
            self.failures += 1
            log.warning("%s; the search goes on", exc)
            return None

    # --- the search's parent run --------------------------------------------------------------
    def start(self, search_key: str, name: str, tags: dict, params: dict) -> str | None:
        """Open the parent run of a search: reopened when an earlier attempt with the same key
        did not finish (its trials left RUNNING are closed as KILLED), else created."""
        if self.store is None:
            return None
        found = self._try(self.store.find_runs, names.tag_is(names.SEARCH_KEY, search_key),
                          ["attributes.start_time DESC"], 1) or []
        if found and found[0].info.status != "FINISHED":
            self.parent = found[0].info.run_id
            self._try(self.store.reopen_run, self.parent)
            self._try(self.store.close_dangling_children, self.parent)
            log.info("MLflow: resuming search run %s", self.parent)
            return self.parent
        self.parent = self._try(self.store.create_run, name,
                                {**tags, names.SEARCH_KEY: search_key})
        self.log_params(self.parent, params)
        return self.parent

    def join(self, search_key: str, timeout_s: float) -> str | None:
        """A worker's view: the chief's RUNNING search run with this key, waited for (the chief
        creates it at start), never created or reopened here. None if tracking is off or it
        does not appear in time (the worker then trains without logging)."""
        if self.store is None:
            return None
        deadline = time.monotonic() + timeout_s
        wanted = f"{names.tag_is(names.SEARCH_KEY, search_key)} and {names.RUNNING}"
        while True:
            found = self._try(self.store.find_runs, wanted, None, 1) or []
            if found:
                self.parent = found[0].info.run_id
                return self.parent
            if time.monotonic() >= deadline:
                log.warning("MLflow: no running search run %s after %.0f s; this worker's "
                            "trials go unlogged", search_key, timeout_s)
                return None
            time.sleep(1)

    def finish(self, status: str = "FINISHED") -> None:
        if self.parent:
            self._try(self.store.end_run, self.parent, status)
        if self.failures:
            log.warning("MLflow: %d logging call(s) failed; see the warnings above",
                        self.failures)

    # --- trials and anything else -------------------------------------------------------------
    def start_trial(self, trial_id: str, params: dict, tags: dict) -> str | None:
        if self.parent is None:
            return None
        run_id = self._try(self.store.create_run, names.trial_run(trial_id),
                           {names.TRIAL_ID: trial_id, **tags}, self.parent)
        self.log_params(run_id, params)
        return run_id

    def log_params(self, run_id: str | None, params: dict) -> None:
        if run_id and params:
            self._try(self.store.log_params, run_id, params)

    def log_metrics(self, run_id: str | None, metrics: dict, step: int = 0) -> None:
        if run_id:
            self._try(self.store.log_metrics, run_id, metrics, step)

    def set_tags(self, run_id: str | None, tags: dict) -> None:
        if run_id:
            self._try(self.store.set_tags, run_id, tags)

    def log_artifact(self, run_id: str | None, path: Path, folder: str | None = None) -> None:
        if run_id:
            self._try(self.store.log_artifact, run_id, path, folder)

    def end_run(self, run_id: str | None, status: str) -> None:
        if run_id:
            self._try(self.store.end_run, run_id, status)
