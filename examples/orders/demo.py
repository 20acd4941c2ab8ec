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
    os.environ.update(ORDERS_DIR=str(RUN_DIR), ORDERS_STEP_SECONDS="1")
    from examples.orders.app import durable, process_order

    durable.migrate()
    print(f"store and broker: SQLite files in {RUN_DIR}\n")

    order = {"payment": {"card": "4242424242424242", "amount": 30},
             "items": ["book"], "email": "ada@example.com"}
    job_id = process_order.delay(order).id
    print(f"enqueued process_order as job {job_id}")

    first = start_worker("worker-1")
    wait(lambda: len(durable.get_job(job_id).calls) >= 2 if exists(durable, job_id) else False,
         "charge_card and reserve_inventory to be checkpointed")
    print("calls 1-2 are checkpointed; send_confirmation is running. SIGKILL worker-1 now.")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    print(durable.get_job(job_id).timeline(), "\n")

    second = start_worker("worker-2")
    print("worker-2 started; its recovery sweeper republishes the job once the dead "
          "worker's lease expires (the SQLite broker never redelivers on its own)")
    wait(lambda: durable.get_job(job_id).state in ("succeeded", "failed"), "the job to finish")
    view = durable.get_job(job_id)
    print(view.timeline(), "\n")

    out_of_stock = {**order, "items": ["lamp"]}
    refund_id = process_order.delay(out_of_stock).id
    wait(lambda: durable.get_job(refund_id).state in ("succeeded", "failed"),
         "the out-of-stock order to finish")
    print(durable.get_job(refund_id).timeline(), "\n")
    stop(second)

    effects = (RUN_DIR / "side-effects.log").read_text().splitlines()
    print("side effects, as appended to side-effects.log by the tasks:")
    for line in effects:
        print(f"  {line}")
    charges = sum(1 for line in effects if line.startswith("charge_card"))
    ok = view.state == "succeeded" and charges == 2
    if not ok:
        print("\nUNEXPECTED: see the timeline above")
        return 1
    print("\nCompleted calls were not re-run: each order charged the card exactly once.\n"
          "send_confirmation was in flight when worker-1 died, so it ran again: a call is\n"
          "at-least-once until its checkpoint commits. Its idempotency key (the same both\n"
          "times) lets a real email or payment API drop the duplicate.")
    return 0


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
        [sys.executable, "-m", "celery", "-A", "examples.orders.app", "worker", "-c", "1",
         "-n", f"{name}@%h", "--loglevel=INFO"],
        env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


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
