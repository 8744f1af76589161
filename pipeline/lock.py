"""One writer of the registry's aliases at a time: an exclusive ``flock`` on a lock file.

The kernel drops a ``flock`` when its holder dies, however it dies (even ``kill -9``), so a lock
left by a dead process is never in the way: the file may remain, the lock does not. The file
records who holds it (pid, host, start time) for the message a second caller gets.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from pipeline.errors import UserError

log = logging.getLogger(__name__)


class LockHeld(UserError):
    """Another run holds the lock; this one did nothing."""

    exit_code = 75  # EX_TEMPFAIL: try again later


class RunLock:
    """The registry's lock: a retune holds it for its whole run, publish while it registers
    and sets the first champion. ``wait_s``: how long to wait for a holder (0: not at all)."""

    def __init__(self, path: Path, purpose: str = "retune", wait_s: float = 0.0):
        self.path, self.purpose, self.wait_s = Path(path), purpose, wait_s
        self._handle = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115  (held until __exit__)
        deadline, told = time.monotonic() + self.wait_s, False
        while not _try_lock(handle):
            handle.seek(0)
            holder = _describe(handle.read())
            if time.monotonic() >= deadline:
                handle.close()
                waited = f" after waiting {self.wait_s / 60:.0f} min" if self.wait_s else ""
                raise LockHeld(f"{self.path}: {holder}{waited}; this {self.purpose} exits "
                               "without touching anything")
            if not told:
                log.info("%s: %s; waiting up to %.0f min", self.path, holder, self.wait_s / 60)
                told = True
            time.sleep(1.0)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "command": self.purpose,
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.truncate(0)
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def _try_lock(handle) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _describe(text: str) -> str:
    try:
        holder = json.loads(text)
        return (f"another {holder.get('command', 'retune')} is running (pid {holder['pid']} "
                f"on {holder['host']} since {holder['started']})")
    except (ValueError, KeyError, TypeError):
        return "another retune or publish holds it (holder unknown)"
