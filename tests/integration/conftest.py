"""Real `celery worker` subprocesses against real brokers and databases."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from celery_durable import Durable
from celery_durable.store.records import JobRecord
from celery_durable.store.sql import SQLStorage
from celery_durable.testing.pytest_plugin import wait_until as wait_for
from tests.conftest import RABBITMQ_URL, REDIS_URL, require_service, sql_url, unique_prefix
from tests.integration.proj import create_app

REPO = Path(__file__).resolve().parents[2]
CELERY = [sys.executable, "-m", "celery", "-A", "tests.integration.proj"]
BROKERS = {"redis": REDIS_URL.rsplit("/", 1)[0] + "/5", "rabbitmq": RABBITMQ_URL}


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: Path
    name: str = ""
    """Celery's node name (``-n``), as the worker's heartbeat row holds it."""

    def kill(self) -> None:
        """SIGKILL the whole worker: main process and pool children."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self) -> None:
        """SIGTERM the main process only, as Kubernetes or `systemctl stop` with
        KillMode=mixed do: Celery's warm shutdown."""
        os.kill(self.process.pid, signal.SIGTERM)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Cluster:
    """One isolated setup: its own queue, table prefix and side-effect directory."""

    broker: str
    store_url: str
    prefix: str
    queue: str
    effects: Path
    logs: Path
    step_seconds: float = 0.0
    delivery_timeout: float = 900.0
    max_countdown: float = 60.0
    priorities: bool = False
    result_backend: str | None = None
    visibility_timeout: float | None = None
    """Redis: how long an unacked message waits before the broker gives it back."""
    app: Celery = field(init=False)
    durable: Durable = field(init=False)
    workers: list[Worker] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.app = create_app(
            broker=self.broker,
            store=self.store_url,
            prefix=self.prefix,
            queue=self.queue,
            delivery_timeout=self.delivery_timeout,
            max_countdown=self.max_countdown,
            priorities=self.priorities,
            result_backend=self.result_backend,
            visibility_timeout=self.visibility_timeout,
        )
        self.durable = Durable.of(self.app)
        self.durable.migrate()

    @property
    def storage(self) -> SQLStorage:
        storage = self.durable.storage
        assert isinstance(storage, SQLStorage)
        return storage

    @property
    def payments(self) -> str:
        """A second queue, for calls dispatched away from the default one."""
        return f"{self.queue}-payments"

    def worker(
        self,
        concurrency: int = 1,
        pool: str = "prefork",
        queue: str | None = None,
        **extra_env: str,
    ) -> Worker:
        env = self.env(**extra_env)
        log = self.logs / f"worker-{len(self.workers)}.log"
        name = f"w{len(self.workers)}-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests.integration.proj",
                "worker",
                "-Q",
                queue or self.queue,
                "-c",
                str(concurrency),
                "-P",
                pool,
                "-n",
                name,
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=REPO,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        worker = Worker(process, log, name)
        self.workers.append(worker)
        return worker

    def sweeps(self, worker: Worker) -> int:
        """Recovery sweeps the worker has made (its heartbeat row); -1 before its first."""
        rows = [w for w in self.storage.list_workers() if w.name == worker.name]
        return rows[0].sweeps if rows else -1

    def wait_ready(self, worker: Worker, timeout: float = 60) -> Worker:
        """Until the worker consumes: its sweeper starts once Celery says it is ready,
        and writes the heartbeat row on its first pass."""
        wait_for(
            lambda: self.sweeps(worker) >= 1,
            timeout,
            f"worker {worker.name} to be ready",
            self.logs_tail,
        )
        return worker

    def wait_sweeps(self, worker: Worker, more: int = 2, timeout: float = 60) -> None:
        """Until the worker's sweeper has made ``more`` full passes from now: whatever
        recovery would republish by then, it has."""
        target = self.sweeps(worker) + more
        wait_for(
            lambda: self.sweeps(worker) >= target,
            timeout,
            f"{more} more sweeps of {worker.name}",
            self.logs_tail,
        )

    def notes(self, effect: str) -> list[list[str]]:
        """The ``pid time text...`` lines of an effect file, split."""
        path = self.effects / effect
        return [line.split() for line in path.read_text().splitlines()] if path.exists() else []

    def deliveries(self, job_id: str) -> int:
        """How many times Celery handed the job's message to the task (task_prerun)."""
        return sum(1 for note in self.notes("deliveries") if note[2] == job_id)

    def env(self, **extra_env: str) -> dict[str, str]:
        """What `celery -A tests.integration.proj ...` needs to build this cluster's app."""
        return {
            **os.environ,
            **extra_env,
            "DURABLE_TEST_BROKER": self.broker,
            "DURABLE_TEST_STORE": self.store_url,
            "DURABLE_TEST_PREFIX": self.prefix,
            "DURABLE_TEST_QUEUE": self.queue,
            "DURABLE_TEST_EFFECTS": str(self.effects),
            "DURABLE_TEST_STEP_SECONDS": str(self.step_seconds),
            "DURABLE_TEST_DELIVERY_TIMEOUT": str(self.delivery_timeout),
            "DURABLE_TEST_MAX_COUNTDOWN": str(self.max_countdown),
            "DURABLE_TEST_PRIORITIES": "1" if self.priorities else "",
            "DURABLE_TEST_RESULT_BACKEND": self.result_backend or "",
            "DURABLE_TEST_VISIBILITY_TIMEOUT": str(self.visibility_timeout or ""),
            "PYTHONPATH": str(REPO),
        }

    def web(self, port: int, *args: str) -> Worker:
        """`celery -A tests.integration.proj durable web --port PORT ...`, once it answers."""
        log = self.logs / f"web-{len(self.workers)}.log"
        process = subprocess.Popen(
            [*CELERY, "durable", "web", "--port", str(port), *args],
            cwd=REPO,
            env=self.env(),
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        web = Worker(process, log)
        self.workers.append(web)

        def answers() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return True
            except OSError:
                return False

        wait_for(answers, 60, "the dashboard to listen")
        return web

    def beat(self, **extra_env: str) -> Worker:
        """A `celery beat -S durable` process with the test schedule registered."""
        env = {
            **os.environ,
            **extra_env,
            "DURABLE_TEST_SCHEDULE": "1",
            "DURABLE_TEST_BROKER": self.broker,
            "DURABLE_TEST_STORE": self.store_url,
            "DURABLE_TEST_PREFIX": self.prefix,
            "DURABLE_TEST_QUEUE": self.queue,
            "DURABLE_TEST_EFFECTS": str(self.effects),
            "PYTHONPATH": str(REPO),
        }
        log = self.logs / f"beat-{len(self.workers)}.log"
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests.integration.proj",
                "beat",
                "-S",
                "durable",
                "--loglevel=INFO",
                "--schedule",
                str(self.logs / f"beat-{len(self.workers)}.db"),
            ],
            cwd=REPO,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        beat = Worker(process, log)
        self.workers.append(beat)
        return beat

    def count(self, effect: str) -> int:
        return len(self.times(effect))

    def times(self, effect: str) -> list[float]:
        """When each execution of ``effect`` happened (written by the worker)."""
        path = self.effects / effect
        lines = path.read_text().splitlines() if path.exists() else []
        return [float(line.split()[1]) for line in lines]

    def job(self, job_id: str) -> JobRecord | None:
        return self.storage.get_job(job_id)

    def committed_calls(self, job_id: str) -> int:
        return sum(1 for c in self.storage.load_history(job_id) if c.job_id == job_id)

    def logs_tail(self) -> str:
        out = []
        for w in self.workers:
            text = w.log.read_text(errors="replace") if w.log.exists() else ""
            out.append(f"--- {w.log.name} ---\n" + "\n".join(text.splitlines()[-40:]))
        return "\n".join(out)

    def wait_finished(self, job_id: str, timeout: float = 60) -> JobRecord:
        job: JobRecord = wait_for(
            lambda: (j := self.job(job_id)) is not None and j.state.finished and j,
            timeout,
            f"job {job_id} to finish",
            self.logs_tail,
        )
        return job

    def close(self) -> None:
        for w in self.workers:
            w.kill()
        if self.broker.startswith("amqp"):
            with self.app.connection_for_write() as conn:
                for queue in (self.queue, self.payments):
                    conn.default_channel.queue_delete(queue)
        self.storage.drop_tables()
        self.storage.dispose()


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(
        broker: str,
        store: str,
        step_seconds: float = 0.0,
        delivery_timeout: float = 900.0,
        **options: Any,
    ) -> Cluster:
        if broker == "sqlite":
            broker_url = f"sqla+sqlite:///{tmp_path}/broker.sqlite3"
        else:
            require_service(broker)
            broker_url = BROKERS[broker]
        effects = tmp_path / "effects"
        logs = tmp_path / "logs"
        effects.mkdir(exist_ok=True)
        logs.mkdir(exist_ok=True)
        cluster = Cluster(
            broker_url,
            sql_url(store, tmp_path),
            unique_prefix(),
            f"q-{uuid.uuid4().hex[:8]}",
            effects,
            logs,
            step_seconds,
            delivery_timeout,
            **options,
        )
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.close()
