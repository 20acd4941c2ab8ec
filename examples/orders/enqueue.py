"""Enqueue a few orders in one batch and print each one's call timeline when it finishes.

    python -m examples.orders.enqueue [N]

Uses the same ORDERS_BROKER / ORDERS_STORE settings as the worker (docker-compose.yml
sets them to Redis and PostgreSQL).
"""

from __future__ import annotations

import sys
import time

from examples.orders.app import FLAKY_CARD, durable, process_order


def main(count: int = 3) -> int:
    durable.migrate()
    orders = [
        {
            "payment": {"card": "4242424242424242", "amount": 30},
            "items": ["book"],
            "email": "ada@example.com",
        },
        {
            "payment": {"card": FLAKY_CARD, "amount": 12},
            "items": ["book"],
            "email": "grace@example.com",
        },
        {
            "payment": {"card": "5555555555554444", "amount": 7},
            "items": ["lamp"],
            "email": "alan@example.com",
        },
    ]
    # one write for the whole batch (checked first: a bad order enqueues nothing)
    results = durable.enqueue_many([process_order.s(orders[n % len(orders)]) for n in range(count)])
    ids = [result.id for result in results]
    print(f"enqueued {len(ids)} order(s) in one batch", flush=True)
    deadline = time.monotonic() + 300
    pending = set(ids)
    while pending and time.monotonic() < deadline:
        for job_id in sorted(pending):
            view = durable.get_job(job_id)
            if view.state in ("succeeded", "failed", "dead", "cancelled"):
                print(view.timeline(), "\n", flush=True)
                pending.discard(job_id)
        time.sleep(0.5)
    return 1 if pending else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
