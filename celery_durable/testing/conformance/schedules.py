"""Storage conformance, part 4: schedules and their runs."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from ...store.protocol import Storage, latest_schedule_runs
from ...store.records import JobState, Lease, ScheduleRecord, ScheduleRun
from .core import T0, new_job


def schedule_record(
    name: str = "s1", *, next_run: int | None = 60, version: int = 1
) -> ScheduleRecord:
    return ScheduleRecord(
        name=name,
        task="tests.flow",
        args="[1]",
        kwargs="{}",
        options='{"queue": "q"}',
        spec='{"every": 60.0}',
        timezone="Europe/Paris",
        unique=True,
        missed="once",
        catchup_limit=10,
        enabled=True,
        paused=False,
        source="code",
        next_run_at=None if next_run is None else T0 + timedelta(seconds=next_run),
        last_run_at=None,
        last_job_id=None,
        version=version,
        created_at=T0,
        updated_at=T0,
    )


def run(name: str = "s1", at: int = 60, job_id: str | None = "job-1") -> ScheduleRun:
    return ScheduleRun(
        schedule=name,
        nominal_at=T0 + timedelta(seconds=at),
        job_id=job_id,
        outcome="fired" if job_id else "skipped",
        reason=None,
        recorded_at=T0 + timedelta(seconds=at, milliseconds=5),
        lateness=0.005,
        published=job_id is None,
    )


class ScheduleConformance:
    """Needs a ``storage`` fixture whose store also implements ScheduleStorage."""

    def test_put_get_list_delete(self, storage: Storage) -> None:
        store: Any = storage
        assert store.get_schedule("s1") is None
        assert store.put_schedule(schedule_record(), None)
        assert not store.put_schedule(schedule_record(), None)
        store.put_schedule(schedule_record("s0", next_run=None), None)
        changed = replace(schedule_record(), paused=True, next_run_at=None, version=2)
        assert not store.put_schedule(changed, 5)
        assert store.put_schedule(changed, 1)
        assert not store.put_schedule(changed, 1)
        assert store.get_schedule("s1") == changed
        assert [s.name for s in store.list_schedules()] == ["s0", "s1"]
        assert store.delete_schedule("s1") and not store.delete_schedule("s1")

    def test_due_schedules_are_read_oldest_first(self, storage: Storage) -> None:
        store: Any = storage
        for name, at in (("late", 10), ("early", 5), ("future", 100), ("paused", None)):
            store.put_schedule(schedule_record(name, next_run=at), None)
        due = store.due_schedules(T0 + timedelta(seconds=50), 10)
        assert [s.name for s in due] == ["early", "late"]
        assert len(store.due_schedules(T0 + timedelta(seconds=50), 1)) == 1

    def test_fire_is_a_compare_and_set_with_unique_runs(self, storage: Storage) -> None:
        store: Any = storage
        seen = schedule_record()
        store.put_schedule(seen, None)
        job = new_job("job-1")
        nxt = T0 + timedelta(seconds=120)
        assert store.fire_schedule(seen, [run()], nxt, "job-1", [job], T0)
        # a second beat with the same view of the schedule writes nothing
        assert not store.fire_schedule(seen, [run()], nxt, "job-1", [job], T0)
        fired = store.get_schedule("s1")
        assert (fired.version, fired.next_run_at, fired.last_run_at, fired.last_job_id) == (
            2,
            nxt,
            T0 + timedelta(seconds=60),
            "job-1",
        )
        created = storage.get_job("job-1")
        assert created is not None and created.state is JobState.PENDING
        # a run row for the same nominal tick cannot be written twice, whatever the version
        assert not store.fire_schedule(fired, [run()], nxt, None, [], T0)
        assert store.get_schedule("s1").version == 2

    def test_runs_history_and_republishing(self, storage: Storage) -> None:
        store: Any = storage
        seen = schedule_record()
        store.put_schedule(seen, None)
        runs = [run(at=60, job_id=None), run(at=120, job_id="job-2")]
        assert store.fire_schedule(seen, runs, None, "job-2", [], T0)
        history = store.schedule_runs("s1", 10)
        assert [(r.nominal_at, r.outcome, r.published) for r in history] == [
            (T0 + timedelta(seconds=120), "fired", False),
            (T0 + timedelta(seconds=60), "skipped", True),
        ]
        assert history[0].lateness == 0.005
        late = T0 + timedelta(seconds=200)
        [waiting] = store.unpublished_runs(late, 10)
        assert waiting.job_id == "job-2"
        assert store.unpublished_runs(T0, 10) == []
        store.mark_published("s1", waiting.nominal_at)
        assert store.unpublished_runs(late, 10) == []

    def test_each_schedules_latest_run_and_last_run_at(self, storage: Storage) -> None:
        """``latest_schedule_runs`` is optional (without it the dashboard asks per
        schedule): a store without it is checked on the runs that fallback reads."""
        store: Any = storage

        def latest_runs() -> dict[str, ScheduleRun]:
            return latest_schedule_runs(store)

        for name in ("s1", "s2", "never"):
            store.put_schedule(schedule_record(name), None)
        assert latest_runs() == {}
        s1 = schedule_record("s1")
        assert store.fire_schedule(s1, [run("s1", 60), run("s1", 180, None)], None, None, [], T0)
        s2 = schedule_record("s2")
        assert store.fire_schedule(s2, [run("s2", 120, "job-2")], None, "job-2", [], T0)
        latest = latest_runs()
        assert sorted(latest) == ["s1", "s2"]  # a schedule that never ran has none
        assert (latest["s1"].nominal_at, latest["s1"].outcome) == (
            T0 + timedelta(seconds=180),
            "skipped",
        )
        assert (latest["s2"].nominal_at, latest["s2"].job_id) == (
            T0 + timedelta(seconds=120),
            "job-2",
        )
        assert latest["s1"] == store.schedule_runs("s1", 1)[0]
        # an overdue tick recorded after a newer one (a trigger) leaves the last run be
        s1 = store.get_schedule("s1")
        assert store.fire_schedule(s1, [run("s1", 120, "job-late")], None, "job-late", [], T0)
        after = store.get_schedule("s1")
        assert (after.last_run_at, after.last_job_id) == (s1.last_run_at, s1.last_job_id)
        assert latest_runs()["s1"].nominal_at == T0 + timedelta(seconds=180)

    def test_unique_key_is_held_while_the_job_is_active(self, storage: Storage) -> None:
        first = replace(new_job("job-1"), unique_key="nightly")
        assert storage.create_unique_job(first) == "job-1"
        assert storage.create_unique_job(replace(new_job("job-2"), unique_key="nightly")) == "job-1"
        assert storage.get_job("job-2") is None
        assert storage.create_unique_job(first) == "job-1"  # the same enqueue again
        assert storage.create_unique_job(replace(new_job("job-3"), unique_key="other")) == "job-3"
        claim = storage.claim_job("job-1", "w1", T0, T0 + timedelta(seconds=30))
        assert claim.outcome.value == "claimed"
        assert (
            storage.create_unique_job(replace(new_job("job-4"), unique_key="nightly")) == "job-1"
        )  # running still holds it
        storage.finish_job(Lease("job-1", "w1"), JobState.SUCCEEDED, "1", None, T0)
        assert (
            storage.create_unique_job(replace(new_job("job-5"), unique_key="nightly")) == "job-5"
        )  # finished: the key is free again

    def test_not_before_is_stored_with_the_job(self, storage: Storage) -> None:
        due = T0 + timedelta(hours=1)
        storage.create_job(replace(new_job(), not_before=due, deliver_by=due))
        job = storage.get_job("job-1")
        assert job is not None and (job.not_before, job.lease_expires_at) == (due, due)
        early = storage.claim_job("job-1", "w1", T0, T0 + timedelta(seconds=30))
        assert early.outcome.value == "early"
