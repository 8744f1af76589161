"""Writes to MLflow that never block training and survive an outage or a kill.

Each write is appended to a spool file (JSON lines) and queued; one background thread applies
the queue in order. A write the store refuses for a while (network down, server restarting, a
busy database) is retried with backoff until it goes through; a write the store rejects for
good (a 4xx answer: bad value) is reported and skipped. Applied writes are marked in the spool,
so a killed process leaves exactly the writes still to do, and the next writer on the same
spool applies them first. New runs get a local key at once; the key maps to the MLflow run id
once the run exists, and later writes to the key go to that run.

A kill can land anywhere, so two orders matter: a run carries its local key as a tag, and a
replayed creation first looks for a run with that key (the process may have died after the run
was created but before the mapping reached the spool); and a replay writes the new spool beside
the old one and swaps it in with one rename, so the pending writes are on disk at every moment.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from pathlib import Path

from pipeline.tracking import names
from pipeline.tracking.store import TrackingError, TrackingStore, is_transient

log = logging.getLogger(__name__)
LOCAL = "local:"  # prefix of a run key whose MLflow run is not created yet
MAX_BACKOFF_S = 10.0
GIVE_UP_WHEN_DOWN_S = 10.0  # drain: a store that has not answered for this long is down


def now_ms() -> int:
    """A timestamp taken when a write is queued: runs and metrics show when things happened,
    not when the store got them."""
    return int(time.time() * 1000)


def run_ref(key: str) -> dict:
    """A tag value that is a run's id, written once that run exists (a key may be local)."""
    return {"run_ref": key}


