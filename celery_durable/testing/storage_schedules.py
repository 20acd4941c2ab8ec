"""Storage conformance, part 4: schedules and their runs."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from ..store.base import JobState, Storage
from ..store.schedule_base import ScheduleRecord, ScheduleRun
from .storage_core import T0, new_job


def schedule_record(name: str = "s1", *, next_run: int | None = 60,
                    version: int = 1) -> ScheduleRecord:
    return ScheduleRecord(
        name=name, task="tests.flow", args="[1]", kwargs="{}", options='{"queue": "q"}',
        spec='{"every": 60.0}', timezone="Europe/Paris", unique=True, missed="once",
        catchup_limit=10, enabled=True, paused=False, source="code",
        next_run_at=None if next_run is None else T0 + timedelta(seconds=next_run),
        last_run_at=None, last_job_id=None, version=version, created_at=T0, updated_at=T0)


def run(name: str = "s1", at: int = 60, job_id: str | None = "job-1") -> ScheduleRun:
    return ScheduleRun(schedule=name, nominal_at=T0 + timedelta(seconds=at), job_id=job_id,
                       outcome="fired" if job_id else "skipped", reason=None,
                       recorded_at=T0 + timedelta(seconds=at, milliseconds=5),
                       lateness=0.005, published=job_id is None)


class ScheduleConformance:
    """Needs a ``storage`` fixture whose store also implements ScheduleStorage."""

    def test_put_get_list_delete(self, storage: Storage) -> None:
        store: object = storage
        assert store.get_schedule("s1") is None  # type: ignore[attr-defined]
        store.put_schedule(schedule_record())  # type: ignore[attr-defined]
        store.put_schedule(schedule_record("s0", next_run=None))  # type: ignore[attr-defined]
        changed = replace(schedule_record(), paused=True, next_run_at=None, version=2)
        store.put_schedule(changed)  # type: ignore[attr-defined]
        assert store.get_schedule("s1") == changed  # type: ignore[attr-defined]
        assert [s.name for s in store.list_schedules()] == ["s0", "s1"]  # type: ignore[attr-defined]
        assert store.delete_schedule("s1") and not store.delete_schedule("s1")  # type: ignore[attr-defined]

    def test_due_schedules_are_read_oldest_first(self, storage: Storage) -> None:
        store: object = storage
        for name, at in (("late", 10), ("early", 5), ("future", 100), ("paused", None)):
            store.put_schedule(schedule_record(name, next_run=at))  # type: ignore[attr-defined]
        due = store.due_schedules(T0 + timedelta(seconds=50), 10)  # type: ignore[attr-defined]
        assert [s.name for s in due] == ["early", "late"]
        assert len(store.due_schedules(T0 + timedelta(seconds=50), 1)) == 1  # type: ignore[attr-defined]

    def test_fire_is_a_compare_and_set_with_unique_runs(self, storage: Storage) -> None:
        store: object = storage
        seen = schedule_record()
        store.put_schedule(seen)  # type: ignore[attr-defined]
        job = new_job("job-1")
        nxt = T0 + timedelta(seconds=120)
        assert store.fire_schedule(seen, [run()], nxt, "job-1", [job], T0)  # type: ignore[attr-defined]
        # a second beat with the same view of the schedule writes nothing
        assert not store.fire_schedule(seen, [run()], nxt, "job-1", [job], T0)  # type: ignore[attr-defined]
        fired = store.get_schedule("s1")  # type: ignore[attr-defined]
        assert (fired.version, fired.next_run_at, fired.last_run_at, fired.last_job_id) == (
            2, nxt, T0 + timedelta(seconds=60), "job-1")
        created = storage.get_job("job-1")
        assert created is not None and created.state is JobState.PENDING
        # a run row for the same nominal tick cannot be written twice, whatever the version
        assert not store.fire_schedule(fired, [run()], nxt, None, [], T0)  # type: ignore[attr-defined]
        assert store.get_schedule("s1").version == 2  # type: ignore[attr-defined]

    def test_runs_history_and_republishing(self, storage: Storage) -> None:
        store: object = storage
        seen = schedule_record()
        store.put_schedule(seen)  # type: ignore[attr-defined]
        runs = [run(at=60, job_id=None), run(at=120, job_id="job-2")]
        assert store.fire_schedule(seen, runs, None, "job-2", [], T0)  # type: ignore[attr-defined]
        history = store.schedule_runs("s1", 10)  # type: ignore[attr-defined]
        assert [(r.nominal_at, r.outcome, r.published) for r in history] == [
            (T0 + timedelta(seconds=120), "fired", False),
            (T0 + timedelta(seconds=60), "skipped", True)]
        assert history[0].lateness == 0.005
        late = T0 + timedelta(seconds=200)
        [waiting] = store.unpublished_runs(late, 10)  # type: ignore[attr-defined]
        assert waiting.job_id == "job-2"
        assert store.unpublished_runs(T0, 10) == []  # type: ignore[attr-defined]
        store.mark_published("s1", waiting.nominal_at)  # type: ignore[attr-defined]
        assert store.unpublished_runs(late, 10) == []  # type: ignore[attr-defined]
