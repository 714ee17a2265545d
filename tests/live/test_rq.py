"""Redis + RQ: workers on "other machines" (their own working and uploads directories), one or
two web processes, and a real redis-server with AOF, each in its own temp dir."""
import concurrent.futures
import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import requests
from PIL import Image

from tests.support import (
    ROOT,
    FileServer,
    LiveServer,
    RedisServer,
    png_bytes,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.slow

HEARTBEAT = 3  # seconds: how soon a dead worker's job is noticed


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


class RQWorker:
    """``python mmdetectionl.py --config INI worker`` run from its own directory."""

    def __init__(self, directory, checkpoint, redis_url, extra_models=""):
        directory.mkdir()
        self.ini = write_config(directory, {"rtmdet_tiny": checkpoint}, extra_models, queue="rq",
                                redis_url=redis_url, heartbeat_timeout_seconds=HEARTBEAT,
                                job_timeout_seconds=60)
        self.uploads = directory / "uploads"
        self.log_path = directory / "worker.log"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "mmdetectionl.py"), "--config", str(self.ini),
                 "worker"], cwd=directory, stdout=log, stderr=log)

    def jobs_done(self) -> list[str]:
        return re.findall(r"Job OK \(([0-9a-f]{32})\)", self.log_path.read_text())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


@pytest.fixture
def rq_setup(tmp_path, rtmdet_checkpoint, redis_server):
    """Start web processes and workers against one Redis; all stopped after."""
    started = []

    def web(**overrides) -> LiveServer:
        directory = tmp_path / f"web{len(started)}"
        directory.mkdir()
        settings = {"queue": "rq", "redis_url": redis_server.url, "spawn_worker": "false",
                    "heartbeat_timeout_seconds": HEARTBEAT, **overrides}
        ini = write_config(directory, {"rtmdet_tiny": rtmdet_checkpoint}, **settings)
        server = LiveServer(ini).start()
        started.append(server)
        return server

    def worker(extra_models: str = "") -> RQWorker:
        process = RQWorker(tmp_path / f"worker{len(started)}", rtmdet_checkpoint,
                           redis_server.url, extra_models)
        started.append(process)
        return process

    yield web, worker
    for process in started:
        process.stop()
        if isinstance(process, LiveServer):
            process.kill_worker()  # a daemon it started, if any


def wait_for_workers(count: int, redis_url: str, timeout: float = 120) -> None:
    from redis import Redis
    from rq import Worker
    connection = Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    while len(Worker.all(connection=connection)) < count:
        assert time.monotonic() < deadline, "the RQ workers did not register"
        time.sleep(0.2)


def test_two_workers_elsewhere_a_kill_9_mid_burst_loses_and_repeats_nothing(rq_setup,
                                                                          redis_server):
    web, worker = rq_setup
    server = web(max_queue=40)
    workers = [worker(), worker()]
    wait_for_workers(2, redis_server.url)
    health = requests.get(server.url + "/health", timeout=10).json()
    assert health["queue"]["backend"] == "rq" and health["worker"]["alive"]
    assert len(health["worker"]["workers"]) == 2
    images = [png_bytes(size=(300 + 5 * i, 240)) for i in range(30)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(server.upload, images))
    assert [r.status_code for r in responses] == [202] * 30
    sids = [r.json()["sid"] for r in responses]
    deadline = time.monotonic() + 60
    while not workers[0].jobs_done() and time.monotonic() < deadline:
        time.sleep(0.01)
    workers[0].process.send_signal(signal.SIGKILL)  # mid-burst, most likely mid-job

    states = [server.wait_until_finished(sid, timeout=180)["state"] for sid in sids]
    assert states == ["done"] * 30
    done = workers[0].jobs_done() + workers[1].jobs_done()
    assert sorted(done) == sorted(sids), "every job done exactly once"
    assert workers[0].jobs_done() and workers[1].jobs_done()
    for sid in sids[:3]:  # the web side serves the results; the workers' disks hold nothing
        status = requests.get(f"{server.url}/status/{sid}", timeout=10).json()
        drawn = requests.get(server.url + status["result_url"], timeout=10)
        assert drawn.status_code == 200 and Image.open(io.BytesIO(drawn.content)).size[1] == 240
    assert not any(any(w.uploads.glob("*.png")) for w in workers if w.uploads.exists())


