"""The order workflow from the original design, as a Celery project.

Legacy tasks (plain ``@app.task``) do the work; one durable task strings them together.
Run a worker with ``celery -A examples.orders.app worker``.

Configuration comes from environment variables so the demo can point it anywhere; the
defaults are the embedded ones: a SQLite store and the SQLite broker, no services.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from celery import Celery

from celery_durable import CallError, Durable, call, current_call_id

HERE = Path(os.environ.get("ORDERS_DIR", "demo-run"))
STEP_SECONDS = float(os.environ.get("ORDERS_STEP_SECONDS", "0"))

app = Celery("orders", broker=os.environ.get("ORDERS_BROKER",
                                             f"sqla+sqlite:///{HERE}/broker.sqlite3"))
app.conf.update(
    durable_database_url=os.environ.get("ORDERS_STORE", f"sqlite:///{HERE}/store.sqlite3"),
    durable_lease_seconds=3,  # short, so the demo recovers quickly (default 30)
    durable_sweep_interval=1,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)
durable = Durable(app)

STOCK = {"book": 5, "lamp": 0}


def side_effect(what: str) -> None:
    """Append to a log file, so the demo counts real side effects across processes."""
    with open(HERE / "side-effects.log", "a") as log:
        # current_call_id() is stable across re-runs: an idempotency key for real APIs.
        log.write(f"{what}  (idempotency key {current_call_id()})\n")
    time.sleep(STEP_SECONDS)


@app.task
def charge_card(payment: dict) -> str:
    side_effect(f"charge_card {payment['card']} {payment['amount']}")
    return f"receipt-{payment['card'][-4:]}-{payment['amount']}"


@app.task
def reserve_inventory(items: list[str]) -> list[str]:
    side_effect(f"reserve_inventory {items}")
    missing = [item for item in items if STOCK.get(item, 0) <= 0]
    if missing:
        raise ValueError(f"out of stock: {', '.join(missing)}")
    return items


@app.task
def refund(receipt: str) -> str:
    side_effect(f"refund {receipt}")
    return f"refunded {receipt}"


@app.task
def send_confirmation(email: str) -> str:
    side_effect(f"send_confirmation {email}")
    return f"sent to {email}"


@durable.task
def process_order(order: dict) -> dict:
    receipt = call(charge_card, order["payment"])
    try:
        call(reserve_inventory, order["items"])
    except CallError as exc:
        call(refund, receipt)
        return {"status": "refunded", "receipt": receipt, "reason": exc.error_message}
    call(send_confirmation, order["email"])
    return {"status": "confirmed", "receipt": receipt}
