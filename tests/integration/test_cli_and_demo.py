"""The `celery durable` subcommand and the README's demo, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from celery_durable import JobState
from tests.integration.conftest import REPO, Cluster


def _celery(cluster_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.integration.proj", "durable", *args],
        cwd=REPO, env={**os.environ, **cluster_env, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=60)


def test_migrate_and_show_from_the_command_line(tmp_path: Path,
                                                make_cluster: Callable[..., Cluster]) -> None:
    store = f"sqlite:///{tmp_path}/cli.sqlite3"
    env = {"DURABLE_TEST_BROKER": f"sqla+sqlite:///{tmp_path}/broker.sqlite3",
           "DURABLE_TEST_STORE": store, "DURABLE_TEST_PREFIX": "cli_",
           "DURABLE_TEST_QUEUE": "cli"}
    first = _celery(env, "migrate")
    assert first.returncode == 0, first.stderr
    assert "applied schema version(s) 1" in first.stdout
    second = _celery(env, "migrate")
    assert second.returncode == 0 and "up to date" in second.stdout

    missing = _celery(env, "show", "no-such-job")
    assert missing.returncode == 2
    assert "'no-such-job' not found" in missing.stderr

    cluster = make_cluster("sqlite", "sqlite")
    cluster.worker()
    job_id = cluster.app.tasks["proj.five_steps"].delay(0).id
    assert cluster.wait_finished(job_id).state is JobState.SUCCEEDED
    env.update(DURABLE_TEST_STORE=cluster.store_url, DURABLE_TEST_PREFIX=cluster.prefix)
    shown = _celery(env, "show", job_id)
    assert shown.returncode == 0, shown.stderr
    assert "succeeded" in shown.stdout and shown.stdout.count("proj.step") == 5
    as_json = json.loads(_celery(env, "show", job_id, "--json").stdout)
    assert as_json["result"] == [1, 2, 3, 4, 5]
    assert [c["position"] for c in as_json["calls"]] == ["1", "2", "3", "4", "5"]


def test_the_readme_demo_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "examples.orders.demo"], cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    effects = (tmp_path / "demo-run" / "side-effects.log").read_text().splitlines()
    assert sum(line.startswith("charge_card") for line in effects) == 2
    assert sum(line.startswith("refund") for line in effects) == 1
    assert "Completed calls were not re-run" in result.stdout
