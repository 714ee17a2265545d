"""The spool: order, states, queue positions, the bound, recovery of abandoned jobs, pruning."""
import json
import os
import time

import pytest

from detection.jobs import Job, JobState, QueueFull, SpoolQueue, new_sid


@pytest.fixture
def queue(tmp_path):
    return SpoolQueue(tmp_path / "uploads", tmp_path / "uploads" / ".queue", max_queue=5)


def accept(queue, model="rtmdet_tiny", threshold=0.3) -> Job:
    job = Job.new(new_sid(), model, threshold)
    queue.input_path(job.sid).write_bytes(b"png")
    queue.enqueue(job)
    return job


def test_sids_are_unguessable_and_unique():
    sids = {new_sid() for _ in range(10_000)}
    assert len(sids) == 10_000 and all(len(s) == 32 and int(s, 16) >= 0 for s in sids)


def test_jobs_are_claimed_oldest_first(queue):
    jobs = [accept(queue) for _ in range(3)]
    claimed = [queue.claim_next() for _ in range(3)]
    assert [j.sid for j in claimed] == [j.sid for j in jobs]
    assert all(j.attempts == 1 for j in claimed) and queue.claim_next() is None


def test_status_follows_the_lifecycle(queue):
    first, second = accept(queue), accept(queue)
    assert queue.status(second.sid).state is JobState.QUEUED
    assert queue.status(second.sid).queue_position == 2
    claimed = queue.claim_next()
    assert queue.status(first.sid).state is JobState.RUNNING
    assert queue.status(second.sid).queue_position == 1
    queue.result_path(claimed.sid).write_text(json.dumps(
        {"model": "rtmdet_tiny", "threshold": 0.3, "detections": []}))
    queue.finish(claimed)
    done = queue.status(first.sid)
    assert done.state is JobState.DONE and done.result["detections"] == []
    queue.fail(queue.claim_next(), "the image could not be read")
    failed = queue.status(second.sid)
    assert failed.state is JobState.FAILED and failed.error == "the image could not be read"
    assert queue.depth() == 0
    assert queue.status(new_sid()) is None


def test_the_queue_is_bounded(queue):
    for _ in range(5):
        accept(queue)
    with pytest.raises(QueueFull) as full:
        accept(queue)
    assert full.value.retry_after >= 1 and queue.depth() == 5


def test_an_abandoned_job_is_retried_once_then_failed(queue):
    job = accept(queue)
    queue.claim_next()  # ... and the worker dies
    assert [j.sid for j in queue.recover_abandoned()] == [job.sid]
    assert queue.status(job.sid).state is JobState.QUEUED
    assert queue.status(job.sid).queue_position == 1
    assert queue.claim_next().attempts == 2  # ... and the next worker dies too
    queue.recover_abandoned()
    status = queue.status(job.sid)
    assert status.state is JobState.FAILED and "died 2 times" in status.error


def test_recovered_job_keeps_its_place_at_the_front(queue):
    first = accept(queue)
    queue.claim_next()
    later = accept(queue)
    queue.recover_abandoned()
    assert [queue.claim_next().sid, queue.claim_next().sid] == [first.sid, later.sid]


def test_prune_removes_old_finished_jobs_but_never_pending_ones(queue):
    old_done, fresh_done, old_pending = accept(queue), accept(queue), accept(queue)
    for job in (old_done, fresh_done):
        claimed = queue.claim_next()
        queue.result_path(claimed.sid).write_text("{}")
        queue.output_path(claimed.sid).write_bytes(b"png")
        queue.finish(claimed)
    long_ago = time.time() - 48 * 3600
    for path in queue.uploads_dir.glob(f"{old_done.sid}.*"):
        os.utime(path, (long_ago, long_ago))
    os.utime(queue.input_path(old_pending.sid), (long_ago, long_ago))
    assert queue.prune(older_than_hours=24) == 1
    assert not list(queue.uploads_dir.glob(f"{old_done.sid}.*"))
    assert queue.input_path(old_pending.sid).exists()
    assert queue.result_path(fresh_done.sid).exists()


def test_a_finished_job_reads_done_even_before_its_running_ticket_is_dropped(queue):
    job = accept(queue)
    claimed = queue.claim_next()
    queue.result_path(claimed.sid).write_text(json.dumps(
        {"model": "rtmdet_tiny", "threshold": 0.3, "detections": []}))
    # The worker has written the result but not yet called finish().
    assert queue.is_finished(job.sid)
    assert queue.status(job.sid).state is JobState.DONE
