"""The supervisor: ``rigfast --workers N`` runs N worker processes on the same ports.

How this works: the command has checked the configuration and that the ports
are free (``rigfast.preflight``: a plain bind, which fails if anyone listens
there, SO_REUSEPORT or not); the supervisor starts each
worker as ``python -m rigfast`` with ``RIGFAST_WORKERS=1``,
``RIGFAST_WORKER_INDEX=i``, ``RIGFAST_WORKER_COUNT=N`` and the node id.
Every worker binds the ports itself with SO_REUSEPORT: the kernel spreads
new connections over the workers, and a worker's death closes only its own
listening sockets. Workers ask the kernel for SIGTERM when the supervisor
dies (PR_SET_PDEATHSIG), so a killed supervisor leaves no orphans.

A worker that exits is started again at once; one that keeps dying soon
after its start waits longer each time (up to ``RESTART_MAX_DELAY_S``). A
worker that exits with the configuration error code (2: the command checked
the configuration before starting the workers, so only something like a port
taken in between gets there) stops the node with that code: restarting it
would fail the same way.
SIGTERM or SIGINT: forward the same signal to every worker (SIGTERM: each
drains its connections over ``RIGFAST_DRAIN_S``; SIGINT: they stop at once),
wait up to the drain plus ``STOP_TIMEOUT_S``, SIGKILL what is left.

The supervisor never runs an event loop; it sleeps in ``select`` on a
self-pipe written by the signal handlers (``signal.set_wakeup_fd``).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

from rigfast.cluster.naming import default_node_id, reader_in_use, runtime_dir
from rigfast.errors import CONFIG_EXIT_CODE
from rigfast.fdlimit import capacity, raise_nofile

log = logging.getLogger("rigfast.supervisor")

STOP_TIMEOUT_S = 10.0
RESTART_MIN_DELAY_S = 0.1
RESTART_MAX_DELAY_S = 5.0
STABLE_AFTER_S = 10.0
TICK_S = 1.0


READER_INDEX = -1


class Worker:
    """A supervised child: worker ``index``, or the node's event reader (``READER_INDEX``)."""

    def __init__(self, index: int):
        self.index = index
        self.name = "reader" if index == READER_INDEX else f"worker {index}"
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.failures = 0
        self.restart_at = 0.0


def worker_env(cfg: Any, node: str, index: int, directory: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(cfg.to_env())
    env.update({
        "RIGFAST_WORKERS": "1",
        "RIGFAST_WORKER_INDEX": str(index),
        "RIGFAST_WORKER_COUNT": str(cfg.workers),
        "RIGFAST_NODE_ID": node,
        "RIGFAST_CLUSTER_DIR": directory,
        "RIGFAST_DIE_WITH_PARENT": "1",
    })
    return env


def run_workers(cfg: Any, command: list[str] | None = None) -> int:
    """Run ``cfg.workers`` workers (``command``, default ``python -m rigfast``) until a signal, or until
    one exits with the configuration error code: then stop all and return that code (no restarts)."""
    nofile = raise_nofile()
    node = cfg.node_id or default_node_id()
    directory = runtime_dir(cfg, node)
    command = command or [sys.executable, "-m", "rigfast"]
    os.makedirs(directory, mode=0o700, exist_ok=True)
    n = cfg.workers
    log.info(
        "rigfast node %s: %d workers, open-file limit %d per process: up to %d connections per worker, %d per node",
        node, n, nofile, capacity(nofile), capacity(nofile) * n,
    )
    stop = {"sig": 0}
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    os.set_blocking(wfd, False)
    signal.set_wakeup_fd(wfd)

    def on_stop(signum, _frame) -> None:
        stop["sig"] = stop["sig"] or signum

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the select below

    workers = [Worker(i) for i in range(n)]
    if reader_in_use(cfg):  # the node's event reader: one more child, restarted like a worker
        workers.append(Worker(READER_INDEX))
    result = 0

    def spawn(w: Worker) -> None:
        env = worker_env(cfg, node, max(w.index, 0), directory)
        if w.index == READER_INDEX:
            env["RIGFAST_ROLE"] = "reader"
        w.proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
        w.started = time.monotonic()
        log.info("%s started, pid %d", w.name, w.proc.pid)

    try:
        for w in workers:
            spawn(w)
        while not stop["sig"]:
            now = time.monotonic()
            next_due = now + TICK_S
            for w in workers:
                if w.proc is not None:
                    code = w.proc.poll()
                    if code is None:
                        continue
                    lived = now - w.started
                    if code == CONFIG_EXIT_CODE:
                        log.error("%s (pid %d) stopped on a configuration error; stopping the node",
                                  w.name, w.proc.pid)
                        result = CONFIG_EXIT_CODE
                        stop["sig"] = stop["sig"] or signal.SIGTERM  # what the other workers get
                        break
                    w.failures = 0 if lived >= STABLE_AFTER_S else w.failures + 1
                    delay = 0.0 if w.failures <= 1 else min(RESTART_MAX_DELAY_S, RESTART_MIN_DELAY_S * 2 ** (w.failures - 2))
                    log.warning("%s (pid %d) exited with %s after %.1fs; restarting in %.1fs",
                                w.name, w.proc.pid, code, lived, delay)
                    w.proc = None
                    w.restart_at = now + delay
                if w.proc is None and not stop["sig"]:
                    if now >= w.restart_at:
                        spawn(w)
                    else:
                        next_due = min(next_due, w.restart_at)
            try:
                select.select([rfd], [], [], max(0.0, next_due - time.monotonic()))
                os.read(rfd, 512)
            except (BlockingIOError, InterruptedError):
                pass
        if result == 0:
            log.info("rigfast node %s: signal %d, stopping %d workers", node, stop["sig"], n)
    finally:
        stop_all(workers, stop["sig"] or signal.SIGTERM, STOP_TIMEOUT_S + cfg.drain_s)
        signal.set_wakeup_fd(-1)
        os.close(rfd)
        os.close(wfd)
        try:  # a clean stop: the next start reads new events only
            os.unlink(os.path.join(directory, "reader.offsets"))
        except OSError:
            pass
        try:
            os.rmdir(directory)
        except OSError:
            pass
    return result


def stop_all(workers: list[Worker], sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> None:
    procs = [w.proc for w in workers if w.proc is not None and w.proc.poll() is None]
    for p in procs:
        try:
            p.send_signal(sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("worker pid %d did not stop in %.0fs; killing it", p.pid, timeout)
            p.kill()
            p.wait(5.0)
