"""The `celery durable` subcommand and the README's demo, run as a user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from celery_durable import JobState
from tests.integration.conftest import REPO, Cluster, wait_for


def _celery(cluster_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.integration.proj", "durable", *args],
        cwd=REPO,
        env={**os.environ, **cluster_env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_migrate_and_show_from_the_command_line(
    tmp_path: Path, make_cluster: Callable[..., Cluster]
) -> None:
    store = f"sqlite:///{tmp_path}/cli.sqlite3"
    env = {
        "DURABLE_TEST_BROKER": f"sqla+sqlite:///{tmp_path}/broker.sqlite3",
        "DURABLE_TEST_STORE": store,
        "DURABLE_TEST_PREFIX": "cli_",
        "DURABLE_TEST_QUEUE": "cli",
    }
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
        [sys.executable, "-m", "examples.orders.demo"],
        cwd=tmp_path,
        # steps of 0.3 s instead of the demo's 1 s: the same story, faster
        env={**os.environ, "PYTHONPATH": str(REPO), "ORDERS_STEP_SECONDS": "0.3"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    effects = (tmp_path / "demo-run" / "side-effects.log").read_text().splitlines()

    def count(prefix: str) -> int:
        return sum(line.startswith(prefix) for line in effects)

    assert count("charge_card 4242424242424242") == 2  # two orders, one charge each
    assert count("charge_card 4000000000000119") == 3  # two timeouts, then retried
    assert count("charge_card 5555555555554444") == 1  # dead-lettered, requeued
    assert count("send_confirmation grace@example.com") == 5  # 2 + 2 attempts, then 1
    assert count("refund") == 1
    assert "Completed calls were not re-run" in result.stdout


def test_the_batch_enqueue_example_runs_its_orders_once(tmp_path: Path) -> None:
    """examples/orders/enqueue.py (the compose example's producer): three orders in one
    enqueue_many, run by a real worker on the embedded default."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "ORDERS_DIR": str(tmp_path)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "examples.orders.app", "worker", "-c", "1"],
        cwd=tmp_path,
        env=env,
        stdout=(tmp_path / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        result = subprocess.run(
            [sys.executable, "-m", "examples.orders.enqueue", "3"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    log = (tmp_path / "worker.log").read_text()
    assert result.returncode == 0, result.stdout + result.stderr + log
    assert "enqueued 3 order(s) in one batch" in result.stdout
    effects = (tmp_path / "side-effects.log").read_text().splitlines()
    assert sum(line.startswith("charge_card 4242424242424242") for line in effects) == 1
    assert sum(line.startswith("charge_card 5555555555554444") for line in effects) == 1


def test_the_shipping_example_runs_on_one_worker_process(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "examples.shipping.demo"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    effects = (tmp_path / "shipping-run" / "side-effects.log").read_text().splitlines()
    assert sorted(effects) == [
        "cancel_order B-2",
        "charge_card A-1",
        "charge_card B-2",
        "charge_card C-3",
        "print_label box-1",
        "print_label box-2",
        "print_label box-3",
        "print_label crate-1",
    ]
    assert "waiting for child job(s)" in result.stdout
    assert "waiting for a message on 'approval'" in result.stdout


def test_dead_letter_queue_from_the_command_line(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster("sqlite", "sqlite")
    cluster.worker()
    env = {
        "DURABLE_TEST_BROKER": cluster.broker,
        "DURABLE_TEST_STORE": cluster.store_url,
        "DURABLE_TEST_PREFIX": cluster.prefix,
        "DURABLE_TEST_QUEUE": cluster.queue,
        "DURABLE_TEST_EFFECTS": str(cluster.effects),
    }
    first, second = (cluster.app.tasks["proj.to_dead_letter"].delay().id for _ in range(2))
    for job_id in (first, second):
        assert cluster.wait_finished(job_id).state is JobState.DEAD

    listed = _celery(env, "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    assert first in listed.stdout and second in listed.stdout
    assert "CallError" in listed.stdout
    as_json = json.loads(
        _celery(env, "dlq", "list", "--task", "proj.to_dead_letter", "--json").stdout
    )
    assert sorted(letter["id"] for letter in as_json) == sorted([first, second])
    assert {letter["failures"] for letter in as_json} == {2}
    assert _celery(env, "dlq", "list", "--task", "proj.other").stdout.strip() == "no dead letters"

    shown = _celery(env, "dlq", "show", first)
    assert shown.returncode == 0, shown.stderr
    assert "ConnectionError: gate closed" in shown.stdout
    assert shown.stdout.count("  execution ") == 2  # both failed executions
    assert _celery(env, "dlq", "show", "nope").returncode == 2

    (cluster.effects / "gate-open").touch()
    requeued = _celery(env, "dlq", "requeue", first, "nope")
    assert requeued.returncode == 2  # one id was not a dead letter
    assert f"requeued {first}" in requeued.stdout and "nope" in requeued.stderr
    assert cluster.wait_finished(first).state is JobState.SUCCEEDED
    assert cluster.count("d-a") == 2  # once per job: the requeued one replayed it

    assert _celery(env, "dlq", "purge").returncode == 2  # says what to purge
    kept = subprocess.run(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.integration.proj",
            "durable",
            "dlq",
            "purge",
            "--all",
        ],
        cwd=REPO,
        input="n\n",
        capture_output=True,
        text=True,
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert kept.returncode == 1 and cluster.job(second) is not None
    purged = _celery(env, "dlq", "purge", "--all", "--yes")
    assert purged.returncode == 0 and "deleted 1 dead letter(s)" in purged.stdout
    assert cluster.job(second) is None and cluster.job(first) is not None


def test_the_legacy_project_after_moving_one_task(tmp_path: Path) -> None:
    """examples/legacy_project/after.py on a real worker: the durable task and the
    untouched legacy tasks run side by side."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "LEGACY_BROKER": f"sqla+sqlite:///{tmp_path}/broker.sqlite3",
        "LEGACY_STORE": f"sqlite:///{tmp_path}/store.sqlite3",
        "LEGACY_RESULTS": f"db+sqlite:///{tmp_path}/results.sqlite3",
    }
    module = "examples.legacy_project.after"
    migrate = subprocess.run(
        [sys.executable, "-m", "celery", "-A", module, "durable", "migrate"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert migrate.returncode == 0, migrate.stderr
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            module,
            "worker",
            "-c",
            "1",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        script = (
            "import time\n"
            f"from {module} import durable, fulfil, report\n"
            "job = fulfil.delay(7, 30).id\n"
            "legacy = report.delay()\n"
            "deadline = time.time() + 90\n"
            "while durable.get_job(job).state != 'succeeded' and time.time() < deadline:\n"
            "    time.sleep(0.2)\n"
            "view = durable.get_job(job)\n"
            "print(view.state, view.result, [c.name.rsplit('.', 1)[1] for c in view.calls])\n"
            "print(legacy.get(timeout=60), legacy.state)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        durable_line, legacy_line = result.stdout.strip().splitlines()
        assert durable_line == "succeeded shipped 7 (receipt-7-30) ['charge', 'reserve', 'ship']"
        assert legacy_line == "report SUCCESS"  # the untouched task ran, as plain Celery
    finally:
        os.killpg(worker.pid, 9)
        worker.wait()


def test_cli_masks_the_database_password(tmp_path: Path) -> None:
    env = {
        "DURABLE_TEST_BROKER": f"sqla+sqlite:///{tmp_path}/broker.sqlite3",
        "DURABLE_TEST_STORE": "postgresql+psycopg://postgres:s3cret@127.0.0.1:1/none",
        "DURABLE_TEST_PREFIX": "pw_",
        "DURABLE_TEST_QUEUE": "pw",
    }
    for args in (("migrate",), ("migrate", "--dry-run")):
        result = _celery(env, *args)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "cannot" in result.stderr and "127.0.0.1:1/none" in result.stderr
        assert "s3cret" not in result.stdout + result.stderr


def test_schedules_from_the_command_line(tmp_path: Path) -> None:
    env = {
        "DURABLE_TEST_BROKER": f"sqla+sqlite:///{tmp_path}/broker.sqlite3",
        "DURABLE_TEST_STORE": f"sqlite:///{tmp_path}/store.sqlite3",
        "DURABLE_TEST_PREFIX": "sch_",
        "DURABLE_TEST_QUEUE": "sch",
    }
    assert _celery(env, "migrate").returncode == 0
    assert _celery(env, "schedules", "list").stdout.strip() == "no schedules"
    added = _celery(
        env,
        "schedules",
        "add",
        "nightly",
        "proj.step",
        "--cron",
        "30 2 * * *",
        "--timezone",
        "America/New_York",
        "--args",
        '["n", 1]',
        "--unique",
    )
    assert added.returncode == 0, added.stderr
    assert "added nightly" in added.stdout
    assert (
        _celery(env, "schedules", "add", "nightly", "proj.step", "--every", "5").returncode == 3
    )  # exists
    bad = _celery(env, "schedules", "add", "x", "proj.step", "--cron", "99 * * * *")
    assert bad.returncode == 2 and "invalid cron expression" in bad.stderr
    listed = json.loads(_celery(env, "schedules", "list", "--json").stdout)
    assert [(s["name"], s["timezone"], s["unique"]) for s in listed] == [
        ("nightly", "America/New_York", True)
    ]
    assert "cron 30 2 * * * America/New_York" in _celery(env, "schedules", "list").stdout
    assert "paused nightly" in _celery(env, "schedules", "pause", "nightly").stdout
    assert (
        json.loads(_celery(env, "schedules", "show", "nightly", "--json").stdout)["schedule"][
            "next_run_at"
        ]
        is None
    )
    assert _celery(env, "schedules", "resume", "nightly").returncode == 0
    triggered = _celery(env, "schedules", "trigger", "nightly")
    assert triggered.returncode == 0 and "triggered nightly (job " in triggered.stdout
    shown = _celery(env, "schedules", "show", "nightly")
    assert "fired" in shown.stdout and "active" in shown.stdout
    assert _celery(env, "schedules", "remove", "nightly").returncode == 0
    assert _celery(env, "schedules", "remove", "nightly").returncode == 2


def test_bad_input_on_the_command_line_is_one_line_and_an_exit_code(tmp_path: Path) -> None:
    env = {
        "DURABLE_TEST_BROKER": f"sqla+sqlite:///{tmp_path}/broker.sqlite3",
        "DURABLE_TEST_STORE": f"sqlite:///{tmp_path}/store.sqlite3",
        "DURABLE_TEST_PREFIX": "bad_",
        "DURABLE_TEST_QUEUE": "bad",
    }
    assert _celery(env, "migrate").returncode == 0
    for args, code, message in (
        (
            ("events", "--since", "yesterday", "--no-follow"),
            1,
            "is neither an event's cursor nor an ISO time",
        ),
        (("jobs", "show", "j" * 300), 1, "job id is 300 characters long"),
        (("jobs", "send", "j1", "t" * 256, "1"), 1, "topic is 256 characters long"),
        (("jobs", "cancel", "x" * 200), 1, "at most 191 are allowed"),
        (("schedules", "show", "nope"), 2, "no schedule named 'nope'"),
        (("dlq", "show", "y" * 200), 1, "job id is 200 characters long"),
        (("dlq", "show", "y" * 150), 2, "no dead letter has id"),  # a derived id fits
    ):
        result = _celery(env, *args)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # no traceback


def test_pause_and_resume_a_queue_from_the_command_line(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster("sqlite", "sqlite")
    env = {
        "DURABLE_TEST_BROKER": cluster.broker,
        "DURABLE_TEST_STORE": cluster.store_url,
        "DURABLE_TEST_PREFIX": cluster.prefix,
        "DURABLE_TEST_QUEUE": cluster.queue,
        "DURABLE_TEST_EFFECTS": str(cluster.effects),
    }
    paused = _celery(env, "queues", "pause", cluster.queue)
    assert paused.returncode == 0, paused.stderr
    assert f"queue {cluster.queue} paused" in paused.stdout
    assert _celery(env, "queues", "pause", "proj.pausable", "--task").returncode == 0

    cluster.wait_ready(cluster.worker())
    job_id = cluster.durable.enqueue(cluster.app.tasks["proj.pausable"], 7).id
    wait_for(lambda: (j := cluster.job(job_id)) is not None and j.held == "paused", 30, "hold")
    listed = _celery(env, "queues", "list")
    assert listed.returncode == 0, listed.stderr
    [row] = [line.split() for line in listed.stdout.splitlines() if line.startswith(cluster.queue)]
    assert row[:3] == [cluster.queue, "paused", "1"]  # one pending job
    assert "task proj.pausable paused since" in listed.stdout

    resumed = _celery(env, "queues", "resume", cluster.queue)
    assert resumed.returncode == 0 and "0 held job(s) published" in resumed.stdout  # task
    resumed = _celery(env, "queues", "resume", "proj.pausable", "--task")
    assert resumed.returncode == 0 and "1 held job(s) published" in resumed.stdout
    assert cluster.wait_finished(job_id).state is JobState.SUCCEEDED
    as_json = json.loads(_celery(env, "queues", "list", "--json").stdout)
    assert as_json["paused_tasks"] == []
    not_paused = _celery(env, "queues", "resume", cluster.queue)
    assert not_paused.returncode == 3 and "is not paused" in not_paused.stderr


def test_the_flow_control_example_runs(tmp_path: Path) -> None:
    """examples/flow on the embedded default: per-customer syncs one at a time and in
    order, a paused task's jobs sent after resume, twenty debounced edits run once."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "FLOW_DIR": str(tmp_path / "run")}
    (tmp_path / "run").mkdir()
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "examples.flow.app", "worker", "-c", "4"],
        cwd=tmp_path,
        env=env,
        stdout=(tmp_path / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        result = subprocess.run(
            [sys.executable, "-m", "examples.flow.run"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=170,
        )
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "17 jobs for 36 enqueues" in result.stdout
    timeline = [
        line.split() for line in (tmp_path / "run" / "timeline.log").read_text().splitlines()
    ]
    assert [line[1:] for line in timeline if line[1] == "reindex"] == [
        ["reindex", "profile", "7", "at", "version", "19"]
    ]
    assert sorted(line[2] for line in timeline if line[1] == "sms") == [
        f"+4420700900{n:02d}" for n in range(10)
    ]
    for customer in "ab":
        events = [(line[3], line[4]) for line in timeline if line[1:3] == ["sync", customer]]
        assert events == [(f"#{n}", phase) for n in range(3) for phase in ("start", "end")]
