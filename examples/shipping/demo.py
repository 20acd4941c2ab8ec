"""Dispatched calls, a durable sleep and gather, on one worker with one process.

    python -m examples.shipping.demo

Runs on the embedded default (SQLite store, SQLite broker): no services needed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from examples.orders.demo import finished, stop, wait

RUN_DIR = Path("shipping-run").resolve()


def main() -> int:
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    RUN_DIR.mkdir()
    os.environ.update(SHIPPING_DIR=str(RUN_DIR))
    from examples.shipping.app import durable, ship_order

    durable.migrate()
    log = open(RUN_DIR / "worker.log", "wb")  # noqa: SIM115 - the worker owns it
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "examples.shipping.app",
            "worker",
            "-Q",
            "celery,payments,labels",
            "-c",
            "1",
            "--loglevel=INFO",
        ],
        env=os.environ.copy(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    print("one worker, one process, consuming the celery, payments and labels queues\n")

    shipped = ship_order.delay("A-1", 30, ["box-1", "box-2", "box-3"]).id
    wait(lambda: durable.get_job(shipped).state == "suspended", "ship_order to suspend")
    print("ship_order dispatched charge_card to the payments queue and gave its slot back:")
    print(durable.get_job(shipped).timeline(), "\n")
    wait(lambda: finished(durable, shipped), "ship_order to finish")
    print("charged, slept 2 s (held in SQL), printed 3 labels in parallel:")
    print(durable.get_job(shipped).timeline(), "\n")

    declined = ship_order.delay("B-2", 0, ["box-9"]).id
    wait(lambda: finished(durable, declined), "the declined order to finish")
    print("the charge failed on the payments queue: CallError in the body, compensation:")
    print(durable.get_job(declined).timeline(), "\n")
    big = ship_order.delay("C-3", 500, ["crate-1"]).id
    wait(lambda: durable.get_job(big).state == "suspended", "the big order to wait")
    print("a big order waits for a person's approval (no worker, no broker message):")
    print(durable.get_job(big).timeline(), "\n")
    durable.send(big, "approval", {"ok": True, "by": "grace"})  # from a web app, say
    wait(lambda: finished(durable, big), "the approved order to finish")
    print("approved with durable.send(job_id, 'approval', ...): it continued")
    print(durable.get_job(big).timeline(), "\n")
    stop(worker)

    view, failed = durable.get_job(shipped), durable.get_job(declined)
    effects = (RUN_DIR / "side-effects.log").read_text().splitlines()
    ok = (
        view.result
        == {
            "status": "shipped",
            "receipt": "receipt-A-1",
            "labels": ["label-box-1", "label-box-2", "label-box-3"],
        }
        and failed.result["status"] == "cancelled"
        and durable.get_job(big).result["status"] == "shipped"
        and sorted(effects)
        == sorted(
            [
                "charge_card A-1",
                "print_label box-1",
                "print_label box-2",
                "print_label box-3",
                "charge_card B-2",
                "cancel_order B-2",
                "charge_card C-3",
                "print_label crate-1",
            ]
        )
    )
    if not ok:
        print(f"UNEXPECTED: {view.result} {failed.result} {effects}")
        return 1
    print(
        "Each step ran once, on its own queue, and no worker slot was held while\n"
        "ship_order waited (with one process, a result.get() would have deadlocked)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
