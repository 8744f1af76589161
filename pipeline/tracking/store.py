"""The project's MLflow store: one experiment, reached through ``MlflowClient`` with explicit
run ids (no global "active run" state leaks between trials or commands).

A call that fails raises ``TrackingError``: one line naming the store and what failed. Against
a tracking server a call costs seconds, not minutes, when the server is down: MLflow's HTTP
client gets the project's small retry budget and timeout (``tracking.http_retries`` and
``http_timeout_s``, unless the user set MLflow's own variables) and this module adds no
retries of its own; a local SQLite store (which may be busy for a moment) gets three short
attempts. Whoever must not stop on a store error (the search) wraps this in
``search_runs.SearchRuns``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

from pipeline.errors import UserError
from pipeline.tracking import names
from pipeline.workspace import home, in_experiment_copy

log = logging.getLogger(__name__)
PARAMS_PER_BATCH = 100  # MLflow's limit for one log_batch call
HTTP_RETRIES, HTTP_TIMEOUT_S = 2, 10  # tracking.http_retries and http_timeout_s defaults


class TrackingError(UserError):
    """The MLflow store failed (unreachable, refused, broken): one line, exit code 1."""

    exit_code = 1


def resolve_uri(configured: str | None) -> str:
    """params.yaml's tracking.uri, else $MLFLOW_TRACKING_URI, else the local SQLite store
    (whose folder is created)."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or names.DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if in_experiment_copy(db):  # a DVC temp experiment: the project's own store
            db = home(db)
            uri = f"sqlite:///{db}"
        db.parent.mkdir(parents=True, exist_ok=True)
    return uri


def default_artifact_root() -> Path:
    """Where runs of a new experiment keep their artifacts: mlruns/artifacts of the project."""
    return home(names.DEFAULT_ARTIFACT_ROOT)


