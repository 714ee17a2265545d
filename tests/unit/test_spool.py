"""The spool: order, states, queue positions, the bound, recovery of abandoned jobs, pruning."""
import json
import multiprocessing
import os
import time

import numpy as np
import pytest

from detection.images import encode_png, read_png
from detection.jobs import boot, records, spool
from detection.jobs.atomic import write_atomically
from detection.jobs.errors import QueueFull
from detection.jobs.job import Job, JobKind, JobState, Progress, new_sid
from detection.jobs.queue import Upload
from detection.jobs.recovery import fail_queued, recover_abandoned, recover_own_slot
from detection.jobs.spool import SpoolQueue
from detection.jobs.storage import prune_storage
from tests.support import done_result


@pytest.fixture
def queue(tmp_path):
    return SpoolQueue(tmp_path / "uploads", tmp_path / "uploads" / ".queue", max_queue=5)


def accept(queue, model="rtmdet_tiny", threshold=0.3) -> Job:
    job = Job.detect(new_sid(), model, threshold)
    queue.records.files.input(job.sid).write_bytes(b"png")
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
    queue.records.files.result(claimed.sid).write_text(json.dumps(done_result(claimed)))
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
    assert [j.sid for j in recover_abandoned(queue)] == [job.sid]
    assert queue.status(job.sid).state is JobState.QUEUED
    assert queue.status(job.sid).queue_position == 1
    assert queue.claim_next().attempts == 2  # ... and the next worker dies too
    recover_abandoned(queue)
    status = queue.status(job.sid)
    assert status.state is JobState.FAILED and "died 2 times" in status.error


def test_recovered_job_keeps_its_place_at_the_front(queue):
    first = accept(queue)
    queue.claim_next()
    later = accept(queue)
    recover_abandoned(queue)
    assert [queue.claim_next().sid, queue.claim_next().sid] == [first.sid, later.sid]


def test_a_finished_job_reads_done_even_before_its_running_ticket_is_dropped(queue):
    job = accept(queue)
    claimed = queue.claim_next()
    queue.records.files.result(claimed.sid).write_text(json.dumps(done_result(claimed)))
    # The worker has written the result but not yet called finish().
    assert queue.records.is_finished(job.sid)
    assert queue.status(job.sid).state is JobState.DONE


def test_a_torn_ticket_is_set_aside_and_its_job_failed_not_a_crash(queue):
    torn = new_sid()
    queue.records.files.input(torn).write_bytes(b"png")
    (queue.queued_dir / f"{1:020d}-{torn}.0.json").write_bytes(b"")  # a power cut's leftover
    (queue.queued_dir / "garbage.json").write_bytes(b"{}")
    good = accept(queue)
    assert queue.claim_next().sid == good.sid  # the torn one is skipped
    assert queue.claim_next() is None  # ... and so is the stray file
    status = queue.status(torn)
    assert status.state is JobState.FAILED and "damaged" in status.error
    assert len(list(queue.damaged_dir.iterdir())) == 2 and queue.depth() == 1


def test_reading_a_status_never_writes_the_worker_that_meets_a_torn_ticket_does(queue):
    torn = new_sid()
    queue.records.files.input(torn).write_bytes(b"png")
    ticket = queue.queued_dir / f"{1:020d}-{torn}.0.json"
    ticket.write_bytes(b'{"sid": "')
    before = sorted(p.name for p in queue.records.uploads_dir.rglob("*"))
    status = queue.status(torn)
    assert status.state is JobState.FAILED and "damaged" in status.error
    assert sorted(p.name for p in queue.records.uploads_dir.rglob("*")) == before
    assert queue.claim_next() is None  # the worker sets it aside, and records why it failed
    assert not ticket.exists() and queue.records.final_status(torn).error == status.error


def test_a_torn_running_ticket_is_set_aside_on_recovery(queue):
    torn = new_sid()
    (queue.running_dir / f"{torn}.1.json").write_bytes(b'{"sid": "')
    assert recover_abandoned(queue) == []
    assert queue.status(torn).state is JobState.FAILED and queue.depth() == 0


def test_the_claim_itself_counts_the_attempt(queue):
    job = accept(queue)
    claimed = queue.claim_next()
    # The count is in the running ticket's name: nothing is written after the claim.
    assert [p.name for p in queue.running_dir.iterdir()] == [
        f"{job.sid}.1.w0.b{boot.boot_tag()}.json"]
    assert claimed.attempts == 1 and queue.pending_sids() == {job.sid}


