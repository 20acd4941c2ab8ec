"""The example Django project: the Celery app loads with Django, as Celery's docs do."""

from .celery import app as celery_app

__all__ = ["celery_app"]
