"""Flow control on the embedded default (SQLite store and broker, no services):
``celery -A examples.flow.app worker -c 4``, then ``python -m examples.flow.run``.

- ``sync_customer``: one job per customer at a time, on every worker;
- ``send_sms``: at most 5 a second for the whole deployment;
- ``reindex``: debounced by its caller.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery import Celery

from celery_durable import Durable

HERE = Path(os.environ.get("FLOW_DIR", "flow-run"))

app = Celery("flow", broker=f"sqla+sqlite:///{HERE}/broker.sqlite3")
app.conf.update(
    durable_database_url=f"sqlite:///{HERE}/store.sqlite3",
    durable_sweep_interval=1,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)
durable = Durable(app)


def log(line: str) -> None:
    with open(HERE / "timeline.log", "a") as f:
        f.write(f"{time.time():.3f} {line}\n")


@durable.task(concurrency=1, concurrency_key=lambda order: order["customer"])
def sync_customer(order: dict[str, Any]) -> None:
    log(f"sync {order['customer']} #{order['n']} start")
    time.sleep(0.3)
    log(f"sync {order['customer']} #{order['n']} end")


@durable.task(rate_limit="5/s")
def send_sms(number: str) -> None:
    log(f"sms {number}")


@durable.task
def reindex(profile: int, version: int) -> None:
    log(f"reindex profile {profile} at version {version}")