def test_failing_on_a_full_disk_makes_room_with_the_jobs_own_files(queue, monkeypatch):
    import errno

    from detection.jobs import records
    job = accept(queue)
    claimed = queue.claim_next()
    queue.records.files.output(job.sid).write_bytes(b"partial")
    real_write = records.write_atomically
    calls = []

    def full_once(path, data, durable=False):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data, durable)
    monkeypatch.setattr(records, "write_atomically", full_once)
    queue.fail(claimed, "detection failed: OSError: No space left on device")
    status = queue.status(job.sid)
    assert status.state is JobState.FAILED and "No space" in status.error
    assert not queue.records.files.input(job.sid).exists() and not queue.records.files.output(job.sid).exists()
    assert queue.depth() == 0


def test_only_the_jobs_of_dead_workers_are_recovered(tmp_path):
    uploads = tmp_path / "uploads"
    spool = [SpoolQueue(uploads, uploads / ".queue", max_queue=5, slot=slot) for slot in (0, 1)]
    jobs = [accept(spool[0]) for _ in range(2)]
    live = spool[1].slot_lock(1)
    assert live.acquire()  # worker 1 lives ...
    try:
        dead_job, live_job = spool[0].claim_next(), spool[1].claim_next()  # ... worker 0 died
        assert [j.sid for j in recover_abandoned(spool[0])] == [dead_job.sid]
        assert spool[0].status(live_job.sid).state is JobState.RUNNING
        assert spool[0].status(dead_job.sid).state is JobState.QUEUED
    finally:
        live.release()  # now worker 1 dies too
    assert [j.sid for j in recover_abandoned(spool[0])] == [live_job.sid]
    assert {j.sid for j in jobs} == {dead_job.sid, live_job.sid}


def _enqueue_many(uploads, start, accepted, count):
    queue = SpoolQueue(uploads, uploads / ".queue", max_queue=5)
    start.wait()
    for _ in range(count):
        try:
            accept(queue)
            accepted.put(1)
        except QueueFull:
            pass


def test_the_bound_holds_across_web_processes(tmp_path):
    uploads = tmp_path / "uploads"
    SpoolQueue(uploads, uploads / ".queue", max_queue=5)
    context = multiprocessing.get_context("fork")
    start, accepted = context.Event(), context.Queue()
    processes = [context.Process(target=_enqueue_many, args=(uploads, start, accepted, 10))
                 for _ in range(8)]
    for process in processes:
        process.start()
    start.set()
    for process in processes:
        process.join(30)
    count = 0
    while not accepted.empty():
        count += accepted.get()
    queue = SpoolQueue(uploads, uploads / ".queue", max_queue=5)
    assert count == 5 and queue.depth() == 5


def test_waiting_jobs_can_be_failed_all_at_once(queue):
    waiting = [accept(queue) for _ in range(3)]
    running = queue.claim_next()
    fail_queued(queue, "the detection worker could not start")
    assert queue.status(running.sid).state is JobState.RUNNING
    for job in waiting[1:]:
        status = queue.status(job.sid)
        assert status.state is JobState.FAILED and "could not start" in status.error
    assert queue.depth() == 1 and not list(queue.queued_dir.iterdir())


def test_a_new_worker_takes_back_what_its_slot_left_and_skips_finished_jobs(tmp_path):
    uploads = tmp_path / "uploads"
    earlier = SpoolQueue(uploads, uploads / ".queue", max_queue=5, slot=1)
    unfinished, finished = accept(earlier), accept(earlier)
    earlier.claim_next(), earlier.claim_next()  # ... its worker dies, unseen by any recovery
    earlier.records.files.result(finished.sid).write_text(json.dumps(done_result(finished)))  # after its result
    successor = SpoolQueue(uploads, uploads / ".queue", max_queue=5, slot=1)
    lock = successor.slot_lock(1)
    assert lock.acquire()
    try:
        assert [j.sid for j in recover_own_slot(successor)] == [unfinished.sid]
    finally:
        lock.release()
    assert successor.status(unfinished.sid).state is JobState.QUEUED
    assert successor.status(finished.sid).state is JobState.DONE and successor.depth() == 1


def upload_of(pixels: np.ndarray) -> Upload:
    return Upload(b"the bytes as sent", pixels)


