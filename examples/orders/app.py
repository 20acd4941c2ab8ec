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

from celery_durable import (
    CallError,
    Durable,
    ExponentialBackoff,
    NoRetry,
    call,
    current_call_id,
    daily,
)

HERE = Path(os.environ.get("ORDERS_DIR", "demo-run"))
STEP_SECONDS = float(os.environ.get("ORDERS_STEP_SECONDS", "0"))

app = Celery(
    "orders", broker=os.environ.get("ORDERS_BROKER", f"sqla+sqlite:///{HERE}/broker.sqlite3")
)
app.conf.update(
    durable_database_url=os.environ.get("ORDERS_STORE", f"sqlite:///{HERE}/store.sqlite3"),
    durable_lease_seconds=3,  # short, so the demo recovers quickly (default 30)
    durable_sweep_interval=1,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)
durable = Durable(app)

STOCK = {"book": 5, "lamp": 0}
FLAKY_CARD = "4000000000000119"  # the gateway times out on its first two charges


def side_effect(what: str) -> None:
    """Append to a log file, so the demo counts real side effects across processes."""
    with open(HERE / "side-effects.log", "a") as log:
        # current_call_id() is stable across re-runs: an idempotency key for real APIs.
        log.write(f"{what}  (idempotency key {current_call_id()})\n")
    time.sleep(STEP_SECONDS)


def attempts_logged(prefix: str) -> int:
    path = HERE / "side-effects.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return sum(line.startswith(prefix) for line in lines)


@app.task
def charge_card(payment: dict) -> str:
    what = f"charge_card {payment['card']} {payment['amount']}"
    side_effect(what)
    if payment["card"] == FLAKY_CARD and attempts_logged(what) <= 2:
        raise TimeoutError("payment gateway timed out")  # retried: see process_order
    return f"receipt-{payment['card'][-4:]}-{payment['amount']}"


@app.task
def reserve_inventory(items: list[str]) -> list[str]:
    side_effect(f"reserve_inventory {items}")
    missing = [item for item in items if STOCK.get(item, 0) <= 0]
    if missing:
        # Retrying cannot make stock appear: fail the call now, no retries.
        raise NoRetry(ValueError(f"out of stock: {', '.join(missing)}"))
    return items


@app.task
def refund(receipt: str) -> str:
    side_effect(f"refund {receipt}")
    return f"refunded {receipt}"


@app.task
def send_confirmation(email: str) -> str:
    side_effect(f"send_confirmation {email}")
    bounced = HERE / "bounced"
    if bounced.exists() and email in bounced.read_text().split():
        raise ConnectionError(f"mail server refused {email}")
    return f"sent to {email}"


# A job whose body still fails runs once more, then waits in the dead-letter queue.
@durable.task(retries=1, backoff=1, on_exhausted="dead_letter")
def process_order(order: dict) -> dict:
    # A flaky gateway: up to 3 more attempts, 0.5 s, 1 s, 2 s apart. Nothing before
    # this call runs again, and no worker slot is held while waiting.
    receipt = call(charge_card, order["payment"], retries=3, backoff=ExponentialBackoff(0.5, 5))
    try:
        call(reserve_inventory, order["items"])
    except CallError as exc:
        call(refund, receipt)
        return {"status": "refunded", "receipt": receipt, "reason": exc.error_message}
    call(send_confirmation, order["email"], retries=1, backoff=0.5)
    return {"status": "confirmed", "receipt": receipt}


@app.task
def count_orders() -> int:
    log = HERE / "side-effects.log"
    return sum(
        line.startswith("charge_card")
        for line in (log.read_text().splitlines() if log.exists() else [])
    )


@durable.task
def nightly_report() -> dict:
    return {"charges": call(count_orders)}


# Run by `celery -A examples.orders.app beat -S durable` (docker-compose.yml has one):
# once a night at 02:30 London time, skipped while the previous report still runs.
durable.schedule(
    "nightly-report", nightly_report, daily(2, 30, timezone="Europe/London"), unique=True
)
