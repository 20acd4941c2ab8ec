"""Enqueue work under flow control and print what the workers did (the worker runs
separately: ``celery -A examples.flow.app worker -c 4``)."""

from __future__ import annotations

import time
from collections.abc import Callable

from examples.flow.app import HERE, durable, reindex, send_sms, sync_customer


def wait(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def finished(ids: list[str]) -> bool:
    return all(durable.get_job(i).state == "succeeded" for i in ids)


def main() -> None:
    HERE.mkdir(exist_ok=True)
    durable.migrate()
    durable.pause(task=send_sms.name)  # nothing is sent until we say so
    ids = [
        durable.enqueue(sync_customer, {"customer": c, "n": n}).id for n in range(3) for c in "ab"
    ]
    ids += [durable.enqueue(send_sms, f"+4420700900{n:02d}").id for n in range(10)]
    for version in range(20):  # twenty edits in a row: one reindex, with the last version
        ids.append(durable.enqueue(reindex, 7, version, debounce=("reindex:7", 1)).id)
    wait(lambda: finished(ids[:6]), "the customer syncs")
    print(f"paused: {[p.name for p in durable.paused()]}; resuming")
    durable.resume(task=send_sms.name)
    wait(lambda: finished(ids), "every job")
    print((HERE / "timeline.log").read_text(), end="")
    print(f"{len(set(ids))} jobs for {len(ids)} enqueues")


if __name__ == "__main__":
    main()