def test_the_worker_gets_the_pixels_the_web_process_stored_and_they_go_with_the_job(queue):
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    job = Job.detect(new_sid(), "rtmdet_tiny", 0.3)
    with queue.enqueuing(job, upload_of(pixels)):
        write_atomically(queue.records.files.input(job.sid), encode_png(pixels))
    claimed = queue.claim_next()
    assert np.array_equal(queue.pixels.take(claimed.sid), read_png(queue.records.files.input(job.sid)))
    queue.records.files.result(job.sid).write_bytes(b"{}")
    queue.finish(claimed)
    assert queue.pixels.take(job.sid) is None and not list(queue.pixels.directory.iterdir())


def test_the_job_is_queued_with_its_pixels_before_its_png_is_stored(queue):
    """A worker runs it while the web process encodes and writes the PNG."""
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    job = Job.detect(new_sid(), "rtmdet_tiny", 0.3)
    with queue.enqueuing(job, upload_of(pixels)):
        claimed = queue.claim_next()
        assert claimed.sid == job.sid and np.array_equal(queue.pixels.take(job.sid), pixels)
        write_atomically(queue.records.files.input(job.sid), encode_png(pixels))
    assert queue.status(job.sid).state is JobState.RUNNING


def test_a_failed_store_withdraws_the_job_it_queued_and_leaves_no_pixels(queue):
    job = Job.detect(new_sid(), "rtmdet_tiny", 0.3)
    with pytest.raises(OSError, match="No space"):
        with queue.enqueuing(job, upload_of(np.zeros((8, 8, 3), np.uint8))):
            assert queue.depth() == 1
            raise OSError(28, "No space left on device")
    assert queue.status(job.sid) is None and queue.claim_next() is None
    assert queue.depth() == 0 and not list(queue.pixels.directory.iterdir())


def test_a_failed_store_while_a_worker_runs_the_job_asks_it_to_stop(queue):
    job = Job.detect(new_sid(), "rtmdet_tiny", 0.3)
    with pytest.raises(OSError, match="No space"):
        with queue.enqueuing(job, upload_of(np.zeros((8, 8, 3), np.uint8))):
            claimed = queue.claim_next()
            raise OSError(28, "No space left on device")
    assert "could not be stored" in queue.cancel_requested(claimed.sid)
    assert queue.pixels.take(job.sid) is None


def test_without_pixels_the_job_is_queued_once_its_png_is_stored(tmp_path):
    queue = SpoolQueue(tmp_path / "uploads", tmp_path / "uploads" / ".queue", max_queue=5,
                       max_pixels_bytes=100)  # no room for any
    job = Job.detect(new_sid(), "rtmdet_tiny", 0.3)
    with pytest.raises(OSError, match="No space"):
        with queue.enqueuing(job, upload_of(np.zeros((8, 8, 3), np.uint8))):
            assert queue.depth() == 0
            raise OSError(28, "No space left on device")
    assert queue.depth() == 0 and queue.status(job.sid) is None
    with queue.enqueuing(job, upload_of(np.zeros((8, 8, 3), np.uint8))):
        assert queue.depth() == 0
    assert queue.depth() == 1


def test_pixels_beyond_their_budget_are_not_written_and_the_worker_reads_the_png(tmp_path):
    queue = SpoolQueue(tmp_path / "uploads", tmp_path / "uploads" / ".queue", max_queue=5,
                       max_pixels_bytes=2 * 48 * 64 * 3 + 1000)
    jobs = [Job.detect(new_sid(), "rtmdet_tiny", 0.3) for _ in range(3)]
    for job in jobs:
        queue.enqueue(job, upload_of(np.zeros((48, 64, 3), np.uint8)))
    assert [queue.pixels.take(job.sid) is not None for job in jobs] == [True, True, False]


def test_pixels_are_not_trusted_when_torn_or_of_another_shape(queue):
    pixels = np.zeros((8, 8, 3), np.uint8)
    torn, wrong, empty = (Job.detect(new_sid(), "rtmdet_tiny", 0.3) for _ in range(3))
    for job in (torn, wrong, empty):
        queue.enqueue(job, upload_of(pixels))
    queue.pixels.path(empty.sid).write_bytes(b"")
    path = queue.pixels.path(torn.sid)
    path.write_bytes(path.read_bytes()[:100])
    with open(queue.pixels.path(wrong.sid), "wb") as f:
        np.save(f, np.zeros((8, 8), np.float32))
    assert [queue.pixels.take(job.sid) for job in (torn, wrong, empty)] == [None] * 3


