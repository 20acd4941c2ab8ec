"""The Django example project (examples/django_shop) with a real worker on PostgreSQL:
its view places an order and enqueues the durable workflow in one transaction; an order
that rolls back leaves no job; `manage.py` and `celery -A shop_project durable` work side
by side. Django runs in subprocesses (its settings are global to a process)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from celery_durable import JobState
from celery_durable.store.records import JobFilter
from celery_durable.store.sql import SQLStorage
from celery_durable.testing.pytest_plugin import wait_until
from tests.conftest import POSTGRES_URL, require_service, unique_prefix
from tests.integration.conftest import BROKERS, REPO

SHOP = REPO / "examples" / "django_shop"
pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.worker]

PLACE_ORDERS = """
import json
from django.test import Client
client = Client(raise_request_exception=False)
book = client.post("/orders/", {"item": "book"})
lost = client.post("/orders/", {"item": "out-of-stock"})
print(json.dumps({"book": book.json(), "lost_status": lost.status_code}))
"""


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh PostgreSQL database for Django's tables and the store's."""
    require_service("postgres")
    name = f"shop_{uuid.uuid4().hex[:10]}"
    server = make_url(POSTGRES_URL)
    admin = f"postgresql://{server.username}@{server.host}:{server.port or 5432}/{server.database}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"postgresql://{server.username}@{server.host}:{server.port or 5432}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _run(env: dict[str, str], *argv: str) -> str:
    done = subprocess.run(
        argv, cwd=SHOP, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_view_commits_the_order_and_its_job_together(database: str, tmp_path: Path) -> None:
    require_service("redis")
    queue, prefix = f"shop-{uuid.uuid4().hex[:8]}", unique_prefix()
    env = {
        **os.environ,
        "SHOP_DATABASE_URL": database,
        "SHOP_BROKER": BROKERS["redis"],
        "SHOP_QUEUE": queue,
        "SHOP_TABLE_PREFIX": prefix,
        "PYTHONPATH": f"{SHOP}{os.pathsep}{REPO}",
    }
    python, celery = sys.executable, [sys.executable, "-m", "celery", "-A", "shop_project"]
    _run(env, python, "manage.py", "migrate")
    assert "applied schema version" in _run(env, *celery, "durable", "migrate")
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [*celery, "worker", "-Q", queue, "-c", "2", "--without-gossip", "--without-mingle"],
        cwd=SHOP,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    store = SQLStorage(
        make_url(database).set(drivername="postgresql+psycopg").render_as_string(False),
        table_prefix=prefix,
    )
    try:
        out = _run(env, python, "manage.py", "shell", "-c", PLACE_ORDERS)
        placed = json.loads(out.strip().splitlines()[-1])
        assert placed["lost_status"] == 500  # the view raised inside its transaction
        job_id, order_id = placed["book"]["job"], placed["book"]["order"]
        job = wait_until(
            lambda: (j := store.get_job(job_id)) is not None and j.state.finished and j,
            60,
            "the order's job to finish",
            lambda: (tmp_path / "worker.log").read_text(errors="replace")[-3000:],
        )
        assert job.state is JobState.SUCCEEDED
        assert json.loads(job.result or "{}") == {
            "payment": f"pay-{order_id}",
            "parcel": f"parcel-{order_id}",
        }
        engine = create_engine(store.engine.url)
        with engine.connect() as conn:
            orders = conn.execute(text("SELECT id, item, status FROM shop_order")).all()
        engine.dispose()
        assert [tuple(o) for o in orders] == [(order_id, "book", "shipped")]  # one order
        assert [j.id for j in store.list_jobs(JobFilter(limit=100))] == [job_id]  # and one job
        listed = _run(env, *celery, "durable", "jobs", "list")
        assert job_id in listed and "succeeded" in listed
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        store.dispose()
