"""Calls that suspend: a shipping workflow whose steps run on other queues.

``charge_card`` runs on the ``payments`` queue and ``print_label`` on ``labels`` (in a
real deployment, on workers of their own). ``ship_order`` dispatches them and waits
for them without holding its worker: ``python -m examples.shipping.demo`` runs it with
ONE worker process for all three queues, where a ``result.get()`` would deadlock.

Embedded default: a SQLite store and the SQLite broker, no services.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from celery import Celery

from celery_durable import CallError, Durable, NoRetry, call, gather, receive, sleep

HERE = Path(os.environ.get("SHIPPING_DIR", "shipping-run"))

app = Celery(
    "shipping", broker=os.environ.get("SHIPPING_BROKER", f"sqla+sqlite:///{HERE}/broker.sqlite3")
)
app.conf.update(
    durable_database_url=os.environ.get("SHIPPING_STORE", f"sqlite:///{HERE}/store.sqlite3"),
    durable_sweep_interval=1,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)
durable = Durable(app)


def side_effect(what: str) -> None:
    with open(HERE / "side-effects.log", "a") as log:
        log.write(f"{what}\n")


@app.task
def charge_card(order_id: str, amount: int) -> str:
    side_effect(f"charge_card {order_id}")
    if amount <= 0:  # a retry cannot fix this one: fail the call at once
        raise NoRetry(ValueError(f"nothing to charge for {order_id}"))
    return f"receipt-{order_id}"


@app.task
def print_label(parcel: str) -> str:
    side_effect(f"print_label {parcel}")
    return f"label-{parcel}"


@app.task
def cancel_order(order_id: str) -> str:
    side_effect(f"cancel_order {order_id}")
    return f"cancelled {order_id}"


@durable.task
def ship_order(order_id: str, amount: int, parcels: list[str]) -> dict:
    if amount > 100:  # a person approves big orders: durable.send(job_id, "approval", ...)
        approval = receive("approval", timeout=timedelta(days=2))
        if not approval or not approval.get("ok"):
            return {"status": "rejected", "by": approval and approval.get("by")}
    try:  # runs on the payments queue; this job waits without a worker slot
        receipt = call(charge_card.s(order_id, amount).set(queue="payments"))
    except CallError as exc:
        call(cancel_order, order_id)  # compensation, in-process
        return {"status": "cancelled", "reason": exc.error_message}
    sleep(2)  # wait for the courier: a durable timer, not time.sleep
    labels = gather(*[print_label.s(p).set(queue="labels") for p in parcels])
    return {"status": "shipped", "receipt": receipt, "labels": labels}