def test_queued_jobs_survive_a_redis_crash_and_a_web_restart(rq_setup, redis_server):
    web, worker = rq_setup
    server = web()
    sids = [server.upload(png_bytes()).json()["sid"] for _ in range(5)]
    redis_server.stop(signal.SIGKILL)  # no clean shutdown: the AOF alone keeps the jobs
    refused = server.upload(png_bytes())
    assert refused.status_code == 503 and "Redis" in refused.json()["error"]
    assert int(refused.headers["Retry-After"]) >= 1
    redis_server.start()
    server.stop()
    restarted = LiveServer(server.ini).start()
    try:
        worker()
        assert [restarted.wait_until_finished(s)["state"] for s in sids] == ["done"] * 5
    finally:
        restarted.stop()


def test_the_queue_bound_holds_across_two_web_processes(rq_setup):
    web, _ = rq_setup
    servers = [web(max_queue=6), web(max_queue=6)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda i: servers[i % 2].upload(png_bytes()), range(20)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [202] * 6 + [503] * 14
    sid = next(r.json()["sid"] for r in responses if r.status_code == 202)
    assert all(requests.get(f"{s.url}/status/{sid}", timeout=10).json()["state"] == "queued"
               for s in servers), "either web process answers for any job"


def test_a_web_host_without_a_daemon_prunes_old_jobs_itself(rq_setup):
    web, _ = rq_setup
    server = web(retention_hours=0.001, prune_interval_seconds=1)  # 3.6 s
    old = time.time() - 3600
    sid = "ab" * 16
    for suffix in (".png", ".out.png", ".json"):
        path = server.uploads / f"{sid}{suffix}"
        path.write_bytes(b"{}")
        os.utime(path, (old, old))
    deadline = time.monotonic() + 20
    while any(server.uploads.glob(f"{sid}*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(server.uploads.glob(f"{sid}*"))


def test_a_web_host_starts_its_own_rq_worker_and_waits_out_its_model_load(rq_setup):
    web, _ = rq_setup
    server = web(spawn_worker="true")  # a heartbeat of 3 s, shorter than a model load here
    sids = [server.upload(png_bytes()).json()["sid"] for _ in range(3)]
    assert [server.wait_until_finished(s)["state"] for s in sids] == ["done"] * 3
    assert server.worker_pid() and "Job OK" in (server.uploads / ".daemon.log").read_text()


def queued_detection(directory, redis_url: str, checkpoint, **settings):
    """A detection as a web process of the RQ backend accepts it (its input stored here, its
    upload in Redis): the settings, that web's queue and the job."""
    from detection.jobs.job import Job, new_sid
    from detection.jobs.queue import Upload
    from detection.jobs.rq_queue import RQQueue
    from detection.settings import load_settings
    loaded = load_settings(write_config(directory, {"rtmdet_tiny": checkpoint}, queue="rq",
                                        redis_url=redis_url, **settings))
    queue = RQQueue(loaded)
    job = Job.detect(new_sid(), "rtmdet_tiny", 0.3)
    loaded.uploads_dir.mkdir()
    queue.records.files.input(job.sid).write_bytes(b"png")
    queue.enqueue(job, Upload(png_bytes(), np.zeros((240, 320, 3), np.uint8)))
    return loaded, queue, job


def test_a_job_whose_worker_died_twice_fails_with_the_reason(tmp_path, redis_server,
                                                              fake_checkpoint):
    """RQ's own cleanup, as a surviving worker's maintenance runs it, after two deaths."""
    from redis import Redis
    from rq import SimpleWorker

    from detection.jobs.job import JobState
    from detection.jobs.rq_queue import QUEUE_NAMES, upload_key
    _, queue, job = queued_detection(tmp_path, redis_server.url, fake_checkpoint)
    connection = Redis.from_url(redis_server.url)
    for attempt in (1, 2):
        worker = SimpleWorker([QUEUE_NAMES["detect"]], connection=connection)
        worker.register_birth()
        taken, rq_queue = worker.dequeue_job_and_maintain_ttl(1)
        worker.prepare_execution(taken)
        worker.prepare_job_execution(taken, remove_from_intermediate_queue=True)
        assert queue.status(job.sid).state is JobState.RUNNING
        # ... and the worker is killed: its heartbeat expires.
        rq_queue.started_job_registry.cleanup(time.time() + 3600)
    status = queue.status(job.sid)  # reads only
    assert status.state is JobState.FAILED and "died 2 times" in status.error
    assert not queue.records.files.error(job.sid).exists() and connection.exists(upload_key(job.sid))
    assert queue.collect(status).error == status.error  # the named step that writes
    assert queue.records.files.error(job.sid).exists() and not connection.exists(upload_key(job.sid))
    assert queue.depth() == 0


def test_a_job_whose_worker_dies_between_taking_and_starting_it_is_retried(
        tmp_path, redis_server, rtmdet_checkpoint):
    """RQ pops a job off several queues (BLPOP): a worker killed before it starts the job lost
    it, "queued" in no list (CI saw it once, under kill -9 mid-burst). Taken through RQ's
    intermediate queue, it is found by a surviving worker's maintenance and retried."""
    from redis import Redis

    from detection.jobs.job import JobState
    from detection.jobs.rq_queue import QUEUE_NAMES
    from detection.worker import rq_worker
    settings, queue, job = queued_detection(tmp_path, redis_server.url, rtmdet_checkpoint)
    connection = Redis.from_url(redis_server.url)
    lanes = [rq_worker.LaneQueue(name, connection=connection) for name in QUEUE_NAMES.values()]
    taken, lane = rq_worker.LaneQueue.dequeue_any(lanes, 1, connection)
    assert taken.id == job.sid and lane.intermediate_queue.get_job_ids() == [job.sid]
    # ... and its worker is killed here. RQ retries it once seen there for a minute:
    connection.set(lane.intermediate_queue.get_first_seen_key(job.sid), time.time() - 120)
    assert queue.status(job.sid).state is JobState.QUEUED

    rq_worker.RQJobWorker(settings).work(burst=True)  # its maintenance runs first
    status = queue.status(job.sid)
    assert status.state is JobState.DONE, status
    assert status.job.attempts == 2 and lane.intermediate_queue.get_job_ids() == []


def test_a_job_over_its_time_limit_fails_with_the_reason(tmp_path, redis_server,
                                                         rtmdet_checkpoint, monkeypatch):
    """The worker in this process (RQ's burst mode), with detection made to hang: RQ's alarm,
    set again once the model is loaded, ends the job at its limit; it is failed, not retried."""
    from detection.jobs.job import JobState
    from detection.worker import rq_worker
    from detection.worker.handlers import detect
    settings, queue, job = queued_detection(tmp_path, redis_server.url, rtmdet_checkpoint,
                                            job_timeout_seconds=1,
                                            model_load_timeout_seconds=600)
    worker = rq_worker.RQJobWorker(settings)  # loads the model first: not counted

    def hang(*args, **kwargs):
        time.sleep(30)
    monkeypatch.setattr(detect, "detect_images", hang)
    started = time.monotonic()
    worker.work(burst=True)
    assert time.monotonic() - started < 10
    status = queue.status(job.sid)
    assert status.state is JobState.FAILED, status
    assert "longer than 1 s, the time limit for model rtmdet_tiny" in status.error


def test_a_web_hosts_rq_daemon_leaves_when_redis_stays_away(rq_setup, redis_server):
    web, _ = rq_setup
    server = web(spawn_worker="true", idle_exit_seconds=2)
    sid = server.upload(png_bytes()).json()["sid"]
    assert server.wait_until_finished(sid)["state"] == "done"
    assert server.worker_pid()
    redis_server.stop(signal.SIGKILL)
    deadline = time.monotonic() + 60
    while server.worker_pid() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.worker_pid() is None, "the daemon outlived Redis"
    assert "unavailable for" in (server.uploads / ".daemon.log").read_text()


def test_a_download_runs_on_an_rq_worker_with_progress_and_is_collected(rq_setup, redis_server,
                                                                      tmp_path,
                                                                      rtmdet_checkpoint):
    """The second kind of job on RQ: progress in the RQ job's meta, the end collected here."""
    import hashlib
    import shutil
    served = tmp_path / "served"
    served.mkdir()
    digest = hashlib.sha256(rtmdet_checkpoint.read_bytes()).hexdigest()
    name = f"rtmdet_tiny_fetched_20260101-{digest[:8]}.pth"
    shutil.copy(rtmdet_checkpoint, served / name)
    files = FileServer(served, pause=0.05)
    table = (f'[rtmdet_fetched]\nconfig = "rtmdet/rtmdet_tiny_8xb32-300e_coco.py"\n'
             f'weights_url = "{files.url}/{name}"\n'
             f'checkpoint = "{tmp_path / "fetched" / "fetched.pth"}"\n')
    try:
        web, worker = rq_setup
        server = web(extra_models=table)
        worker(extra_models=table)
        wait_for_workers(1, redis_server.url)
        sid = requests.post(f"{server.url}/models/rtmdet_fetched/download",
                            timeout=10).json()["sid"]
        seen = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = requests.get(f"{server.url}/status/{sid}", timeout=10).json()
            seen.append(status.get("progress"))
            if status["state"] in ("done", "failed"):
                break
            time.sleep(0.2)
    finally:
        files.stop()
    assert status["state"] == "done" and status["kind"] == "download", status
    assert any(p and 0 < p < 1 for p in seen), seen
    assert status["sha256"] == digest and (server.uploads / f"{sid}.json").exists()


def test_a_job_queued_before_job_kinds_is_still_done(tmp_path, redis_server, rtmdet_checkpoint):
    """After an upgrade, Redis may hold jobs of the old form: the RQ function ``detect`` and the
    arguments ``sid, model, threshold``."""
    from rq import Queue

    from detection.jobs.job import JobState, new_sid
    from detection.jobs.rq_queue import QUEUE_NAMES, RQQueue, upload_key
    from detection.settings import load_settings
    from detection.worker import rq_worker
    ini = write_config(tmp_path, {"rtmdet_tiny": rtmdet_checkpoint}, queue="rq",
                       redis_url=redis_server.url)
    settings = load_settings(ini)
    queue = RQQueue(settings)
    sid = new_sid()
    settings.uploads_dir.mkdir()
    queue.records.store_input(sid, png_bytes())
    queue.redis.set(upload_key(sid), png_bytes())
    Queue(QUEUE_NAMES["detect"], connection=queue.redis).enqueue_call(
        "detection.worker.rq_worker.detect", args=(sid, "rtmdet_tiny", 0.25),
        kwargs={"classes": [], "max_detections": 5}, job_id=sid)
    status = queue.status(sid)
    assert status.state is JobState.QUEUED and status.job.model == "rtmdet_tiny"
    assert status.job.options.threshold == 0.25 and status.job.options.max_detections == 5
    rq_worker.RQJobWorker(settings).work(burst=True)
    status = queue.collect(queue.status(sid))
    assert status.state is JobState.DONE, status
    assert status.result["max_detections"] == 5 and len(status.result["detections"]) <= 5


def test_a_training_runs_on_an_rq_worker_and_is_cancelled_queued_or_running(tmp_path,
                                                                           redis_server):
    """Training on RQ, by the web host's own worker (a training reads the datasets and writes
    the versions of this host: its workers share its folders): cancelled while queued or as it
    starts, then while it runs; each ends failed with the reason, no version made."""
    from tests.shapes import save_dataset
    from tests.support import SHARED_CHECKPOINT
    if not SHARED_CHECKPOINT.is_file():
        pytest.skip("needs the real YOLOX-Nano checkpoint in ../shared")
    ini = write_config(tmp_path, {"yolox_nano": SHARED_CHECKPOINT}, default_model="yolox_nano",
                       queue="rq", redis_url=redis_server.url, heartbeat_timeout_seconds=HEARTBEAT)
    server = LiveServer(ini).start()
    try:
        save_dataset(server.url, tmp_path / "shapes", 10)
        body = {"dataset": "shapes", "base": "yolox_nano", "name": "shapes", "time_budget": 300}
        statuses = []
        for wait_for_epoch in (False, True):
            status_url = server.url + requests.post(f"{server.url}/training", json=body,
                                                    timeout=30).json()["status_url"]
            deadline = time.monotonic() + 300
            while wait_for_epoch and "epoch" not in requests.get(status_url, timeout=30).json():
                assert time.monotonic() < deadline, "the training did not start"
                time.sleep(0.5)
            sid = status_url.rsplit("/", 1)[1]
            assert requests.delete(f"{server.url}/training/{sid}", timeout=30).status_code == 202
            while (status := requests.get(status_url, timeout=30).json())["state"] not in (
                    "done", "failed"):
                assert time.monotonic() < deadline, status
                time.sleep(0.5)
            statuses.append(status)
        assert [s["state"] for s in statuses] == ["failed", "failed"]
        assert all(s["error"].startswith("cancelled by DELETE /training/") for s in statuses)
        assert requests.get(f"{server.url}/models/shapes", timeout=30).status_code == 404
    finally:
        server.stop()
        server.kill_worker()


def test_a_callback_is_delivered_from_rq_with_no_client_polling(rq_setup, redis_server):
    from tests.support import CallbackReceiver
    secret = "an-rq-test-secret-of-32-chars!!!"
    receiver = CallbackReceiver(secret, answers=(500, 200))
    try:
        web, worker = rq_setup
        server = web(callback_hosts="127.0.0.1:*", callback_private="true",
                     callback_secret=secret)
        worker()
        sid = server.upload(png_bytes(), callback_url=receiver.url + "/hook",
                            threshold="0.0").json()["sid"]
        # Nobody asks /status: the web's deliverer sees the job end in Redis and collects it
        wait_until(lambda: len(receiver.deliveries) == 2, timeout=180, interval=0.1)
        assert all(d["signed"] for d in receiver.deliveries)
        body = json.loads(receiver.deliveries[-1]["body"])
        assert (body["sid"], body["state"]) == (sid, "done") and body["detections"]
        assert (server.uploads / f"{sid}.json").is_file()  # collected into this host's uploads/
        wait_until(lambda: requests.get(f"{server.url}/status/{sid}", timeout=10).json()
                   ["callback"]["state"] == "delivered", timeout=10, interval=0.1)
    finally:
        receiver.stop()


def test_a_video_runs_on_an_rq_worker_and_its_files_are_collected(rq_setup, redis_server):
    from tests.clips import panned_photo
    web, worker = rq_setup
    server = web()
    worker()
    sid = requests.post(server.url + "/upload", files={"image": ("clip.mp4", panned_photo(
        seconds=1, fps=10))}, data={"fps": "5", "threshold": "0.0"}, timeout=30).json()["sid"]
    status = server.wait_until_finished(sid, timeout=180)
    assert (status["kind"], status["state"], status["frames"]) == ("video", "done", 5)
    drawn = requests.get(server.url + status["result_url"], timeout=10)
    assert drawn.status_code == 200 and drawn.content[4:8] == b"ftyp"
    lines = requests.get(server.url + status["frames_url"], timeout=10).text.splitlines()
    assert len(lines) == 5 and (server.uploads / f"{sid}.out.mp4").is_file()


def test_a_batch_runs_on_an_rq_worker_and_its_files_are_collected(rq_setup, redis_server):
    web, worker = rq_setup
    server = web()
    worker()
    parts = [("image", (f"{i}.png", png_bytes(size=(200 + 10 * i, 150)))) for i in range(3)]
    sid = requests.post(server.url + "/upload?batch=1", files=parts, data={"threshold": "0.0"},
                        timeout=30).json()["sid"]
    status = server.wait_until_finished(sid, timeout=180)
    assert (status["kind"], status["state"], len(status["images"])) == ("batch", "done", 3)
    coco = requests.get(server.url + status["coco_url"], timeout=10).json()
    assert [image["width"] for image in coco["images"]] == [200, 210, 220]
    assert requests.get(server.url + status["result_url"], timeout=10).content[:2] == b"PK"
