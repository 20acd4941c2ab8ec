"""The async client API (aenqueue, aget_job, asend, aresult) from a FastAPI app's test
client, against real workers: the example app on the embedded default (SQLite store and
broker), and the same API on PostgreSQL + Redis."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.integration.conftest import REPO, Cluster, wait_for

pytestmark = pytest.mark.worker


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """examples/fastapi_orders, its worker running, its API in this process."""
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setenv("ORDERS_API_DIR", str(run))
    env = {**os.environ, "PYTHONPATH": str(REPO), "ORDERS_API_DIR": str(run)}
    command = [sys.executable, "-m", "celery", "-A", "examples.fastapi_orders.app", "worker"]
    worker = subprocess.Popen(
        [*command, "-c", "2", "--loglevel=INFO"],
        cwd=tmp_path,
        env=env,
        stdout=(tmp_path / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    sys.modules.pop("examples.fastapi_orders.app", None)
    module = importlib.import_module("examples.fastapi_orders.app")
    module.durable.migrate()
    try:
        yield module
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        module.durable.storage.dispose()


def test_the_fastapi_example_enqueues_shows_messages_and_awaits_the_result(example: Any) -> None:
    client = TestClient(example.api)
    job_id = client.post("/orders", json={"id": "o-1", "items": ["book", "lamp"]}).json()["job_id"]
    shown = lambda: client.get(f"/orders/{job_id}").json()  # noqa: E731
    wait_for(lambda: shown()["waiting_for"] == "approval", 90, "the order to wait for approval")
    assert [(c["position"], c["call"]) for c in shown()["timeline"]] == [
        ("1", "examples.fastapi_orders.app.reserve"),
        ("2", "examples.fastapi_orders.app.reserve"),
        ("3", "examples.fastapi_orders.app.price"),
        ("4", "examples.fastapi_orders.app.price"),
        ("5", "celery_durable.now"),
    ]
    waiting = client.get(f"/orders/{job_id}/result", params={"timeout": 0.3})
    assert waiting.status_code == 504 and "did not finish within 0.3 s" in waiting.text
    assert client.post(f"/orders/{job_id}/approval", json={"by": "ops"}).json() == {"sent": True}
    done = client.get(f"/orders/{job_id}/result", params={"timeout": 60})
    assert done.json() == {
        "result": {
            "order": "o-1",
            "reserved": ["reserved book", "reserved lamp"],
            "total": 800,
            "approval": {"by": "ops"},
        }
    }
    assert client.get("/orders/nope").status_code == 404
    assert client.get("/orders/nope/result").status_code == 404
    assert client.get(f"/orders/{job_id}/result", params={"timeout": -1}).status_code == 422
    finished = client.post(f"/orders/{job_id}/approval", json="again")
    assert finished.status_code == 409 and "finished" in finished.text


@pytest.mark.redis
@pytest.mark.postgres
def test_the_async_client_api_on_postgresql(make_cluster: Callable[..., Cluster]) -> None:
    from examples.fastapi_orders.app import create_api

    cluster = make_cluster("redis", "postgres")
    cluster.wait_ready(cluster.worker())
    client = TestClient(create_api(cluster.durable, cluster.app.tasks["proj.await_approval"]))
    job_id = client.post("/orders", json={"id": "o-2"}).json()["job_id"]
    wait_for(
        lambda: client.get(f"/orders/{job_id}").json()["waiting_for"] == "approval", 60, "wait"
    )
    assert client.post(f"/orders/{job_id}/approval", json="yes").json() == {"sent": True}
    done = client.get(f"/orders/{job_id}/result", params={"timeout": 60}).json()
    assert done == {"result": {"order": {"id": "o-2"}, "answer": "yes"}}
