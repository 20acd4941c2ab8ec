"""`celery -A shop_project worker` and `celery -A shop_project durable ...`."""

from __future__ import annotations

import os

from celery import Celery

from celery_durable import Durable
from celery_durable.contrib.django import join_transactions

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop_project.settings")

app = Celery("shop_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
durable = Durable(app)
# An enqueue inside transaction.atomic() writes its row in that transaction and sends
# its message on commit: a rolled-back view never starts a job.
join_transactions(durable)
app.autodiscover_tasks()