def test_pixels_of_an_earlier_boot_are_not_trusted_and_are_pruned_at_once(queue, monkeypatch):
    """They are not fsynced: after a power cut their file may hold anything, whatever its date."""
    job = Job.detect(new_sid(), "rtmdet_tiny", 0.3)
    queue.enqueue(job, upload_of(np.zeros((8, 8, 3), np.uint8)))
    assert queue.pixels.take(job.sid) is not None
    monkeypatch.setattr(boot, "boot_tag", lambda: "0123456789ab")  # the machine restarted
    assert queue.pixels.take(job.sid) is None
    report = prune_storage(queue.records.files.uploads_dir, pending={job.sid}, retention_hours=24,
                           max_bytes=None)
    assert report.removed_temp_files == 1 and not list(queue.pixels.directory.iterdir())
    assert queue.depth() == 1  # the job itself waits, to be read from its PNG


def test_a_boot_is_named_by_the_kernel_or_else_by_its_boot_time(monkeypatch, tmp_path):
    named = boot.boot_id()
    assert named == boot.boot_id() and len(boot.boot_tag()) == 12
    if boot.BOOT_ID_FILE.exists():
        assert named == boot.BOOT_ID_FILE.read_text().strip()
    monkeypatch.setattr(boot, "BOOT_ID_FILE", tmp_path / "absent")  # not Linux
    assert boot.boot_id().startswith("booted-at-") and boot.boot_id() == boot.boot_id()


def test_pixels_of_a_job_that_never_got_its_ticket_are_pruned_as_stale(queue):
    kept = Job.detect(new_sid(), "rtmdet_tiny", 0.3)
    queue.enqueue(kept, upload_of(np.zeros((8, 8, 3), np.uint8)))
    orphan = queue.pixels.path(new_sid())
    orphan.write_bytes(queue.pixels.path(kept.sid).read_bytes())
    two_hours_ago = time.time() - 7200
    for path in queue.pixels.directory.iterdir():
        os.utime(path, (two_hours_ago, two_hours_ago))
    report = prune_storage(queue.records.files.uploads_dir, pending=set(), retention_hours=24,
                           max_bytes=None)
    assert report.removed_temp_files == 1 and not orphan.exists()
    assert queue.pixels.take(kept.sid) is not None


def test_results_are_made_durable_before_the_ticket_goes(queue, monkeypatch):
    events = []
    for room in (records, spool):
        monkeypatch.setattr(room, "fsync_path", lambda path: events.append(("fsync", path.name)))
    real_unlink = type(queue.running_dir).unlink
    monkeypatch.setattr(type(queue.running_dir), "unlink", lambda path, missing_ok=False: (
        events.append(("unlink", path.name)), real_unlink(path, missing_ok=missing_ok)))
    accept(queue)
    job = queue.claim_next()
    queue.records.files.output(job.sid).write_bytes(b"png")
    queue.records.files.result(job.sid).write_bytes(b"{}")
    queue.finish(job)
    ticket = next(i for i, (kind, name) in enumerate(events) if ".w0." in name)
    assert [name for kind, name in events[:ticket] if kind == "fsync"] == [
        f"{job.sid}.out.png", f"{job.sid}.json", "uploads"]


@pytest.mark.parametrize("written", ["in this boot", "in an earlier boot"])
def test_a_dead_workers_result_counts_unless_written_in_an_earlier_boot(queue, written,
                                                                         monkeypatch):
    """Results are fsynced only before their ticket goes: a power cut may leave them torn."""
    accept(queue)
    job = queue.claim_next()
    for path in (queue.records.files.output(job.sid), queue.records.files.result(job.sid)):
        path.write_bytes(b"written, maybe not on disk")
    if written == "in an earlier boot":
        monkeypatch.setattr(boot, "boot_tag", lambda: "0123456789ab")  # the machine restarted
    recovered = recover_abandoned(queue)
    if written == "in an earlier boot":
        assert [j.sid for j in recovered] == [job.sid]
        assert queue.status(job.sid).state is JobState.QUEUED
        assert not queue.records.files.result(job.sid).exists() and not queue.records.files.output(job.sid).exists()
    else:
        assert recovered == [] and queue.depth() == 0 and queue.records.files.result(job.sid).exists()


