"""Several workers on one machine: they share the spool, no job runs twice, and a dead worker's
job is recovered while the live one keeps its own."""
import concurrent.futures
import json
import os
import re
import signal
import time

import pytest
import requests

from tests.support import done_result, png_bytes, wait_until

pytestmark = pytest.mark.slow


def worker_log_events(server, event: str) -> list[tuple[int, str]]:
    """(worker pid, sid) for each ``event`` ("claimed" or "done") the daemon's log relays."""
    text = (server.uploads / ".daemon.log").read_text()
    return [(int(pid), sid) for pid, sid in
            re.findall(rf"\[worker (\d+)\] INFO [\w.]+: {event} ([0-9a-f]{{32}})", text)]


def live_workers(server) -> list[dict]:
    return requests.get(server.url + "/health", timeout=10).json()["worker"].get("workers", [])


def test_two_workers_share_the_spool_and_a_kill_9_loses_and_repeats_nothing(live_server):
    server = live_server(workers=2, max_queue=30)
    warm = [server.upload(png_bytes(), threshold="0.0").json()["sid"] for _ in range(2)]
    assert [server.wait_until_finished(sid)["state"] for sid in warm] == ["done"] * 2
    deadline = time.monotonic() + 60
    while len(live_workers(server)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = live_workers(server)
    assert sorted(w["slot"] for w in workers) == [0, 1]

    images = [png_bytes(size=(300 + 7 * i, 240)) for i in range(16)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        sids = [r.json()["sid"] for r in pool.map(server.upload, images)]
    victim = workers[0]["worker_pid"]
    running = server.uploads / ".queue" / "running"
    while not any(".w0." in n.name for n in running.iterdir()) and (
            time.monotonic() < deadline):
        time.sleep(0.002)
    os.kill(victim, signal.SIGKILL)  # mid-job, while the other worker goes on

    assert [server.wait_until_finished(sid)["state"] for sid in sids] == ["done"] * 16
    # A worker logs "done" once the result is durable: the client may hear of it first.
    wait_until(lambda: len(worker_log_events(server, "done")) >= len(sids + warm), timeout=30)
    done = worker_log_events(server, "done")
    done_sids = [sid for _, sid in done]
    assert sorted(done_sids) == sorted(sids + warm), "every job done exactly once"
    pids = {pid for pid, sid in done if sid in sids}
    assert len(pids) >= 2, "both slots took jobs from the burst"
    claims = [sid for _, sid in worker_log_events(server, "claimed")]
    repeated = [sid for sid in set(claims) if claims.count(sid) > 1]
    assert len(repeated) <= 1, "only the killed worker's job ran again"
    health = live_workers(server)
    assert len(health) == 2 and victim not in {w["worker_pid"] for w in health}


def state_of(worker):
    from detection.daemon_state import WorkerState
    return WorkerState(worker.pid, worker.slot, device="cuda:0", gpu="a GPU", version="test",
                       models_loaded=["rtmdet_tiny"], runtimes={"rtmdet_tiny": "torch"})


def test_a_batch_over_its_time_limit_fails_every_job_of_it(make_config, fake_checkpoint):
    """A worker on a GPU reports a batch; past the batch's limit (each job's limit, added up),
    the supervisor kills the worker and fails each job of it that has no result."""
    from detection.jobs.job import Job, new_sid
    from detection.settings import load_settings
    from detection.worker.deadlines import Deadline
    from detection.worker.protocol import Started, decode, encode
    from detection.worker.supervisor import Slot, Supervisor, WorkerProcess
    settings = load_settings(make_config({"rtmdet_tiny": fake_checkpoint}, job_timeout_seconds=1))
    supervisor = Supervisor(settings)
    settings.daemon_lock_file.touch()  # the daemon's, which this test stands in for
    jobs = []
    for _ in range(3):
        job = Job.detect(new_sid(), "rtmdet_tiny", 0.3)
        supervisor.queue.records.files.input(job.sid).write_bytes(b"png")
        supervisor.queue.enqueue(job)
        jobs.append(supervisor.queue.claim_next())
    # This one finished in time:
    supervisor.queue.records.files.result(jobs[2].sid).write_text(json.dumps(done_result(jobs[2])))
    slot = Slot(0)
    slot.worker = worker = WorkerProcess(settings, 0)
    try:
        supervisor._on_event(worker, decode(encode(Started(tuple(jobs), state_of(worker)))))
        assert worker.deadline.at - time.monotonic() == pytest.approx(3, abs=0.5)
        worker.deadline = Deadline(time.monotonic() - 1, worker.deadline.reason)
        supervisor._check_worker(slot)
        assert worker.process.poll() is not None and slot.worker is None
        states = [supervisor.queue.status(j.sid) for j in jobs]
        assert [s.state.value for s in states] == ["failed", "failed", "done"]
        assert all("longer than 1 s" in s.error for s in states[:2])
    finally:
        worker.kill()
