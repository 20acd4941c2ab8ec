"""A FastAPI app that enqueues an async durable workflow and shows its timeline, with the
async client API (``aenqueue``, ``aget_job``, ``asend``, ``aresult``).

On the embedded default (SQLite store and broker, no services)::

    pip install 'celery-durable[web]' fastapi
    celery -A examples.fastapi_orders.app worker -c 2      # one terminal
    uvicorn examples.fastapi_orders.app:api --port 8000    # another
    curl -X POST localhost:8000/orders -H 'content-type: application/json' \\
         -d '{"id": "o-1", "items": ["book", "lamp"]}'
    curl localhost:8000/orders/<job_id>
    curl -X POST localhost:8000/orders/<job_id>/approval -d '{"ok": true}' \\
         -H 'content-type: application/json'
    curl 'localhost:8000/orders/<job_id>/result?timeout=30'
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Any

from celery import Celery
from fastapi import Body, FastAPI, HTTPException, Query

from celery_durable import Durable, JobFailedError, JobNotFound, JobStateError, call, receive

HERE = Path(os.environ.get("ORDERS_API_DIR", "orders-api-run"))
HERE.mkdir(exist_ok=True)

app = Celery("orders_api", broker=f"sqla+sqlite:///{HERE}/broker.sqlite3")
app.conf.update(
    durable_database_url=f"sqlite:///{HERE}/store.sqlite3",
    broker_connection_retry_on_startup=True,
)
durable = Durable(app)


@app.task
def reserve(item: str) -> str:
    return f"reserved {item}"


@app.task
async def price(item: str) -> int:
    await asyncio.sleep(0.1)  # an async API call, on the worker's event loop
    return len(item) * 100


@durable.task
async def place_order(order: dict[str, Any]) -> dict[str, Any]:
    items = order["items"]
    # every item at once: positions follow the program, not who finished first
    reserved = await asyncio.gather(*(call(reserve, item) for item in items))
    prices = await asyncio.gather(*(call(price, item) for item in items))
    approval = await receive("approval", timeout=3600)  # no worker held while waiting
    return {"order": order["id"], "reserved": reserved, "total": sum(prices), "approval": approval}


def create_api(durable: Durable, workflow: Any) -> FastAPI:
    api = FastAPI(title="orders")

    @api.post("/orders")
    async def place(order: dict[str, Any]) -> dict[str, str]:
        job = await durable.aenqueue(workflow, order)
        return {"job_id": job.id}

    @api.get("/orders/{job_id}")
    async def show(job_id: str) -> dict[str, Any]:
        try:
            job = await durable.aget_job(job_id)
        except JobNotFound:
            raise HTTPException(404, f"no order job {job_id}") from None
        timeline = [{"position": c.position, "call": c.name, "state": c.state} for c in job.calls]
        return {"state": job.state, "waiting_for": job.waiting_topic, "timeline": timeline}

    @api.post("/orders/{job_id}/{topic}")
    async def send(
        job_id: str, topic: str, payload: Annotated[Any, Body()] = None
    ) -> dict[str, bool]:
        try:
            return {"sent": await durable.asend(job_id, topic, payload)}
        except JobNotFound:
            raise HTTPException(404, f"no order job {job_id}") from None
        except JobStateError as exc:  # it has finished: nobody would read the message
            raise HTTPException(409, str(exc)) from None

    @api.get("/orders/{job_id}/result")
    async def result(
        job_id: str, timeout: Annotated[float, Query(ge=0, le=300)] = 30
    ) -> dict[str, Any]:
        try:
            return {"result": await durable.aresult(job_id, timeout=timeout)}
        except JobNotFound:
            raise HTTPException(404, f"no order job {job_id}") from None
        except TimeoutError as exc:
            raise HTTPException(504, str(exc)) from None
        except JobFailedError as exc:
            raise HTTPException(409, str(exc)) from None

    return api


api = create_api(durable, place_order)
