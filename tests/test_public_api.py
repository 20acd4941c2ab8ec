"""What users were told they can import, run and configure stays where it was: the
public names, the import paths the docs use, the entry points Celery finds, the settings."""

from __future__ import annotations

import importlib
from dataclasses import fields
from importlib.metadata import entry_points

import celery_durable
from celery_durable.settings import Settings

PUBLIC = {
    # the facade, the task class, and what a body uses
    "Durable",
    "DurableTask",
    "call",
    "gather",
    "sleep",
    "sleep_until",
    "receive",
    "current_call_id",
    "current_job_id",
    "now",
    "uuid4",
    "random",
    "randint",
    "patched",
    "Determinism",
    # errors
    "DurableError",
    "CallError",
    "Cancelled",
    "ConfigurationError",
    "JobNotFound",
    "JobStateError",
    "JobFailedError",
    "UnawaitedCallError",
    "LeaseLost",
    "NonDeterministicError",
    "OutsideDurableTaskError",
    "ScheduleNotFound",
    "SerializationError",
    "StorageInterrupted",
    "StorageUnavailable",
    "UnknownTaskError",
    "ValidationError",
    # the retry layer
    "Backoff",
    "ConstantBackoff",
    "ExponentialBackoff",
    "ExponentialBackoffWithJitter",
    "NoRetry",
    "RetryAfter",
    # operations and inspection
    "CancelOutcome",
    "CallView",
    "ExecutionError",
    "JobSummary",
    "JobView",
    "WorkerView",
    "Event",
    "JobState",
    # scheduling
    "every",
    "daily",
    "weekly",
    "cron",
    # observability
    "Middleware",
    "CallInfo",
    "JobInfo",
    "Outcome",
    "LoggingMiddleware",
    "PrometheusMetrics",
    "QueueDepthCollector",
    "OTelTracing",
    # stores
    "Storage",
    "MemoryStorage",
    "SQLStorage",
}

# Import paths the docs and examples use, beyond the package root.
DOCUMENTED_PATHS = {
    "celery_durable.testing": ["StorageConformance", "replay", "ReplayReport"],
    "celery_durable.testing.pytest_plugin": ["durable_worker", "wait_for_job", "wait_until"],
    "celery_durable.store": ["MemoryStorage", "SQLStorage", "Storage", "JobState"],
    "celery_durable.store.sql": ["SQLStorage"],
    "celery_durable.beat": ["DatabaseScheduler"],
    "celery_durable.cli": ["durable"],
    "celery_durable.contrib.django": ["DjangoTransaction", "join_transactions"],
    "celery_durable.engine.outbox": ["Transaction"],
    "celery_durable.web": ["create_app", "Operator", "Auth"],
}


def test_all_is_pinned() -> None:
    assert set(celery_durable.__all__) == PUBLIC
    assert len(celery_durable.__all__) == len(PUBLIC)  # no name twice
    for name in PUBLIC:
        assert getattr(celery_durable, name) is not None


def test_documented_import_paths_work() -> None:
    for module, names in DOCUMENTED_PATHS.items():
        imported = importlib.import_module(module)
        for name in names:
            assert hasattr(imported, name), f"{module}.{name}"


def test_entry_points_celery_finds() -> None:
    commands = {e.name: e.value for e in entry_points(group="celery.commands")}
    schedulers = {e.name: e.value for e in entry_points(group="celery.beat_schedulers")}
    assert commands["durable"] == "celery_durable.cli:durable"
    assert schedulers["durable"] == "celery_durable.beat:DatabaseScheduler"
    for value in (commands["durable"], schedulers["durable"]):
        module, _, name = value.partition(":")
        assert hasattr(importlib.import_module(module), name)


def test_settings_are_pinned() -> None:
    assert {f.name for f in fields(Settings)} == {
        "database_url",
        "table_prefix",
        "lease_seconds",
        "sweep_interval",
        "delivery_timeout",
        "wait_check_interval",
        "max_recoveries",
        "recovery",
        "call_retries",
        "call_backoff",
        "job_retries",
        "job_backoff",
        "on_exhausted",
        "cancel_check_interval",
        "retention",
        "retention_interval",
        "shutdown_grace",
        "synchronous_commit",
        "relaxed_checkpoints",
        "metrics_port",
        "determinism",
        "beat_max_interval",
        "storage_wait",
        "max_countdown",
        "outbox_relay_after",
        "async_threads",
        "web_read_only",
        "web_username",
        "web_password",
        "web_token",
        "web_secret",
    }