def is_transient(exc: BaseException) -> bool:
    """Whether a failed store call may succeed later: transport errors and 5xx (or 429)
    answers yes, other 4xx answers (a value MLflow will never accept) no."""
    cause = exc.__cause__ if isinstance(exc, TrackingError) and exc.__cause__ else exc
    status = getattr(cause, "get_http_status_code", None)
    if status is None:  # not an answer of the store: a transport error, unless it is a bug
        return not isinstance(cause, (TypeError, ValueError, KeyError, AttributeError))
    return status() >= 500 or status() == 429


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def limit_http_waits(retries: int = HTTP_RETRIES, timeout_s: float = HTTP_TIMEOUT_S) -> None:
    """Give MLflow's HTTP client a small retry budget (its defaults: 7 retries with exponential
    backoff and a 120 s timeout, about 4 minutes per call against a server that is down), unless
    the user set MLflow's variables: theirs win."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, round(timeout_s))))


class TrackingStore:
    """One experiment of one MLflow store; created if missing, its artifacts under
    ``artifact_root``. ``connect``: look the experiment up now (raises ``TrackingError`` if the
    store cannot be reached); otherwise at the first call that needs it."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path | None = None,
                 attempts: int | None = None, connect: bool = True):
        from mlflow.tracking import MlflowClient

        if is_http(uri):
            limit_http_waits()  # a no-op when from_params set the user's values first
        self.uri, self.experiment = uri, experiment
        self.attempts = attempts or (1 if is_http(uri) else 3)  # MLflow retries HTTP itself
        self.artifact_root = Path(artifact_root or default_artifact_root())
        self.client = self._attempt("open the store", 1, MlflowClient, (), {"tracking_uri": uri})
        self._experiment_id: str | None = None
        if connect:
            self.experiment_id  # noqa: B018  (resolves and caches it)

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = self.call("open the experiment", self._experiment,
                                            self.experiment, self.artifact_root)
        return self._experiment_id

    @classmethod
    def from_params(cls, tracking, connect: bool = True) -> TrackingStore | None:
        """The store of a ``tracking`` params section; None when tracking is off."""
        uri = resolve_uri(tracking.uri)
        if uri == names.TRACKING_OFF:
            return None
        if is_http(uri):
            limit_http_waits(tracking.http_retries, tracking.http_timeout_s)
        return cls(uri, tracking.experiment, connect=connect)

    def _experiment(self, name: str, artifact_root: Path) -> str:
        """The experiment's id, created if missing; marked as a model-training experiment so
        MLflow 3's UI opens its runs and models, not its GenAI view."""
        found = self.client.get_experiment_by_name(name)
        if found is None:
            location = artifact_root.resolve() / name
            return self.client.create_experiment(
                name, artifact_location=location.as_uri(),
                tags={names.EXPERIMENT_KIND: names.MODEL_TRAINING})
        if names.EXPERIMENT_KIND not in (found.tags or {}):  # one made by an older version
            self.client.set_experiment_tag(found.experiment_id, names.EXPERIMENT_KIND,
                                           names.MODEL_TRAINING)
        return found.experiment_id

    def call(self, what: str, fn, *args, **kwargs):
        """``fn(*args, **kwargs)``, retried; ``TrackingError`` when every attempt failed."""
        return self._attempt(what, self.attempts, fn, args, kwargs)

    def once(self, what: str, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` without retries, for calls that are not idempotent (a retry
        of a registration that reached the store would register a second version)."""
        return self._attempt(what, 1, fn, args, kwargs)

    def _attempt(self, what: str, attempts: int, fn, args, kwargs):
        delay = 0.5
        for attempt in range(1, attempts + 1):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # the store may be busy, remote, or down
                if attempt == attempts or not is_transient(exc):
                    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    raise TrackingError(f"MLflow store {self.uri}: {what} failed after "
                                        f"{attempt} attempt(s) ({type(exc).__name__}: "
                                        f"{detail[:300]})") from exc
                time.sleep(delay)
                delay *= 2

    # --- runs ---------------------------------------------------------------------------------
    def create_run(self, name: str, tags: dict, parent: str | None = None,
                   start_ms: int | None = None) -> str:
        """A new run with MLflow's context tags (user, source, git commit) under ``tags``;
        ``start_ms``: when it really started (a queued write is sent later)."""
        tags = {**context_tags(), **tags, **({names.PARENT_RUN: parent} if parent else {})}
        run = self.call(f"create run {name}", self.client.create_run, self.experiment_id,
                        run_name=name, tags={k: str(v) for k, v in tags.items()},
                        start_time=start_ms)
        return run.info.run_id

    def find_run_id(self, key: str, value: str) -> str | None:
        """The id of a run of this experiment tagged ``key = value`` (the newest), or None."""
        found = self.find_runs(names.tag_is(key, value), ["attributes.start_time DESC"], 1)
        return found[0].info.run_id if found else None

    def reopen_run(self, run_id: str) -> None:
        self.call("reopen a run", self.client.update_run, run_id, status="RUNNING")

    def end_run(self, run_id: str, status: str = "FINISHED", end_ms: int | None = None) -> None:
        self.call("end a run", self.client.set_terminated, run_id, status=status,
                  end_time=end_ms)

    def log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), str(v)[:6000]) for k, v in sorted(params.items())]
        for start in range(0, len(items), PARAMS_PER_BATCH):
            self.call("log params", self.client.log_batch, run_id,
                      params=items[start:start + PARAMS_PER_BATCH])

    def log_metrics(self, run_id: str, metrics: dict, step: int = 0,
                    timestamp_ms: int | None = None, model_id: str | None = None,
                    dataset: tuple[str, str] | None = None) -> None:
        """All metrics of one step in a single call (each store round trip costs ms);
        ``timestamp_ms``: when they were measured (default: now); ``model_id`` and ``dataset``
        (name, digest): the logged model and the data they measure (MLflow 3 links them)."""
        from mlflow.entities import Metric

        when = timestamp_ms or int(time.time() * 1000)
        name, digest = dataset or (None, None)
        batch = [Metric(k, float(v), when, step, model_id=model_id, dataset_name=name,
                        dataset_digest=digest) for k, v in metrics.items() if v is not None]
        if batch:
            self.call("log metrics", self.client.log_batch, run_id, metrics=batch)

    def set_tags(self, run_id: str, tags: dict) -> None:
        from mlflow.entities import RunTag

        if tags:
            self.call("set tags", self.client.log_batch, run_id,
                      tags=[RunTag(str(k), str(v)[:5000]) for k, v in tags.items()])

    def log_artifact(self, run_id: str, path: Path, folder: str | None = None) -> None:
        self.call(f"log artifact {path}", self.client.log_artifact, run_id, str(path), folder)

    def log_artifacts(self, run_id: str, folder: Path, artifact_path: str) -> None:
        self.call(f"log artifacts of {folder}", self.client.log_artifacts, run_id, str(folder),
                  artifact_path)

    def log_dataset(self, run_id: str, name: str, digest: str, source: str,
                    context: str) -> None:
        """An input of the run, shown in MLflow's Datasets column: a name, a content digest
        and where it lies; ``context`` is its role (training, validation...)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(name=name, digest=digest, source_type="local",
                          source=json.dumps({"uri": source}))
        tags = [InputTag(names.DATASET_CONTEXT, context)]
        self.call(f"log dataset {name}", self.client.log_inputs, run_id,
                  [DatasetInput(dataset, tags)])

    def find_runs(self, filter_string: str, order_by: list[str] | None = None,
                  max_results: int = 1000) -> list:
        return self.call("search runs", self.client.search_runs, [self.experiment_id],
                         filter_string=filter_string, order_by=order_by,
                         max_results=max_results)

    def close_running(self, filter_string: str) -> int:
        """Mark the RUNNING runs matching ``filter_string`` as KILLED (a dead process left
        them); returns how many."""
        runs = self.find_runs(f"{filter_string} and {names.RUNNING}")
        for run in runs:
            self.end_run(run.info.run_id, "KILLED")
        return len(runs)

    def close_dangling_children(self, parent_id: str) -> int:
        """Mark trials left RUNNING by a killed process as KILLED; returns how many."""
        return self.close_running(names.tag_is(names.PARENT_RUN, parent_id))

    # --- the Model Registry (reads; writes are in registry.py) -------------------------------
    def model_versions(self, name: str) -> list:
        return self.call("list model versions", self.client.search_model_versions,
                         f"name = '{name}'")

    def registered_model(self, name: str):
        return self.call("read the registered model", self.client.get_registered_model, name)


@cache
def context_tags() -> dict:
    """What MLflow records about who ran what (user, source name and type), as ``mlflow.start_run``
    would, plus the project's git commit; resolved once per process."""
    from mlflow.tracking.context.registry import resolve_tags

    tags = dict(resolve_tags())
    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if program is not None and (program.name == "cifar-automl" or program.parent.name
                                == "pipeline"):  # the console command or python -m pipeline
        tags[names.SOURCE_NAME] = " ".join(["cifar-automl", *sys.argv[1:2]])
    commit = git_commit()
    if commit:
        tags[names.GIT_COMMIT] = commit
    return tags


def git_commit() -> str | None:
    """The checked-out commit of the working folder's repository, None outside one."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None
