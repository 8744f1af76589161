"""Distributed search on KerasTuner's own engine: a chief process serves the oracle over gRPC,
worker processes ask it for trials, train them and report back. All share the tuner folder and
one MLflow tracking store (a server with a database when they run on several machines).

KerasTuner reads its role from ``KERASTUNER_TUNER_ID`` / ``KERASTUNER_ORACLE_IP`` /
``KERASTUNER_ORACLE_PORT``; this module sets them and fixes its known traps:

- the chief's server loop (``oracle_chief.start_server``) waits forever for a trial whose worker
  died: ``serve`` is the same loop with a deadline, and returns the orphaned trials;
- a worker's calls wait up to an hour for the chief: the client timeout is bounded, and a worker
  first waits (bounded) for the chief's port;
- a worker that dies mid-trial and is restarted with the same id gets the same trial again
  (KerasTuner keeps it as that worker's ongoing trial), so rerunning it completes the search.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass

from pipeline.errors import UserError

log = logging.getLogger(__name__)


class ChiefUnreachable(UserError):
    exit_code = 1


class SearchIncomplete(UserError):
    """The chief's deadline passed with trials still out on workers that never reported."""

    exit_code = 1


@dataclass(frozen=True)
class Role:
    kind: str  # standalone | chief | worker
    host: str = "127.0.0.1"
    port: int = 0
    worker_id: int = 0
    wait_s: float = 300  # a worker: how long it waits for the chief, and for any call to it
    grace_s: float = 120  # the chief: how long it waits for running trials after the budget

    @property
    def tuner_id(self) -> str:
        return "chief" if self.kind == "chief" else f"worker{self.worker_id}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--chief {text!r}: expected HOST:PORT, for example 127.0.0.1:8765")
    return host, int(port)


def configure(role: Role, rpc_timeout_s: float) -> None:
    """Set KerasTuner's distribution variables for this process (before building a tuner)."""
    if role.kind == "standalone":
        for name in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
            os.environ.pop(name, None)
        return
    os.environ["KERASTUNER_TUNER_ID"] = role.tuner_id
    os.environ["KERASTUNER_ORACLE_IP"] = role.host
    os.environ["KERASTUNER_ORACLE_PORT"] = str(role.port)
    from keras_tuner.src.distribute import oracle_client

    # read at call time by every client call; an hour by default
    oracle_client.TIMEOUT = rpc_timeout_s


def wait_for_chief(role: Role, timeout_s: float) -> None:
    """A worker that starts first waits for the chief's port, but not forever."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((role.host, role.port), timeout=2):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise ChiefUnreachable(f"no chief at {role.address} after {timeout_s:.0f} s; "
                                       "start `tune --role chief` there first") from None
            time.sleep(0.5)


def serve(oracle, stop_at: float) -> dict[str, str]:
    """Serve the oracle until the search is over or ``stop_at`` (time.monotonic) passes.

    Over: some worker was told to stop, and no trial is out and no worker is registered (what
    KerasTuner's own loop waits for, without a bound). Returns the trials still out at the
    end, {worker id: trial id}: empty when the search finished.
    """
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    if server.add_insecure_port(address) == 0:
        raise UserError(f"--chief {address}: cannot listen there (port in use?)")
    server.start()
    log.info("chief: serving the oracle on %s", address)
    try:
        while time.monotonic() < stop_at:
            time.sleep(0.5)
            if servicer.stop_triggered and oracle_chief.exit_chief(oracle):
                return {}
        return {tuner: trial.trial_id for tuner, trial in oracle.ongoing_trials.items()}
    finally:
        server.stop(grace=5)
