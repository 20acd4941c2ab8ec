"""The crash demo: a worker is SIGKILLed mid-workflow and another one finishes the job.

    python -m examples.orders.demo

Runs on the embedded default (SQLite store, SQLite broker): no services needed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

RUN_DIR = Path("demo-run").resolve()


def main() -> int:
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    RUN_DIR.mkdir()
    os.environ.update(ORDERS_DIR=str(RUN_DIR))
    os.environ.setdefault("ORDERS_STEP_SECONDS", "1")  # slow enough to watch
    from examples.orders.app import FLAKY_CARD, durable, process_order

    durable.migrate()
    print(f"store and broker: SQLite files in {RUN_DIR}\n")

    order = {
        "payment": {"card": "4242424242424242", "amount": 30},
        "items": ["book"],
        "email": "ada@example.com",
    }
    job_id = process_order.delay(order).id
    print(f"enqueued process_order as job {job_id}")

    first = start_worker("worker-1")
    wait(
        lambda: len(durable.get_job(job_id).calls) >= 2 if exists(durable, job_id) else False,
        "charge_card and reserve_inventory to be checkpointed",
    )
    print("calls 1-2 are checkpointed; send_confirmation is running. SIGKILL worker-1 now.")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    print(durable.get_job(job_id).timeline(), "\n")

    second = start_worker("worker-2")
    print(
        "worker-2 started; its recovery sweeper republishes the job once the dead "
        "worker's lease expires (the SQLite broker never redelivers on its own)"
    )
    wait(lambda: durable.get_job(job_id).state in ("succeeded", "failed"), "the job to finish")
    view = durable.get_job(job_id)
    print(view.timeline(), "\n")

    out_of_stock = {**order, "items": ["lamp"]}
    refund_id = process_order.delay(out_of_stock).id
    wait(lambda: finished(durable, refund_id), "the out-of-stock order to finish")
    print("out of stock (NoRetry): refunded at once")
    print(durable.get_job(refund_id).timeline(), "\n")

    flaky = {**order, "payment": {"card": FLAKY_CARD, "amount": 12}}
    flaky_id = process_order.delay(flaky).id
    wait(lambda: finished(durable, flaky_id), "the flaky-gateway order to finish")
    print("a flaky payment gateway: charge_card retried with backoff, nothing else re-run")
    print(durable.get_job(flaky_id).timeline(), "\n")

    (RUN_DIR / "bounced").write_text("grace@example.com\n")
    bounce = {
        **order,
        "payment": {"card": "5555555555554444", "amount": 7},
        "email": "grace@example.com",
    }
    dead_id = process_order.delay(bounce).id
    wait(lambda: finished(durable, dead_id), "the bouncing order to reach the dead letters")
    print("a confirmation that keeps bouncing: call retries, one job retry, dead letter")
    print(durable.dead_letter(dead_id).timeline(), "\n")
    (RUN_DIR / "bounced").unlink()
    durable.requeue(dead_id)
    wait(lambda: durable.get_job(dead_id).state == "succeeded", "the requeued order")
    print("mail server fixed, dead letter requeued: it resumes from its checkpoints")
    print(durable.get_job(dead_id).timeline(), "\n")
    stop(second)

    effects = (RUN_DIR / "side-effects.log").read_text().splitlines()
    print("side effects, as appended to side-effects.log by the tasks:")
    for line in effects:
        print(f"  {line}")

    def charges(card: str) -> int:
        return sum(1 for line in effects if line.startswith(f"charge_card {card}"))

    ok = (
        view.state == "succeeded"
        and charges(order["payment"]["card"]) == 2
        and charges(FLAKY_CARD) == 3
        and charges("5555555555554444") == 1
    )
    if not ok:
        print("\nUNEXPECTED: see the timelines above")
        return 1
    print(
        "\nCompleted calls were not re-run: each order charged its card exactly once\n"
        "(the flaky card's two timeouts were retried attempts, not new charges), even the\n"
        "one requeued from the dead-letter queue. send_confirmation was in flight when\n"
        "worker-1 died, so it ran again: a call is at-least-once until its checkpoint\n"
        "commits. Its idempotency key (the same both times) lets a real email or payment\n"
        "API drop the duplicate."
    )
    return 0


def finished(durable: object, job_id: str) -> bool:
    return durable.get_job(job_id).state in (  # type: ignore[attr-defined,no-any-return]
        "succeeded",
        "failed",
        "dead",
    )


def exists(durable: object, job_id: str) -> bool:
    from celery_durable import JobNotFound

    try:
        durable.get_job(job_id)  # type: ignore[attr-defined]
    except JobNotFound:
        return False
    return True


def start_worker(name: str) -> subprocess.Popen[bytes]:
    log = open(RUN_DIR / f"{name}.log", "wb")  # noqa: SIM115 - the worker owns it
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "examples.orders.app",
            "worker",
            "-c",
            "1",
            "-n",
            f"{name}@%h",
            "--loglevel=INFO",
        ],
        env=os.environ.copy(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(worker: subprocess.Popen[bytes]) -> None:
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)


def wait(predicate: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}; worker logs are in {RUN_DIR}")


if __name__ == "__main__":
    sys.exit(main())
