"""docker-compose.yml cannot run here (no Docker engine), so this checks what can be
checked without one: it parses, and what it runs and sets exists in the package."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from pathlib import Path
from typing import Any

import tomllib
import yaml

from celery_durable.cli import durable as durable_cli
from celery_durable.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def _compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def test_services_have_healthchecks_and_wait_for_them() -> None:
    services = _compose()["services"]
    for name in ("postgres", "redis", "rabbitmq"):
        assert services[name]["healthcheck"]["test"], name
    for name in ("migrate", "worker", "beat", "shop"):
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == deps["redis"]["condition"] == "service_healthy"
    for name in ("worker", "beat", "shop"):
        assert (
            services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        )


def test_commands_use_real_modules_and_subcommands() -> None:
    services = _compose()["services"]
    commands = {name: s["command"] for name, s in services.items() if "command" in s}
    assert set(commands) == {"migrate", "worker", "beat", "shop"}
    celery_commands = {
        ep.name: ep for ep in importlib.metadata.entry_points(group="celery.commands")
    }
    assert "durable" in celery_commands
    for name, command in commands.items():
        if command[0] == "celery":
            assert command[1:3] == ["-A", "examples.orders.app"], name
            importlib.import_module(command[2])
            if command[3] == "durable":
                assert command[4] in durable_cli.commands, name
            elif command[3] == "beat":
                scheduler = command[command.index("-S") + 1]
                schedulers = importlib.metadata.entry_points(group="celery.beat_schedulers")
                assert scheduler in {ep.name for ep in schedulers}, name
            else:
                assert command[3] == "worker", name
        else:
            assert command[:3] == ["python", "-m", "examples.orders.enqueue"], name
            importlib.import_module(command[2])


def test_environment_and_image_match_the_example_and_the_package() -> None:
    compose = _compose()
    worker = compose["services"]["worker"]
    app_source = (REPO / "examples/orders/app.py").read_text()
    for variable in worker["environment"]:
        assert f'"{variable}"' in app_source, f"{variable} is not read by the example"
    dockerfile = (REPO / "Dockerfile").read_text()
    extras = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    [wanted] = re.findall(r'pip install --no-cache-dir "\.\[([a-z,]+)\]"', dockerfile)
    assert set(wanted.split(",")) <= extras
    # Docker must wait longer than the durable grace period before it kills a worker
    grace = worker["stop_grace_period"]
    assert int(grace.rstrip("s")) > (Settings().shutdown_grace or 0)