class SpooledWriter:
    def __init__(self, store: TrackingStore, spool: Path | None = None,
                 first_backoff_s: float = 0.5):
        self.store, self.spool, self.first_backoff_s = store, spool, first_backoff_s
        self.run_ids: dict[str, str] = {}  # local key -> MLflow run id
        self.failures = 0  # writes skipped for good
        self.waiting_since: float | None = None  # monotonic time the store stopped answering
        self._pending: deque[dict] = deque()
        self._replayed: set[str] = set()  # keys whose creation may have reached the store
        self._closed = False  # closed: the thread sends nothing more (the spool keeps it)
        self._retry_now = threading.Event()  # cuts a backoff short: the drain asks again at once
        self._seq = 0
        self._lock = threading.Condition()
        self._file_lock = threading.Lock()
        if spool is not None:
            spool.parent.mkdir(parents=True, exist_ok=True)
            self._replay(spool)
        self._thread = threading.Thread(target=self._work, name="mlflow-writer", daemon=True)
        self._thread.start()

    # --- the training thread's side: never waits on the store ----------------------------------
    def new_run(self, name: str, tags: dict, parent: str | None = None) -> str:
        key = f"{LOCAL}{uuid.uuid4().hex}"
        self.submit("create_run", key=key, name=name, tags=tags, parent=parent,
                    start_ms=now_ms())
        return key

    def submit(self, op: str, **args) -> None:
        with self._lock:
            self._seq += 1
            entry = {"seq": self._seq, "op": op, "args": args}
            self._append(entry)
            self._pending.append(entry)
            self._lock.notify()

    def drain(self, timeout_s: float, give_up_when_down_s: float = GIVE_UP_WHEN_DOWN_S) -> int:
        """Wait until every queued write went through, at most ``timeout_s``, and no longer
        than ``give_up_when_down_s`` while the store does not answer at all; returns how many
        are left (they stay in the spool for the next writer). The writer asks the store again
        at once, and the give-up clock starts no earlier than the drain: a store that came back
        during a long outage is not taken for down by a writer still sleeping in its backoff."""
        started = time.monotonic()
        deadline = started + timeout_s
        self._retry_now.set()
        with self._lock:
            while self._pending and time.monotonic() < deadline and not self._down_for(
                    give_up_when_down_s, started):
                self._lock.wait(timeout=min(0.5, max(deadline - time.monotonic(), 0.01)))
            return len(self._pending)

    def _down_for(self, seconds: float, not_before: float) -> bool:
        since = self.waiting_since
        return since is not None and time.monotonic() - max(since, not_before) >= seconds

    def resolve(self, run: str | None) -> str | None:
        """The MLflow run id of a key (None while its run is not created)."""
        if run is None or not run.startswith(LOCAL):
            return run
        return self.run_ids.get(run)

    # --- the writer thread ---------------------------------------------------------------------
    def close(self) -> None:
        """Stop sending: what is still queued stays in the spool, for the next writer on it
        (two writers on one spool would send the same writes twice)."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                entry = self._pending[0]
            if not self._apply_until_done(entry):
                return
            with self._lock:
                self._pending.popleft()
                self._append({"done": entry["seq"]})
                self._lock.notify_all()

    def _apply_until_done(self, entry: dict) -> bool:
        """Apply one write, retrying while the store is away; False if closed meanwhile."""
        backoff, waited = self.first_backoff_s, False
        while True:
            try:
                self._apply(entry["op"], dict(entry["args"]))
                self.waiting_since = None
                if waited:
                    log.info("MLflow: the store answers again; %d write(s) still queued",
                             len(self._pending) - 1)
                return True
            except Exception as exc:
                if not (isinstance(exc, TrackingError) and is_transient(exc)):
                    self.failures += 1
                    log.warning("MLflow: %s skipped: %s", entry["op"], _first_line(exc))
                    return True
                if self._closed:
                    return False
                if not waited:
                    log.warning("MLflow: %s waits for the store (%s); training goes on and "
                                "the writes queue up in %s", entry["op"], _first_line(exc),
                                self.spool or "memory")
                waited = True
                if self.waiting_since is None:
                    self.waiting_since = time.monotonic()
                if self._retry_now.wait(backoff):
                    self._retry_now.clear()
                backoff = min(2 * backoff, MAX_BACKOFF_S)

    def _apply(self, op: str, args: dict) -> None:
        if op == "create_run":
            key = args["key"]
            run_id = self.store.find_run_id(names.SPOOL_KEY, key) if key in self._replayed \
                else None
            if run_id is None:
                parent = self._run(args["parent"]) if args["parent"] else None
                run_id = self.store.create_run(args["name"], {**args["tags"],
                                                              names.SPOOL_KEY: key},
                                               parent, args.get("start_ms"))
            self.run_ids[key] = run_id
            self._append({"run": args["key"], "id": run_id})
            return
        run_id = self._run(args.pop("run"))
        if op == "set_tags":
            args["tags"] = {k: self._run(v["run_ref"]) if isinstance(v, dict) else v
                            for k, v in args["tags"].items()}
        getattr(self.store, op)(run_id, **args)

    def _run(self, run: str) -> str:
        run_id = self.resolve(run)
        if run_id is None:  # its creation was skipped for good: so is every write to it
            raise LookupError(f"run {run} was never created")
        return run_id

    # --- the spool file -------------------------------------------------------------------------
    def _append(self, record: dict) -> None:
        if self.spool is None:
            return
        with self._file_lock, open(self.spool, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def _replay(self, spool: Path) -> None:
        """Queue the writes an earlier process left undone, and its run keys, in a new spool
        that replaces the old one in a single rename (a kill before it leaves the old one)."""
        if not spool.is_file():
            return
        entries, done = [], set()
        for line in spool.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # the last line of a killed writer
                continue
            if "run" in record:
                self.run_ids[record["run"]] = record["id"]
            elif "done" in record:
                done.add(record["done"])
            elif "seq" in record:
                entries.append(record)
        left = [e for e in entries if e["seq"] not in done]
        for entry in left:
            self._seq += 1
            self._pending.append({"seq": self._seq, "op": entry["op"], "args": entry["args"]})
            if entry["op"] == "create_run":
                self._replayed.add(entry["args"]["key"])
        records = [{"run": key, "id": run_id} for key, run_id in self.run_ids.items()]
        _replace_lines(spool, [*records, *self._pending])
        if left:
            log.info("MLflow: %d write(s) an earlier run left undone are queued again", len(left))

    def forget_spool(self) -> None:
        """After a full drain: nothing left to replay."""
        with self._lock:
            if self.spool is not None and not self._pending:
                self.spool.unlink(missing_ok=True)


def _replace_lines(path: Path, records: list[dict]) -> None:
    """``path`` holds ``records`` (JSON lines) after one rename; before it, what it held."""
    scratch = path.with_name(f"{path.name}.new")
    with open(scratch, "w") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(scratch, path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__
