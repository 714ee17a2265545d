"""A job's one shape (its fields, for every kind) and its records in uploads/: written and read by
one room, a damaged record read as a failure, an end handed over the wire (RQ) and recorded."""
import json
from dataclasses import replace

import pytest

from detection.jobs.atomic import temp_path_for
from detection.jobs.job import BadJob, Job, JobKind, JobState, Progress, VideoOptions, new_sid
from detection.jobs.layout import FRAMES, VIDEO_OUTPUT
from detection.jobs.records import JobRecords, Outcome, worker_died
from tests.support import done_result


@pytest.fixture
def records(tmp_path):
    (tmp_path / "uploads").mkdir()
    return JobRecords(tmp_path / "uploads")


@pytest.mark.parametrize("job", [Job.detect(new_sid(), "rtmdet_tiny", 0.25, ("dog", "cat"), 7),
                                 Job.download(new_sid(), "yolox_nano")])
def test_a_job_of_any_kind_travels_as_its_fields_and_comes_back_the_same(job):
    fields = json.loads(json.dumps(job.to_fields()))
    again = Job.from_fields(fields, attempts=2)
    assert again == job and again.attempts == 2 and again.kind is job.kind


def test_fields_from_before_kinds_are_a_detection():
    old_ticket = {"sid": "a" * 32, "model": "rtmdet_tiny", "threshold": 0.3, "enqueued_ns": 5}
    job = Job.from_fields(old_ticket)
    assert job.kind is JobKind.DETECT and job.options.classes == ()
    assert job.options.max_detections == 100


@pytest.mark.parametrize("fields,words", [
    ([1, 2], "not a JSON object"),
    ({"sid": "a" * 32, "kind": "mine", "model": "m"}, "unknown job kind"),
    ({"sid": 7, "model": "m", "threshold": 0.3}, "not a name"),
    ({"sid": "a" * 32, "model": "m", "threshold": "high"}, "threshold"),
    ({"sid": "a" * 32, "model": "m", "threshold": 0.3, "classes": [1]}, "classes"),
    ({"sid": "a" * 32, "model": "m", "threshold": 0.3, "max_detections": 1.5}, "max_detections"),
    ({"sid": "a" * 32, "model": "m", "threshold": 0.3, "enqueued_ns": "now"}, "enqueued_ns"),
])
def test_fields_that_do_not_make_a_job_say_what_is_wrong(fields, words):
    with pytest.raises(BadJob, match=words):
        Job.from_fields(fields)


def test_a_failure_record_repeats_the_job_and_says_why(records):
    job = Job.from_fields(Job.detect(new_sid(), "rtmdet_tiny", 0.5, ("dog",)).to_fields(), 2)
    records.fail(job, worker_died(2))
    status = records.final_status(job.sid)
    assert status.state is JobState.FAILED and status.error == worker_died(2)
    assert status.job == replace(job, enqueued_ns=0) and status.job.attempts == 2
    record = json.loads(records.files.error(job.sid).read_bytes())
    assert record["kind"] == "detect" and record["classes"] == ["dog"] and record["attempts"] == 2


def test_a_damaged_record_reads_as_a_failure_not_a_crash(records):
    sid = new_sid()
    records.files.result(sid).write_bytes(b'{"detections": [')
    status = records.final_status(sid)
    assert status.state is JobState.FAILED and "damaged" in status.error
    records.files.result(sid).write_bytes(b"[]")
    assert records.final_status(sid).state is JobState.FAILED


def test_an_end_handed_over_the_wire_is_recorded_as_the_worker_would(records):
    job = Job.detect(new_sid(), "rtmdet_tiny", 0.3)
    done = Outcome(result=done_result(job), output=b"\x89PNG drawn")
    records.record(job, Outcome.from_wire(done.to_wire()), durable=True)
    assert records.files.output(job.sid).read_bytes() == b"\x89PNG drawn"
    assert records.final_status(job.sid).state is JobState.DONE
    failed = Job.download(new_sid(), "yolox_nano")
    records.record(failed, Outcome.from_wire(Outcome.failed("no network").to_wire()))
    status = records.final_status(failed.sid)
    assert status.error == "no network" and status.job.kind is JobKind.DOWNLOAD
    assert Outcome.from_wire("not an outcome") is None


@pytest.mark.parametrize("over_the_wire", [False, True], ids=["spool", "rq"])
def test_result_files_written_beside_their_place_are_moved_in_or_carried(records, over_the_wire):
    job = Job.video(new_sid(), "yolox_nano", VideoOptions(0.3))
    drawn = temp_path_for(records.uploads_dir / f"{job.sid}{VIDEO_OUTPUT}")
    drawn.write_bytes(b"\0\0\0\x18ftypisom drawn")
    result = {"sid": job.sid, "kind": "video", "model": job.model, **job.options.to_fields(),
              "video": {}, "frames": 1, "counts": {}, "tracks": [], "timings": {}}
    outcome = Outcome(result=result, files={VIDEO_OUTPUT: drawn, FRAMES: b'{"frame": 0}\n'})
    if over_the_wire:  # RQ: the files' bytes travel in the job's result
        outcome = Outcome.from_wire(outcome.to_wire())
        assert not drawn.exists()
    records.record(job, outcome, durable=True)
    assert (records.uploads_dir / f"{job.sid}{VIDEO_OUTPUT}").read_bytes().endswith(b"drawn")
    assert (records.uploads_dir / f"{job.sid}{FRAMES}").read_bytes() == b'{"frame": 0}\n'
    assert not drawn.exists() and records.final_status(job.sid).state is JobState.DONE


