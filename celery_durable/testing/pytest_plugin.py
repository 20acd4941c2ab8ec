"""pytest fixtures for your own durable tasks: real `celery worker` processes you can kill.

Turn it on in your ``conftest.py``::

    pytest_plugins = ["celery_durable.testing.pytest_plugin"]

and test crash recovery the way it happens in production::

    def test_an_order_survives_a_crash(durable_worker):
        worker = durable_worker(app, "shop.celery")           # `celery -A shop.celery worker`
        job_id = place_order.delay(42).id
        wait_until(durable, lambda: committed_calls(durable, job_id) >= 1)
        worker.kill()                                          # SIGKILL, pool children too
        durable_worker(app, "shop.celery")
        assert wait_for_job(durable, job_id).state == "succeeded"

A worker counts as ready once its recovery sweeper has written its heartbeat row, so the
fixture waits on the database, never on a fixed sleep or on log output. It works with
any broker and store the app is configured for (SQLite and the ``sqla+sqlite://``
broker need no services). Every worker a test started is killed when the test ends.

Why not pytest-celery: its fixtures start brokers and workers in Docker containers,
which many CI machines (ours among them) cannot run; Celery's own
``celery.contrib.pytest`` worker runs in a thread of the test process, which cannot be
SIGKILLed. A durable job is only proven durable by killing a real worker process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from ..app import Durable
from ..operations.views import JobView


@dataclass
class DurableWorker:
    """A `celery worker` subprocess (its own session, so ``kill`` takes the whole pool)."""

    process: subprocess.Popen[bytes]
    name: str
    """Celery's node name, as its heartbeat row holds it."""
    log: Path
    durable: Durable
    started: list[DurableWorker] = field(default_factory=list, repr=False)

    @property
    def sweeps(self) -> int:
        """Recovery sweeps the worker has made; -1 before it is ready."""
        for worker in self.durable.workers():
            if worker.name == self.name:
                return worker.sweeps
        return -1

    def wait_ready(self, timeout: float = 60) -> DurableWorker:
        wait_until(
            lambda: self.sweeps >= 1 or self.process.poll() is not None,
            timeout,
            f"worker {self.name} to be ready",
            self.log_tail,
        )
        if self.process.poll() is not None:
            raise AssertionError(
                f"worker {self.name} exited ({self.process.returncode}):\n{self.log_tail()}"
            )
        return self

    def wait_sweeps(self, more: int = 2, timeout: float = 60) -> None:
        """Until the worker's recovery sweeper has made ``more`` passes from now."""
        target = self.sweeps + more
        wait_until(lambda: self.sweeps >= target, timeout, f"{more} sweeps of {self.name}")

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes, as an OOM killer or a lost host would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 60) -> int:
        """Celery's warm shutdown (SIGTERM to the main process); returns its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.returncode

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    on_timeout: Callable[[], str] = lambda: "",
) -> Any:
    """Poll ``predicate`` (database state, never log output) until it is truthy and
    return its value; fail the test after ``timeout`` seconds, with ``on_timeout()``
    (worker logs, say) in the message."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}\n{on_timeout()}")


def wait_for_job(durable: Durable, job_id: str, timeout: float = 60) -> JobView:
    """The job once it has finished (succeeded, failed, dead or cancelled)."""
    finished = ("succeeded", "failed", "dead", "cancelled")
    view: JobView = wait_until(
        lambda: (found := durable.get_job(job_id)).state in finished and found,
        timeout,
        f"job {job_id} to finish",
    )
    return view


@pytest.fixture
def durable_worker(tmp_path: Path) -> Iterator[Callable[..., DurableWorker]]:
    """``durable_worker(app, "proj.celery", concurrency=1, pool="prefork", queues=(),
    env=None, args=(), cwd=None)``: start ``celery -A proj.celery worker`` and wait until
    it is ready. ``app`` is the same app in this process (it reads the heartbeat rows);
    ``args`` go to ``celery worker`` as they are."""
    started: list[DurableWorker] = []

    def start(
        app: Celery,
        module: str,
        *,
        concurrency: int = 1,
        pool: str = "prefork",
        queues: Sequence[str] = (),
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
        cwd: str | Path | None = None,
        ready_timeout: float = 60,
    ) -> DurableWorker:
        name = f"durable-test-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
        log = tmp_path / f"{name.split('@')[0]}.log"
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            module,
            "worker",
            "-n",
            name,
            "-c",
            str(concurrency),
            "-P",
            pool,
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            *args,
        ]
        if queues:
            command += ["-Q", ",".join(queues)]
        process = subprocess.Popen(
            command,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        worker = DurableWorker(process, name, log, Durable.of(app))
        started.append(worker)
        return worker.wait_ready(ready_timeout)

    yield start
    for worker in started:
        worker.kill()
