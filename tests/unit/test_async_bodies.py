"""``async def`` durable bodies on the in-memory store: awaited calls, concurrent calls
whose positions follow program order, branches, replay, durable sleep, and the mistakes
(a call never awaited). Each ``deliver`` is one Celery delivery run in this process; the
same under real workers and SIGKILL is in tests/integration/test_async_bodies.py."""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any

import pytest
from celery.exceptions import Ignore

from celery_durable import call, gather, sleep
from celery_durable.store.records import CallState, JobState
from tests.unit.conftest import Crash, Env, make_env


@pytest.fixture
def aenv() -> Env:
    env = make_env(call_retries=0, job_retries=0)
    env.crash_on = set()  # type: ignore[attr-defined]
    _callees(env)
    _bodies(env)
    return env


def _callees(env: Env) -> None:
    b_done = threading.Event()
    crash_once: set[str] = set()

    @env.app.task(name="a.step", shared=False)
    def step(name: str, value: int = 0) -> int:
        if name == "a-after-b" and not b_done.wait(10):  # runs only if b runs beside it
            raise TimeoutError("b never ran concurrently")
        if name in env.crash_on and name not in crash_once:  # type: ignore[attr-defined]
            crash_once.add(name)
            raise Crash(name)
        env.effects.append(name)
        if name == "b":
            b_done.set()
        return value + 1

    @env.app.task(name="a.async_step", shared=False)
    async def async_step(name: str, value: int = 0) -> int:
        await asyncio.sleep(0)
        env.effects.append(name)
        return value + 10


def _bodies(env: Env) -> None:
    step, async_step = env.app.tasks["a.step"], env.app.tasks["a.async_step"]

    @env.durable.task(name="a.concurrent", shared=False)
    async def concurrent() -> list[int]:
        return list(
            await asyncio.gather(call(step, "a-after-b", 1), call(step, "b", 2), call(step, "c", 3))
        )

    @env.durable.task(name="a.mixed", shared=False)
    async def mixed(x: int) -> list[int]:
        first = await call(step, "sync", x)
        second = await call(async_step, "async", first)
        await sleep(30)
        return [first, second, await call("a.step", "after-sleep", second)]

    async def branch(tag: str, x: int) -> int:
        r = await call(step, f"{tag}-1", x)
        return int(await call(step, f"{tag}-2", r))

    @env.durable.task(name="a.branches", shared=False)
    async def branches() -> list[int]:
        return list(await asyncio.gather(branch("x", 1), branch("y", 10)))

    @env.durable.task(name="a.task_group", shared=False)
    async def task_group() -> list[int]:
        async with asyncio.TaskGroup() as tg:
            one = tg.create_task(call(step, "tg-1", 1))
            two = tg.create_task(call(async_step, "tg-2", 2))
        return [one.result(), two.result()]

    @env.durable.task(name="a.forgot_await", shared=False)
    async def forgot_await() -> str:
        call(step, "never", 0)
        return "done"

    @env.durable.task(name="a.gather_in_process", shared=False)
    async def gather_in_process() -> Any:
        return await gather(step.s("x"))

    @env.durable.task(name="a.sync_calls_async", shared=False)
    def sync_calls_async() -> int:
        return int(call(async_step, "from-sync", 5))


def _positions(env: Env, job_id: str) -> list[tuple[str, int, str, CallState]]:
    return [
        (c.job_id, c.seq, c.name, c.state)
        for c in sorted(env.storage.load_history(job_id), key=lambda c: (c.job_id, c.seq))
    ]


def test_concurrent_calls_run_together_and_take_positions_in_program_order(aenv: Env) -> None:
    assert aenv.deliver("a.concurrent", "j1") == [2, 3, 4]
    assert aenv.effects.index("b") < aenv.effects.index("a-after-b")  # b finished first
    assert [(seq, name) for _, seq, name, _ in _positions(aenv, "j1")] == [
        (1, "a.step"),
        (2, "a.step"),
        (3, "a.step"),
    ]
    digests = [c.args_digest for c in sorted(aenv.storage.load_history("j1"), key=lambda c: c.seq)]
    assert len(set(digests)) == 3  # each position holds its own call, not the first to finish


def test_a_crash_mid_gather_reruns_only_the_call_in_flight(aenv: Env) -> None:
    aenv.crash_on.add("c")  # type: ignore[attr-defined]
    with pytest.raises(Crash):
        aenv.deliver("a.concurrent", "j2")
    recorded = {seq for _, seq, _, state in _positions(aenv, "j2") if state is CallState.SUCCEEDED}
    assert recorded == {1, 2}  # the siblings finished and were recorded before the crash
    aenv.effects.clear()
    aenv.clock.advance(60)  # past its lease: the next delivery may claim the job
    assert aenv.deliver("a.concurrent", "j2") == [2, 3, 4]
    assert aenv.effects == ["c"]  # completed calls replayed; only the one in flight ran


def test_an_async_body_mixes_sync_and_async_calls_and_a_durable_sleep(aenv: Env) -> None:
    with pytest.raises(Ignore):  # the sleep suspends the job
        aenv.deliver("a.mixed", "j3", 1)
    assert aenv.storage.get_job("j3").state is JobState.SUSPENDED  # type: ignore[union-attr]
    aenv.clock.advance(30)
    assert aenv.deliver("a.mixed", "j3", 1) == [2, 12, 13]
    assert aenv.effects == ["sync", "async", "after-sleep"]  # nothing ran twice


def test_branches_keep_their_positions_whatever_finished_first(aenv: Env) -> None:
    assert aenv.deliver("a.branches", "j4") == [3, 12]
    scopes = {(scope, seq, name) for scope, seq, name, _ in _positions(aenv, "j4")}
    assert scopes == {("j4.1", 1, "a.step"), ("j4.1", 2, "a.step")} | {
        ("j4.2", 1, "a.step"),
        ("j4.2", 2, "a.step"),
    }
    aenv.effects.clear()
    aenv.storage.requeue_job("j4", [JobState.SUCCEEDED], [], aenv.clock.now, aenv.clock.now)
    assert aenv.deliver("a.branches", "j4") == [3, 12]  # replayed from its branches
    assert aenv.effects == []


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.TaskGroup is new in 3.11")
def test_task_groups_run_calls_on_the_loop_and_in_threads(aenv: Env) -> None:
    assert aenv.deliver("a.task_group", "j5") == [2, 12]
    assert sorted(aenv.effects) == ["tg-1", "tg-2"]


def test_a_call_never_awaited_fails_the_job_with_a_clear_error(aenv: Env) -> None:
    with pytest.raises(TypeError, match=r"never awaited .*write `await call\(\.\.\.\)`"):
        aenv.deliver("a.forgot_await", "j6")
    job = aenv.storage.get_job("j6")
    assert job is not None and job.state is JobState.FAILED
    assert "never" not in aenv.effects  # it never ran


def test_gather_in_an_async_body_takes_dispatched_calls_only(aenv: Env) -> None:
    with pytest.raises(TypeError, match=r"asyncio\.gather"):
        aenv.deliver("a.gather_in_process", "j7")


def test_a_sync_body_may_call_an_async_task(aenv: Env) -> None:
    assert aenv.deliver("a.sync_calls_async", "j8") == 15
    assert aenv.effects == ["from-sync"]