def test_result_files_not_moved_into_place_are_removed_whatever_failed(records, monkeypatch):
    from detection.jobs import records as module
    job = Job.video(new_sid(), "yolox_nano", VideoOptions(0.3))
    drawn, frames = (temp_path_for(records.uploads_dir / f"{job.sid}{suffix}")
                     for suffix in (VIDEO_OUTPUT, FRAMES))
    drawn.write_bytes(b"mp4")
    unread = Outcome(result={}, files={FRAMES: frames, VIDEO_OUTPUT: drawn})  # frames: gone
    assert "could not be read back" in unread.to_wire()["error"] and not drawn.exists()

    drawn.write_bytes(b"mp4")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(module, "write_atomically", disk_full)
    with pytest.raises(OSError):  # the bytes first: the drawing is never moved
        records.write_files(job.sid, {FRAMES: b"{}\n", VIDEO_OUTPUT: drawn})
    assert not drawn.exists() and not (records.uploads_dir / f"{job.sid}{VIDEO_OUTPUT}").exists()
    monkeypatch.undo()

    frames.write_bytes(b"being written")  # a worker killed while writing it
    records.fail(job, "the worker died")
    assert not frames.exists() and records.final_status(job.sid).state is JobState.FAILED


def test_progress_is_a_hint_while_it_runs_and_gone_when_it_ends(records):
    job = Job.download(new_sid(), "yolox_nano")
    assert records.progress(job.sid) is None
    records.write_progress(job.sid, Progress(0.25, "downloading: 1.0 of 4.0 MB"))
    assert records.progress(job.sid) == Progress(0.25, "downloading: 1.0 of 4.0 MB")
    records.write_result(job.sid, {**job.to_fields(), "checkpoint": "m.pth", "bytes": 4,
                                   "sha256": "ab", "timings": {}})
    assert records.final_status(job.sid).state is JobState.DONE
    assert records.progress(job.sid) is None and not records.files.progress(job.sid).exists()


@pytest.mark.parametrize("damage", [
    {}, {"detections": "none"}, {"timings": {"inference_ms": "fast"}}, {"image": None},
    {"detections": [{"label": "dog", "score": 0.9, "bbox": [1, 2, 3]}]},
    {"detections": [{"label": 7, "score": 0.9, "bbox": [1, 2, 3, 4]}]},
    {"kind": "download", "bytes": "many"}, {"kind": "mine"}])
def test_a_result_of_the_wrong_shape_reads_as_damaged_not_done(records, damage):
    job = Job.detect(new_sid(), "rtmdet_tiny", 0.3)
    result = {**done_result(job), **damage} if damage else {}
    records.files.result(job.sid).write_text(json.dumps(result))
    status = records.final_status(job.sid)
    assert status.state is JobState.FAILED and "damaged" in status.error


def test_a_record_that_is_a_directory_or_a_json_bomb_reads_as_damaged(records):
    bomb, folder = new_sid(), new_sid()
    records.files.error(bomb).write_bytes(b"[" * 100_000)
    records.files.result(folder).mkdir()
    for sid in (bomb, folder):
        status = records.final_status(sid)
        assert status.state is JobState.FAILED and "damaged" in status.error


def test_a_damaged_download_record_keeps_its_kind(records):
    sid = new_sid()
    records.files.result(sid).write_text(json.dumps({"kind": "download", "model": 5}))
    assert records.final_status(sid).job.kind is JobKind.DOWNLOAD


def test_progress_from_disk_is_checked(records):
    sid = new_sid()
    for raw, expected in [('{"progress": NaN, "stage": "x"}', None),
                          ('{"progress": 7, "stage": "x"}', Progress(1.0, "x")),
                          ('{"progress": -3, "stage": "' + "s" * 500 + '"}',
                           Progress(0.0, "s" * Progress.MAX_STAGE)),
                          ('{"progress": "0.5", "stage": "x"}', None), ("[1, 2]", None)]:
        records.files.progress(sid).write_text(raw)
        assert records.progress(sid) == expected, raw


def test_progress_keeps_short_series_of_number_pairs_to_plot(records):
    """A training's losses and validations: lists of [x, y] pairs of finite numbers, bounded;
    anything else under a name is dropped, not the whole progress."""
    sid = new_sid()
    too_long = [[n, 1.0] for n in range(Progress.MAX_SERIES + 1)]
    records.files.progress(sid).write_text(json.dumps({"progress": 0.5, "stage": "x", "details": {
        "losses": [[1, 2.5], [2, 2.25]], "validations": [], "long": too_long,
        "bad": [[1, "2"]], "triples": [[1, 2, 3]], "nested": [[[1], 2]], "epoch": 3}}))
    progress = records.progress(sid)
    assert progress.details == {"losses": [[1, 2.5], [2, 2.25]], "validations": [], "epoch": 3}


def test_a_planted_symbolic_link_is_not_served_as_a_record(records, tmp_path):
    sid = new_sid()
    (tmp_path / "secret").write_text("not yours")
    records.files.result(sid).symlink_to(tmp_path / "secret")
    assert records.public_file(f"{sid}.json") is None
    assert records.public_file(f"{new_sid()}.json") is not None
