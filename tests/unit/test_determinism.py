"""Determinism modes, recorded values, patched() and replay testing, on the in-memory
store. The same against real workers: tests/integration/test_determinism.py."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

import pytest

from celery_durable import (
    ConfigurationError,
    NonDeterministicError,
    call,
    now,
    patched,
    randint,
    random,
    uuid4,
)
from celery_durable.testing import replay
from tests.unit.conftest import Crash, Env, make_env


def _env(version: dict[str, Any], **settings: Any) -> Env:
    """u.flow's code depends on version["v"], as if a deploy happened in between."""
    env = make_env(job_retries=3, **settings)

    @env.app.task(name="u.a", shared=False)
    def a(x: str) -> str:
        env.effects.append(f"a:{x}")
        if x == version.get("crash_on"):
            raise Crash()
        return x

    @env.app.task(name="u.b", shared=False)
    def b(x: str) -> str:
        env.effects.append(f"b:{x}")
        return x

    @env.durable.task(name="u.flow", shared=False, determinism=version.get("mode"))
    def flow() -> list[str]:
        if version["v"] == 1:
            return [call(a, "1"), call(b, "2"), call(a, "3")]
        if version["v"] == "order":
            return [call(b, "2"), call(a, "1"), call(a, "3")]
        if version["v"] == "argument":
            return [call(a, "1-changed"), call(b, "2"), call(a, "3")]
        raise AssertionError(version)

    return env


def _crash_then(env: Env, version: dict[str, Any], change: str) -> None:
    version["crash_on"] = "3"
    with pytest.raises(Crash):
        env.deliver("u.flow", "j1")
    version.update(v=change, crash_on=None)
    env.clock.advance(31)


def test_explicit_mode_fails_a_changed_call_order_without_retrying() -> None:
    version: dict[str, Any] = {"v": 1}
    env = _env(version)
    _crash_then(env, version, "order")
    with pytest.raises(NonDeterministicError) as raised:
        env.deliver("u.flow", "j1")
    message = str(raised.value)
    assert "job j1 (u.flow) is not deterministic (explicit mode)" in message
    assert "at call #1 the code now asks for 'u.b' but the history holds 'u.a'" in message
    assert "patched(" in message and "best_effort" in message
    view = env.durable.get_job("j1")
    assert (view.state, view.failures) == ("failed", 1)  # job_retries=3 not used


def test_explicit_mode_tolerates_changed_arguments_but_strict_does_not() -> None:
    version: dict[str, Any] = {"v": 1}
    env = _env(version)
    _crash_then(env, version, "argument")
    assert env.deliver("u.flow", "j1") == ["1", "2", "3"]  # the recorded result

    version = {"v": 1, "mode": "strict"}
    env = _env(version)
    _crash_then(env, version, "argument")
    with pytest.raises(NonDeterministicError, match=r"strict mode.*'u\.a' with arguments"):
        env.deliver("u.flow", "j1")


def test_best_effort_drops_the_diverged_history_and_continues_live(
    caplog: pytest.LogCaptureFixture,
) -> None:
    version: dict[str, Any] = {"v": 1, "mode": "best_effort"}
    env = _env(version)
    _crash_then(env, version, "order")
    with caplog.at_level(logging.WARNING):
        assert env.deliver("u.flow", "j1") == ["2", "1", "3"]
    assert "diverged from its history at #1" in caplog.text
    assert env.effects == ["a:1", "b:2", "a:3", "b:2", "a:1", "a:3"]
    assert [c.name for c in env.durable.get_job("j1").calls] == ["u.b", "u.a", "u.a"]


def test_recorded_values_are_identical_on_replay() -> None:
    env = make_env()
    seen: list[Any] = []

    @env.app.task(name="u.boom", shared=False)
    def boom() -> None:
        if len(seen) == 1:
            raise Crash()

    @env.durable.task(name="u.values", shared=False)
    def values() -> list[Any]:
        got = [now(), uuid4(), random(), randint(1, 10**9)]
        seen.append(got)
        call(boom)
        return [str(v) for v in got]

    with pytest.raises(Crash):
        env.deliver("u.values", "j1")
    env.clock.advance(31)
    result = env.deliver("u.values", "j1")
    assert seen[0] == seen[1]
    assert isinstance(seen[0][0], datetime) and isinstance(seen[0][1], uuid.UUID)
    assert result == [str(v) for v in seen[0]]
    # outside a durable task they are the stdlib's
    assert now().tzinfo is not None and now() <= now()
    assert uuid4() != uuid4() and 0 <= random() < 1 and 3 <= randint(3, 4) <= 4


def test_patched_keeps_old_jobs_on_the_old_path() -> None:
    env = make_env()
    deploy = {"v": 1, "crash": True}

    @env.app.task(name="u.step", shared=False)
    def step(x: str) -> str:
        env.effects.append(x)
        if x == "c" and deploy["crash"]:
            raise Crash()
        return x

    @env.durable.task(name="u.flow", shared=False)
    def flow() -> list[str]:
        out = [call(step, "a")]
        if deploy["v"] == 2 and patched("new-b"):
            out.append(call(step, "b-new"))
        else:
            out.append(call(step, "b-old"))
        out.append(call(step, "c"))
        return out

    with pytest.raises(Crash):  # started on version 1, killed in call 3
        env.deliver("u.flow", "old")
    deploy.update(v=2, crash=False)
    env.clock.advance(31)
    assert env.deliver("u.flow", "old") == ["a", "b-old", "c"]
    assert env.deliver("u.flow", "new") == ["a", "b-new", "c"]
    assert [c.name for c in env.durable.get_job("new").calls] == [
        "u.step",
        "celery_durable.patched:new-b",
        "u.step",
        "u.step",
    ]
    assert env.deliver("u.flow", "new") == ["a", "b-new", "c"]  # its replay agrees


def test_replay_helper_reports_a_divergence_without_running_anything() -> None:
    version: dict[str, Any] = {"v": 1}
    env = _env(version)
    assert env.deliver("u.flow", "j1") == ["1", "2", "3"]
    history = env.durable.export_history("j1")
    effects = list(env.effects)

    same = replay(env.app.tasks["u.flow"], history)
    assert (same.ok, same.finished, same.replayed, same.result) == (True, True, 3, ["1", "2", "3"])
    version["v"] = "order"
    changed = replay(env.app.tasks["u.flow"], history)
    assert not changed.ok and changed.divergence is not None
    assert changed.divergence.seq == 1 and changed.divergence.recorded == "u.a"
    version["v"] = "argument"
    assert replay(env.app.tasks["u.flow"], history).ok  # explicit mode allows it
    assert not replay(env.app.tasks["u.flow"], history, determinism="strict").ok
    assert env.effects == effects  # nothing was called

    version.update(v=1, crash_on="3")
    with pytest.raises(Crash):
        env.deliver("u.flow", "j2")
    partial = replay(env.app.tasks["u.flow"], env.durable.export_history("j2"))
    assert (partial.ok, partial.finished, partial.ended_at) == (True, False, "#3 u.a")


def test_bad_determinism_options() -> None:
    env = make_env()
    with pytest.raises(ConfigurationError, match=r"determinism of task 'u\.x' must be one of"):

        @env.durable.task(name="u.x", shared=False, determinism="sometimes")
        def x() -> None: ...

    with pytest.raises(ConfigurationError, match="durable_determinism must be one of"):
        make_env(determinism="loose")
    env.durable.set_determinism("strict")
    assert env.durable.determinism.value == "strict"
    with pytest.raises(ValueError, match="change id"):
        patched("")
