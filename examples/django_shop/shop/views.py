from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, JsonResponse

from shop.models import Order
from shop.tasks import fulfil


def place_order(request: HttpRequest) -> JsonResponse:
    """POST item=...: the order and its fulfilment job commit together, or neither."""
    item = request.POST["item"]
    with transaction.atomic():
        order = Order.objects.create(item=item)
        job = fulfil.delay(order.id)  # joins this transaction (join_transactions)
        if item == "out-of-stock":
            raise ValueError(f"{item}: nothing to sell")  # rolls back order and job
    return JsonResponse({"order": order.id, "job": job.id})
