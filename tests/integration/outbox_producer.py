"""A producer that enqueues in a transaction and is SIGKILLed right after its commit,
before it can publish: `python -m tests.integration.outbox_producer ORDER`.

Its own after_commit listener is registered before the enqueue's, so it fires first and
kills the process between the database's commit and the message's publish."""

from __future__ import annotations

import os
import signal
import sys

from sqlalchemy import create_engine, event
from sqlalchemy.orm import Session

from celery_durable import Durable
from tests.integration.proj import create_app


def main(order: str) -> None:
    app = create_app(
        broker=os.environ["DURABLE_TEST_BROKER"],
        store=os.environ["DURABLE_TEST_STORE"],
        prefix=os.environ["DURABLE_TEST_PREFIX"],
        queue=os.environ["DURABLE_TEST_QUEUE"],
    )
    durable = Durable.of(app)
    engine = create_engine(os.environ["DURABLE_TEST_STORE"])
    with Session(engine) as session:
        event.listen(session, "after_commit", lambda _: os.kill(os.getpid(), signal.SIGKILL))
        with session.begin():
            job = durable.enqueue(app.tasks["proj.ordered"], order, connection=session)
            print(job.id, flush=True)
    print("published", flush=True)  # never reached


if __name__ == "__main__":
    main(sys.argv[1])
