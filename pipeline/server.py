"""A server process that stops with its command: ``cifar-automl ui`` runs the MLflow server as a
child and ends it, with everything it started, when the command gets SIGTERM (systemd, kill),
SIGINT (Ctrl-C) or SIGHUP (a closed terminal)."""

from __future__ import annotations

import os
import signal
import subprocess

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
GRACE_S = 10.0  # after SIGTERM, how long the server may take before SIGKILL


class _Stop(Exception):
    pass


def run_until_signalled(command: list[str], env: dict | None = None) -> int:
    """Run ``command`` in a process group of its own until it exits or this process is
    signalled; returns its exit code, or 0 when a signal stopped it."""
    server = subprocess.Popen(command, env=env, start_new_session=True)

    def stop(signum, frame):
        _ignore_stop_signals()  # a second signal must not cut the clean-up short
        raise _Stop

    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        return server.wait()
    except _Stop:
        return 0
    finally:
        _ignore_stop_signals()
        stop_group(server)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _ignore_stop_signals() -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process's group (and to any descendant that left it, when psutil is
    there to find them), SIGKILL after ``GRACE_S``."""
    if process.poll() is not None:
        return
    stray = _descendants(process.pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        for child in stray:
            try:
                child.send_signal(sig)
            except Exception:  # already gone
                pass
        try:
            process.wait(timeout=GRACE_S)
            if sig == signal.SIGTERM:
                _wait_gone(stray)
            return
        except subprocess.TimeoutExpired:
            continue


def _descendants(pid: int) -> list:
    try:
        import psutil
    except ImportError:
        return []
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _wait_gone(processes: list) -> None:
    if not processes:
        return
    import psutil

    _, alive = psutil.wait_procs(processes, timeout=GRACE_S)
    for process in alive:
        process.kill()
