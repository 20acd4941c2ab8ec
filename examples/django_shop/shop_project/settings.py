"""Settings of the example shop. One database holds Django's tables and the durable
store's, so an order and the job that fulfils it commit together.

``SHOP_DATABASE_URL`` (default: a SQLite file here) names that database; ``SHOP_BROKER``
the broker (default: a SQLite file too, so it runs without services).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "example-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
INSTALLED_APPS = ["shop"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "shop_project.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_url = make_url(os.environ.get("SHOP_DATABASE_URL", f"sqlite:///{BASE_DIR / 'shop.sqlite3'}"))
if _url.get_backend_name() == "sqlite":
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _url.database}}
    _store = f"sqlite:///{_url.database}"
else:
    DATABASES = {
        "default": {
            "ENGINE": {
                "postgresql": "django.db.backends.postgresql",
                "mysql": "django.db.backends.mysql",
            }[_url.get_backend_name()],
            "NAME": _url.database,
            "USER": _url.username or "",
            "PASSWORD": _url.password or "",
            "HOST": _url.host or "",
            "PORT": str(_url.port or ""),
        }
    }
    _driver = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql"}
    _store = _url.set(drivername=_driver[_url.get_backend_name()]).render_as_string(
        hide_password=False
    )

# Celery reads everything below through the CELERY_ namespace (celery.py), the
# durable settings included: CELERY_DURABLE_DATABASE_URL is durable_database_url.
CELERY_BROKER_URL = os.environ.get("SHOP_BROKER", f"sqla+sqlite:///{BASE_DIR / 'broker.sqlite3'}")
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("SHOP_QUEUE", "shop")
CELERY_DURABLE_DATABASE_URL = _store
CELERY_DURABLE_TABLE_PREFIX = os.environ.get("SHOP_TABLE_PREFIX", "durable_")
CELERY_DURABLE_SWEEP_INTERVAL = 1.0
