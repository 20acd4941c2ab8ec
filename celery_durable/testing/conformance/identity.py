"""Storage conformance, part 6: ids, keys and names compare byte for byte; the worker
heartbeats; the reported marker; the event stream's rows.

MySQL and MariaDB compare strings case- and accent-insensitively by default and ignore
trailing spaces: ``Order-X`` and ``order-X`` would be one job there. Every store must
keep values that differ only that way apart.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from ...store.protocol import ScheduleStorage, Storage
from ...store.records import JobFilter, JobState, WorkerRecord
from .core import LEASE, T0, call_record, claimed, new_job
from .schedules import schedule_record

# Pairs that a case-, accent- or pad-insensitive collation would take for one value.
LOOKALIKES = (("Order-X", "order-X"), ("café", "cafe"), ("key", "key "), ("ß", "ss"))


class IdentityConformance:
    """Needs a ``storage`` fixture."""

    def test_job_ids_that_differ_only_by_case_accent_or_space_are_distinct(
        self, storage: Storage
    ) -> None:
        for index, (first, second) in enumerate(LOOKALIKES):
            assert storage.create_job(new_job(first, args=f"[{index}, 1]"))
            assert storage.create_job(new_job(second, args=f"[{index}, 2]")), second
        for index, (first, second) in enumerate(LOOKALIKES):
            for job_id, n in ((first, 1), (second, 2)):
                job = storage.get_job(job_id)
                assert job is not None and (job.id, job.args) == (job_id, f"[{index}, {n}]")
        lease = claimed(storage, "Run-1")
        storage.record_call(call_record("Run-1", result='"upper"'), lease)
        other = claimed(storage, "run-1")
        storage.record_call(call_record("run-1", result='"lower"'), other)
        assert [c.result for c in storage.load_history("Run-1")] == ['"upper"']
        assert [c.result for c in storage.load_history("run-1")] == ['"lower"']

    def test_unique_keys_and_task_names_are_exact(self, storage: Storage) -> None:
        for index, (first, second) in enumerate(LOOKALIKES):
            upper = dataclasses.replace(new_job(f"a{index}"), unique_key=f"u-{first}")
            lower = dataclasses.replace(new_job(f"b{index}"), unique_key=f"u-{second}")
            assert storage.create_unique_job(upper) == f"a{index}"
            assert storage.create_unique_job(lower) == f"b{index}", second
        storage.create_job(dataclasses.replace(new_job("t1"), task="shop.Charge"))
        storage.create_job(dataclasses.replace(new_job("t2"), task="shop.charge"))
        assert [j.id for j in storage.list_jobs(JobFilter(task="shop.charge"))] == ["t2"]

    def test_schedule_names_and_message_keys_are_exact(self, storage: Storage) -> None:
        assert isinstance(storage, ScheduleStorage)
        for first, second in LOOKALIKES:
            assert storage.put_schedule(schedule_record(f"s-{first}"), None)
            assert storage.put_schedule(schedule_record(f"s-{second}"), None), second
        names = {r.name for r in storage.list_schedules()}
        assert names == {f"s-{v}" for pair in LOOKALIKES for v in pair}
        claimed(storage)
        deliver_by = T0 + LEASE
        for first, second in LOOKALIKES:
            for key in (first, second):
                outcome = storage.send_message("job-1", "topic", f'"{key}"', key, T0, deliver_by)
                assert outcome.value == "sent", key

    def test_worker_heartbeats(self, storage: Storage) -> None:
        worker = WorkerRecord(
            name="w1@host",
            hostname="host",
            pid=42,
            queues='["a"]',
            started_at=T0,
            last_seen_at=T0,
            sweeps=1,
        )
        storage.record_heartbeat(worker)
        storage.record_heartbeat(dataclasses.replace(worker, name="W1@host"))
        later = dataclasses.replace(worker, last_seen_at=T0 + timedelta(seconds=10), sweeps=2)
        storage.record_heartbeat(later)
        assert storage.list_workers() == [dataclasses.replace(worker, name="W1@host"), later]
        assert storage.delete_workers(T0 + timedelta(seconds=5)) == 1
        assert storage.list_workers() == [later]

    def test_reported_is_marked_on_finished_jobs_only(self, storage: Storage) -> None:
        lease = claimed(storage)
        storage.mark_reported("job-1", T0)  # still running: nothing to mark yet
        job = storage.get_job("job-1")
        assert job is not None and job.reported_at is None
        storage.finish_job(lease, JobState.SUCCEEDED, "1", None, T0 + LEASE / 4)
        storage.mark_reported("job-1", T0 + LEASE / 2)
        storage.mark_reported("job-1", T0 + LEASE)  # a second report keeps the first
        job = storage.get_job("job-1")
        assert job is not None and job.reported_at == T0 + LEASE / 2

    def test_changes_since_carry_the_error_of_a_finished_job(self, storage: Storage) -> None:
        lease = claimed(storage)
        error = '{"type": "ValueError", "message": "no", "no_retry": true}'
        storage.finish_job(lease, JobState.FAILED, None, error, T0 + LEASE / 4)
        rows = [r for r in storage.changes_since(T0 - LEASE, 10) if r["kind"] == "finished"]
        assert [(r["id"], r["state"], r["error"]) for r in rows] == [("job-1", "failed", error)]

    def test_queues_and_topics_are_exact(self, storage: Storage) -> None:
        for index, (first, second) in enumerate(LOOKALIKES):
            storage.create_job(dataclasses.replace(new_job(f"qa{index}"), queue=first))
            storage.create_job(dataclasses.replace(new_job(f"qb{index}"), queue=second))
            assert [j.id for j in storage.list_jobs(JobFilter(queue=second))] == [f"qb{index}"]
        lease = claimed(storage)
        for first, second in LOOKALIKES:
            for topic in (first, second):
                storage.send_message("job-1", topic, f'"{topic}"', None, T0, T0 + LEASE)
        for n, (_, second) in enumerate(LOOKALIKES, start=1):
            taken = storage.take_message(lease, second, call_record(seq=n, result="null"))
            assert taken == f'"{second}"', second
