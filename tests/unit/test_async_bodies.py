"""``async def`` durable bodies on the in-memory store: awaited calls, concurrent calls
whose positions follow program order, branches, replay, durable sleep, and the mistakes
(a call never awaited). Each ``deliver`` is one Celery delivery run in this process; the
same under real workers and SIGKILL is in tests/integration/test_async_bodies.py."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from celery.exceptions import Ignore, Retry

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
        if name == "slow":
            time.sleep(0.3)
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
    assert scopes == {
        ("j4", 1, "celery_durable.branch"),  # each branch takes a position when created
        ("j4", 2, "celery_durable.branch"),
        ("j4.1", 1, "a.step"),
        ("j4.1", 2, "a.step"),
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


def _register_more(env: Env) -> None:
    step = env.app.tasks["a.step"]

    @env.app.task(name="a.flaky", shared=False)
    def flaky(name: str) -> str:
        env.effects.append(name)
        if not env.flaky_ok:  # type: ignore[attr-defined]
            raise ConnectionError(f"{name}: down")
        return name

    async def branch(tag: str) -> int:
        return int(await call(step, tag, 0))

    @env.durable.task(name="a.task_then_calls", shared=False)
    async def task_then_calls() -> list[int]:
        started = asyncio.create_task(branch("t"))
        z = await call(step, "z", 0)
        w = await call(step, "w", 0)
        return [z, w, await started]

    @env.durable.task(name="a.swallowed_retry", shared=False, call_retries=2, call_backoff=5)
    async def swallowed_retry() -> Any:
        done = await asyncio.gather(call(flaky, "f"), call(step, "g", 0), return_exceptions=True)
        return [str(d) for d in done]

    @env.durable.task(name="a.swallowed_sleep", shared=False)
    async def swallowed_sleep() -> Any:
        async def nap() -> None:
            await sleep(30)

        return [str(r) for r in await asyncio.gather(nap(), return_exceptions=True)]

    @env.durable.task(name="a.group_retry", shared=False, call_retries=2, call_backoff=5)
    async def group_retry() -> Any:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(call(flaky, "f"))
        return "done"

    _mistakes(env)


def _mistakes(env: Env) -> None:
    step, async_step = env.app.tasks["a.step"], env.app.tasks["a.async_step"]
    flaky = env.app.tasks["a.flaky"]

    @env.durable.task(name="a.forgot_in_branch", shared=False)
    async def forgot_in_branch() -> Any:
        async def careless() -> None:
            call(step, "never", 0)

        await asyncio.gather(careless())
        return "done"

    @env.durable.task(name="a.beside_a_failure", shared=False, retries=1, backoff=1)
    async def beside_a_failure() -> Any:
        return await asyncio.gather(call(flaky, "bad"), call(step, "charge", 0))

    @env.durable.task(name="a.timed_out", shared=False)
    async def timed_out() -> Any:
        try:
            return await asyncio.wait_for(call(step, "slow", 0), 0.05)
        except TimeoutError:
            return await call(step, "fallback", 0)

    @env.durable.task(name="a.nested", shared=False)
    async def nested() -> int:
        return int(await call(env.app.tasks["a.sync_calls_async"]))

    @env.durable.task(name="a.mine", shared=False)
    async def mine() -> int:
        return int(await call(async_step, "mine", 1))


@pytest.fixture
def more(aenv: Env) -> Env:
    aenv.flaky_ok = False  # type: ignore[attr-defined]
    _register_more(aenv)
    return aenv


def test_a_task_the_body_creates_takes_its_position_when_created(more: Env) -> None:
    assert more.deliver("a.task_then_calls", "k1") == [1, 1, 1]
    more.effects.clear()
    more.storage.requeue_job("k1", [JobState.SUCCEEDED], [], more.clock.now, more.clock.now)
    assert more.deliver("a.task_then_calls", "k1") == [1, 1, 1]
    assert more.effects == []  # replayed: nothing ran again, nothing took another's place


def test_a_call_retry_is_not_swallowed_by_return_exceptions(more: Env) -> None:
    with pytest.raises(Retry):  # the call's retry, scheduled through Celery
        more.deliver("a.swallowed_retry", "k2")
    job = more.storage.get_job("k2")
    assert job is not None and job.state is JobState.RETRYING  # not SUCCEEDED
    states = {c.seq: c.state for c in more.storage.load_history("k2")}
    assert states == {1: CallState.RETRYING, 2: CallState.SUCCEEDED}  # the sibling finished


def test_a_sleep_in_a_branch_suspends_even_under_return_exceptions(more: Env) -> None:
    with pytest.raises(Ignore):
        more.deliver("a.swallowed_sleep", "k3")
    assert more.storage.get_job("k3").state is JobState.SUSPENDED  # type: ignore[union-attr]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.TaskGroup is new in 3.11")
def test_a_call_retry_inside_a_task_group_retries_the_job(more: Env) -> None:
    with pytest.raises(Retry):
        more.deliver("a.group_retry", "k4")
    assert more.storage.get_job("k4").state is JobState.RETRYING  # type: ignore[union-attr]


def test_a_call_never_awaited_in_a_branch_fails_the_job_for_good(more: Env) -> None:
    with pytest.raises(TypeError, match=r"never awaited \(call #1 'a\.step'\)"):
        more.deliver("a.forgot_in_branch", "k5")
    job = more.storage.get_job("k5")
    assert job is not None and job.state is JobState.FAILED and "never" not in more.effects


def test_a_job_retry_keeps_a_call_that_ran_beside_the_failure(more: Env) -> None:
    more.clock.tick = timedelta(milliseconds=1)  # stored times tell what ran beside what
    with pytest.raises(Retry):  # bad fails (no call retries): the job is retried
        more.deliver("a.beside_a_failure", "k6")
    assert more.storage.get_job("k6").state is JobState.RETRYING  # type: ignore[union-attr]
    more.flaky_ok = True  # type: ignore[attr-defined]
    more.clock.advance(5)
    assert more.deliver("a.beside_a_failure", "k6") == ["bad", 1]
    assert more.effects.count("charge") == 1  # it had finished: replayed, not run again


def test_a_timeout_around_a_call_fails_the_job_with_the_reason(more: Env) -> None:
    with pytest.raises(BaseException, match="cancelled by the body"):
        more.deliver("a.timed_out", "k7")
    job = more.storage.get_job("k7")
    assert job is not None and job.state is JobState.FAILED
    assert "fallback" not in more.effects


def test_nested_calls_do_not_wait_for_a_full_call_pool() -> None:
    env = make_env(call_retries=0, job_retries=0, async_threads=1)
    _callees(env)
    _bodies(env)
    env.crash_on = set()  # type: ignore[attr-defined]
    env.flaky_ok = True  # type: ignore[attr-defined]
    _register_more(env)
    # async body -> sync durable task (on the one call thread) -> async task
    assert env.deliver("a.nested", "k8") == 15


def test_replay_testing_runs_an_async_body(more: Env) -> None:
    from celery_durable.testing import replay

    assert more.deliver("a.mine", "k9") == 11
    report = replay(more.app.tasks["a.mine"], more.durable.export_history("k9"))
    assert report.ok and report.replayed == 1 and report.result == 11