def test_a_ticket_from_before_class_filters_reads_as_all_classes(queue):
    job = accept(queue)
    ticket = next(queue.queued_dir.iterdir())
    fields = json.loads(ticket.read_bytes())
    del fields["classes"], fields["max_detections"]
    ticket.write_text(json.dumps(fields))
    claimed = queue.claim_next()
    assert claimed.sid == job.sid and claimed.options.classes == ()
    assert claimed.options.max_detections == 100


def test_coco_classes_are_mmdets():
    from mmdet.datasets import CocoDataset

    from detection.coco import COCO_CLASSES
    assert COCO_CLASSES == tuple(CocoDataset.METAINFO["classes"])


@pytest.mark.parametrize("kind", ["download", "detect"])
def test_a_job_that_ends_while_its_status_is_read_reads_as_ended_not_unknown(queue, kind):
    """Between the look at its records and the listing of running/, the job ends: a download
    has no <sid>.png to tell that it existed, and must not read as 'no such job'."""
    job = Job.download(new_sid(), "m") if kind == "download" else accept(queue)
    if kind == "download":
        queue.enqueue(job)
    claimed = queue.claim_next()
    real, ended = queue.running_names, []

    def ending_meanwhile():
        if not ended:
            ended.append(True)
            result = {**claimed.to_fields(), "checkpoint": "m.pth", "bytes": 1, "sha256": "a",
                      "timings": {}} if kind == "download" else done_result(claimed)
            queue.records.write_result(claimed.sid, result)
            queue.finish(claimed)
        return real()
    queue.running_names = ending_meanwhile
    assert queue.status(job.sid).state is JobState.DONE


@pytest.mark.parametrize("ticket", ["bomb", "directory", "huge", "nan"])
def test_a_ticket_no_worker_can_read_fails_its_job_alone_and_the_queue_goes_on(queue, ticket):
    sid = new_sid()
    path = queue.queued_dir / f"{1:020d}-{sid}.0.detect.json"
    if ticket == "directory":
        path.mkdir()
    else:
        path.write_bytes({"bomb": b"[" * 100_000, "huge": b" " * 100_000 + b"{}",
                          "nan": json.dumps({"sid": sid, "model": "m", "threshold": float("nan"),
                                             "enqueued_ns": 1}).encode()}[ticket])
    good = accept(queue)
    assert queue.status(sid).state is JobState.FAILED  # read, not moved
    assert queue.claim_next().sid == good.sid
    failed = queue.records.final_status(sid)
    assert failed.state is JobState.FAILED and "the job was lost" in failed.error
    assert queue.depth() == 1 and len(list(queue.damaged_dir.iterdir())) == 1
    assert [job.sid for job in recover_own_slot(queue)] == [good.sid]  # and no crash


def test_a_requeued_job_starts_its_progress_again(queue):
    job = Job.download(new_sid(), "m")
    queue.enqueue(job)
    queue.claim_next()
    queue.records.write_progress(job.sid, Progress(0.6, "downloading"))
    recover_abandoned(queue)  # its worker died
    assert queue.records.progress(job.sid) is None
    assert queue.status(job.sid).state is JobState.QUEUED


def test_each_lane_claims_only_its_kinds_and_sees_what_waits(queue):
    download = Job.download(new_sid(), "m")
    queue.enqueue(download)
    detection = accept(queue)
    assert queue.waiting({JobKind.DOWNLOAD}) and queue.waiting({JobKind.DETECT})
    assert queue.claim_next({JobKind.DETECT}).sid == detection.sid  # past the older download
    assert queue.claim_next({JobKind.DETECT}) is None
    assert [job.sid for job in queue.pending_jobs(JobKind.DOWNLOAD)] == [download.sid]
    assert queue.claim_next({JobKind.DOWNLOAD}).sid == download.sid
    assert not queue.waiting({JobKind.DOWNLOAD})
    assert [job.sid for job in queue.pending_jobs(JobKind.DOWNLOAD)] == [download.sid]  # running


def test_pixels_named_before_boot_tags_are_pruned_at_once(queue):
    legacy = queue.pixels.directory / f"{new_sid()}.npy"
    legacy.write_bytes(b"pixels of version 1.0")
    report = prune_storage(queue.records.uploads_dir, pending=set(), retention_hours=24,
                           max_bytes=None)
    assert report.removed_temp_files == 1 and not legacy.exists()
