"""The order workflow: a durable task whose calls are checkpointed (a crash between them
resumes where it stopped, and a charged order is never charged twice)."""

from __future__ import annotations

from celery import shared_task
from shop_project.celery import durable

from celery_durable import call
from shop.models import Order


@shared_task(name="shop.charge")
def charge(order_id: int) -> str:
    payment = f"pay-{order_id}"
    Order.objects.filter(id=order_id).update(status="paid", payment=payment)
    return payment


@shared_task(name="shop.ship")
def ship(order_id: int) -> str:
    Order.objects.filter(id=order_id).update(status="shipped")
    return f"parcel-{order_id}"


@durable.task(name="shop.fulfil")
def fulfil(order_id: int) -> dict[str, str]:
    # The order row is committed before this can run: the job's own row was written in
    # the view's transaction and its message sent on commit.
    payment = call(charge, order_id)
    parcel = call(ship, order_id)
    return {"payment": payment, "parcel": parcel}
