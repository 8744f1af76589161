"""The MLflow record of one search: a parent run for the search and a nested child run per
trial. Writes go through a ``SpooledWriter``: training never waits on the store, a store that
goes away mid-search gets every write once it is back, and a killed search leaves its undone
writes in the spool for the next attempt. The files under results/ stay complete whatever the
store does."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pipeline.errors import UserError
from pipeline.tracking import names
from pipeline.tracking.spool import SpooledWriter, now_ms, run_ref
from pipeline.tracking.store import TrackingError, TrackingStore, is_transient

log = logging.getLogger(__name__)
DRAIN_S = 120.0  # at the end of a search, how long to wait for queued writes


class SearchRuns:
    """``store`` None: tracking is off, and every method does nothing. ``spool``: the file the
    writes queue in (default: memory only)."""

    def __init__(self, store: TrackingStore | None, spool: Path | None = None,
                 drain_s: float = DRAIN_S, system_metrics_s: float = 0.0):
        self.store, self.drain_s = store, drain_s
        self.system_metrics_s, self._monitor = system_metrics_s, None
        self.writer = SpooledWriter(store, spool) if store is not None else None
        self.parent: str | None = None  # the search's run (an MLflow id, or a key while queued)
        self.trial_runs: dict[str, str] = {}  # trial id -> its run key, trials of this process
        self.failures = 0
        self.offline = False  # the store did not answer at the start: queue, never ask

    @classmethod
    def open(cls, tracking, spool: Path | None = None) -> SearchRuns:
        """For a ``tracking`` params section. A store that does not answer at the start costs
        one short attempt and a warning: the search goes on, its writes queue in ``spool`` and
        go out when the store answers (in this run, or the next run of the same search). A
        store that refuses for good (a 4xx, a bad URI) turns tracking off for this run."""
        try:
            store = TrackingStore.from_params(tracking)
        except TrackingError as exc:
            if not is_transient(exc):
                log.warning("%s; tracking is off for this run", exc)
                return cls(None, spool, system_metrics_s=tracking.system_metrics_s)
            log.warning("%s; the search goes on and its MLflow writes wait in %s", exc,
                        spool or "memory")
            runs = cls(TrackingStore.from_params(tracking, connect=False), spool,
                       system_metrics_s=tracking.system_metrics_s)
            runs.offline = True
            return runs
        if store is None:
            log.info("MLflow: tracking is off for this run")
        return cls(store, spool, system_metrics_s=tracking.system_metrics_s)

    def _now(self, fn, *args):
        """A call whose answer is needed now: None (counted, warned) if the store fails."""
        try:
            return fn(*args)
        except TrackingError as exc:
            self.failures += 1
            log.warning("%s; the search goes on", exc)
            return None

    # --- the search's parent run --------------------------------------------------------------
    def start(self, search_key: str, name: str, tags: dict, params: dict,
              note: str = "") -> str | None:
        """Open the parent run of a search: reopened when an earlier attempt with the same key
        did not finish (its trials left RUNNING are closed as KILLED), else created."""
        if self.store is None:
            return None
        if not self.offline:  # an earlier attempt's spooled writes first: its run may be there
            self.writer.drain(self.drain_s)
        found = [] if self.offline else self._now(
            self.store.find_runs, names.tag_is(names.SEARCH_KEY, search_key),
            ["attributes.start_time DESC"], 1) or []
        if found and found[0].info.status != "FINISHED":
            self.parent = found[0].info.run_id
            self.writer.submit("reopen_run", run=self.parent)
            self._now(self.store.close_dangling_children, self.parent)
            log.info("MLflow: resuming search run %s", self.parent)
            return self.parent
        tags = {**tags, names.SEARCH_KEY: search_key, **({names.NOTE: note} if note else {})}
        self.parent = (None if self.offline else self._now(self.store.create_run, name, tags)
                       ) or self.writer.new_run(name, tags)
        self.log_params(self.parent, params)
        self._start_system_metrics()
        return self.parent

    def _start_system_metrics(self) -> None:
        if not self.system_metrics_s or self.parent_id is None:
            return
        try:
            import psutil  # noqa: F401  (MLflow's monitor needs it)
        except ImportError:
            raise UserError("tracking.system_metrics_s needs psutil: pip install "
                            "'cifar-automl[system-metrics]'") from None
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self._monitor = SystemMetricsMonitor(self.parent_id, self.system_metrics_s,
                                             tracking_uri=self.store.uri)
        self._monitor.start()

    def join(self, search_key: str, timeout_s: float) -> str | None:
        """A worker's view: the chief's RUNNING search run with this key, waited for (the chief
        creates it at start), never created or reopened here. None if tracking is off or it
        does not appear in time (the worker then trains without logging)."""
        if self.store is None:
            return None
        deadline = time.monotonic() + timeout_s
        wanted = f"{names.tag_is(names.SEARCH_KEY, search_key)} and {names.RUNNING}"
        while True:
            found = self._now(self.store.find_runs, wanted, None, 1) or []
            if found:
                self.parent = found[0].info.run_id
                return self.parent
            if time.monotonic() >= deadline:
                log.warning("MLflow: no running search run %s after %.0f s; this worker's "
                            "trials go unlogged", search_key, timeout_s)
                return None
            time.sleep(1)

    @property
    def parent_id(self) -> str | None:
        """The parent run's MLflow id (None while its creation is still queued)."""
        return self.writer.resolve(self.parent) if self.writer else None

    def settled_parent_id(self) -> str | None:
        """The parent run's id for the results: a store that came back late in the search
        may still have the run's creation queued, so the writes queued so far go out first
        (bounded as the final drain is); None if the store is still away."""
        if self.writer is not None and self.parent is not None and self.parent_id is None:
            self.writer.drain(self.drain_s)
        return self.parent_id

    def link_best_trial(self, trial_id: str) -> None:
        """Tag the parent run with the run id of its best trial (MLflow UI: one click)."""
        if self.parent is None:
            return
        key = self.trial_runs.get(trial_id)
        if key is None and self.parent_id is not None:  # of an earlier, interrupted attempt
            found = self._now(self.store.find_runs,
                              f"{names.tag_is(names.PARENT_RUN, self.parent_id)} and "
                              f"{names.tag_is(names.TRIAL_ID, trial_id)}", None, 1) or []
            key = found[0].info.run_id if found else None
        if key is not None:
            self.set_tags(self.parent, {names.BEST_TRIAL_RUN: run_ref(key)})

    def finish(self, status: str | None = "FINISHED") -> None:
        """End the parent run with ``status`` (None: leave it, a worker's case), then wait a
        bounded time for the queued writes."""
        if self.writer is None:
            return
        if self._monitor is not None:
            self._monitor.finish()
        if status and self.parent:
            self.writer.submit("end_run", run=self.parent, status=status, end_ms=now_ms())
        left = self.writer.drain(self.drain_s)
        self.writer.close()  # the spool has one writer at a time: the next run's
        if left:
            log.warning("MLflow: %d write(s) still wait for the store after %.0f s; they stay "
                        "in %s and go out when this search runs again", left, self.drain_s,
                        self.writer.spool or "memory (lost at exit)")
        else:
            self.writer.forget_spool()
        failures = self.failures + self.writer.failures
        if failures:
            log.warning("MLflow: %d logging call(s) failed; see the warnings above", failures)

    # --- trials and anything else -------------------------------------------------------------
    def start_trial(self, trial_id: str, params: dict, tags: dict) -> str | None:
        if self.parent is None:
            return None
        key = self.writer.new_run(names.trial_run(trial_id),
                                  {names.TRIAL_ID: trial_id, **tags}, self.parent)
        self.trial_runs[trial_id] = key
        self.log_params(key, params)
        return key

    def log_params(self, run: str | None, params: dict) -> None:
        if run and params:
            self.writer.submit("log_params", run=run, params=_plain(params))

    def log_metrics(self, run: str | None, metrics: dict, step: int = 0) -> None:
        if run and metrics:
            self.writer.submit("log_metrics", run=run, step=int(step),
                               metrics={k: float(v) for k, v in metrics.items() if v is not None},
                               timestamp_ms=now_ms())

    def set_tags(self, run: str | None, tags: dict) -> None:
        if run and tags:
            self.writer.submit("set_tags", run=run, tags={
                k: v if isinstance(v, dict) else str(v) for k, v in tags.items()})

    def log_artifact(self, run: str | None, path: Path, folder: str | None = None) -> None:
        if run:
            self.writer.submit("log_artifact", run=run, path=str(Path(path).resolve()),
                               folder=folder)

    def log_dataset(self, run: str | None, name: str, digest: str, source: str,
                    context: str) -> None:
        """An input dataset of the run (MLflow's Datasets tab), by name and content digest."""
        if run:
            self.writer.submit("log_dataset", run=run, name=name, digest=digest, source=source,
                               context=context)

    def end_run(self, run: str | None, status: str) -> None:
        if run:
            self.writer.submit("end_run", run=run, status=status, end_ms=now_ms())


def _plain(params: dict) -> dict:
    """Values as MLflow shows them, and as JSON can queue them."""
    return {str(k): v if isinstance(v, (bool, int, float, str)) or v is None else str(v)
            for k, v in params.items()}
