"""Every MLflow convention in one place: store, experiment, parent and child runs, retries.

One parent run per search, one nested child run per trial (tag ``mlflow.parentRunId``, which
is what the UI nests by). Runs are written through ``MlflowClient`` with explicit run ids, so
no global "active run" state leaks between trials. A logging failure is retried and then
reported; it never stops a search.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from pipeline.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
DEFAULT_ARTIFACT_ROOT = Path("mlruns/artifacts")
TRACKING_OFF = "off"  # tracking_uri value that switches MLflow off
STATUS_OF_TRIAL = {"COMPLETED": "FINISHED", "FAILED": "FAILED", "INVALID": "FAILED"}


def resolve_tracking_uri(configured: str | None) -> str:
    """params.yaml's tune.tracking_uri, else $MLFLOW_TRACKING_URI, else the local SQLite store."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri == TRACKING_OFF:
        return uri
    if uri.startswith("sqlite:///"):
        db_path = Path(uri[len("sqlite:///"):])
        db_path.parent.mkdir(parents=True, exist_ok=True)
    return uri


class TrackingUnavailable(UserError):
    """For commands whose whole job is in MLflow (publish, retune): no store, nothing done."""

    exit_code = 1


class Tracker:
    """Writes runs into one experiment; every call is retried, failures counted, never raised."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path = DEFAULT_ARTIFACT_ROOT,
                 retries: int = 3):
        self.uri = uri
        self.retries = retries
        self.failures = 0
        self.client = None
        self.experiment_id = None
        if uri == TRACKING_OFF:
            log.info("MLflow: tracking is off (tracking_uri: off)")
            return
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            log.warning("MLflow is not installed: tracking is off for this run")
            return
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment_id = self.call("open the experiment", self._experiment, experiment,
                                       Path(artifact_root))
        if self.experiment_id is None:
            log.warning("MLflow: tracking is off for this run (store %s unreachable)", uri)

    def _experiment(self, name: str, artifact_root: Path) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = artifact_root.resolve() / name
        return self.client.create_experiment(name, artifact_location=location.as_uri())

    def call(self, what: str, fn, *args, **kwargs):
        """fn(*args, **kwargs), retried with backoff; None (counted, logged) if it keeps failing."""
        delay = 0.5
        for attempt in range(1, self.retries + 1):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # the store may be busy, remote, or down
                if attempt == self.retries:
                    self.failures += 1
                    log.warning("MLflow: %s failed after %d attempts (%s); the search goes on",
                                what, attempt, exc)
                    return None
                time.sleep(delay)
                delay *= 2

    # --- searches -----------------------------------------------------------------------------
    def start_search(self, search_key: str, name: str, tags: dict, params: dict) -> str | None:
        """The parent run of a search: reopened if an earlier attempt did not finish."""
        from mlflow.entities import RunStatus

        if self.experiment_id is None:
            return None
        runs = self.call("look up the search run", self.client.search_runs,
                          [self.experiment_id],
                          filter_string=f"tags.search_key = '{search_key}'",
                          order_by=["attributes.start_time DESC"], max_results=1) or []
        if runs and runs[0].info.status != "FINISHED":
            run_id = runs[0].info.run_id
            self.call("reopen the search run", self.client.update_run, run_id,
                       status=RunStatus.to_string(RunStatus.RUNNING))
            self.close_dangling_children(run_id)
            log.info("MLflow: resuming search run %s", run_id)
            return run_id
        run = self.call("create the search run", self.client.create_run, self.experiment_id,
                         run_name=name, tags={**tags, "search_key": search_key})
        if run is None:
            return None
        run_id = run.info.run_id
        self.log_params(run_id, params)
        return run_id

    def wait_for_search(self, search_key: str, timeout_s: float) -> str | None:
        """A worker's view: the chief's RUNNING search run with this key, waited for (the
        chief creates it at start), never created or reopened here. None if tracking is off
        or it does not appear in time (the worker then trains without logging)."""
        if self.experiment_id is None:
            return None
        deadline = time.monotonic() + timeout_s
        while True:
            runs = self.call("look up the search run", self.client.search_runs,
                             [self.experiment_id],
                             filter_string=f"tags.search_key = '{search_key}' "
                                           "and attributes.status = 'RUNNING'",
                             max_results=1) or []
            if runs:
                return runs[0].info.run_id
            if time.monotonic() >= deadline:
                log.warning("MLflow: no running search run %s after %.0f s; this worker's "
                            "trials go unlogged", search_key, timeout_s)
                return None
            time.sleep(1)

    def close_dangling_children(self, parent_id: str) -> int:
        """Mark trials left RUNNING by a killed process as KILLED; returns how many."""
        return self.close_running(f"tags.mlflow.parentRunId = '{parent_id}'")

    def close_running(self, filter_string: str) -> int:
        """Mark the RUNNING runs matching ``filter_string`` as KILLED; returns how many."""
        if self.experiment_id is None:
            return 0
        runs = self.call("list running runs", self.client.search_runs, [self.experiment_id],
                          filter_string=f"{filter_string} and attributes.status = 'RUNNING'") \
            or []
        for run in runs:
            self.call("close a dangling run", self.client.set_terminated, run.info.run_id,
                       status="KILLED")
        return len(runs)

    def end_search(self, run_id: str | None, status: str = "FINISHED") -> None:
        if run_id:
            self.call("end the search run", self.client.set_terminated, run_id, status=status)

    # --- trials -------------------------------------------------------------------------------
    def start_trial(self, parent_id: str | None, name: str, params: dict, tags: dict) -> str | None:
        if parent_id is None:
            return None
        run = self.call("create a trial run", self.client.create_run, self.experiment_id,
                         run_name=name, tags={"mlflow.parentRunId": parent_id, **tags})
        if run is None:
            return None
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def log_params(self, run_id: str | None, params: dict) -> None:
        from mlflow.entities import Param

        if not run_id or not params:
            return
        items = [Param(str(k), str(v)[:6000]) for k, v in sorted(params.items())]
        for start in range(0, len(items), 100):  # MLflow accepts 100 params per batch
            self.call("log params", self.client.log_batch, run_id,
                       params=items[start:start + 100])

    def log_metrics(self, run_id: str | None, metrics: dict, step: int = 0) -> None:
        """All metrics of one step in a single call (each store round trip costs ms)."""
        from mlflow.entities import Metric

        if not run_id:
            return
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
        if batch:
            self.call("log metrics", self.client.log_batch, run_id, metrics=batch)

    def set_tags(self, run_id: str | None, tags: dict) -> None:
        from mlflow.entities import RunTag

        if run_id and tags:
            self.call("set tags", self.client.log_batch, run_id,
                       tags=[RunTag(str(k), str(v)[:5000]) for k, v in tags.items()])

    def log_artifact(self, run_id: str | None, path: Path, folder: str | None = None) -> None:
        if run_id:
            self.call(f"log artifact {path}", self.client.log_artifact, run_id, str(path),
                       folder)

    def end_run(self, run_id: str | None, status: str) -> None:
        if run_id:
            self.call("end a run", self.client.set_terminated, run_id, status=status)
