"""The detection daemon's main loop: keep ``workers`` worker processes, watch them, replace them.

The supervisor holds the daemon lock and keeps one worker process per slot (``processes.py``; on
GPUs, slot i uses GPU i), reading the events each reports (``protocol.py``) and relaying its log.
The workers share the spool; each holds its slot's lock, so a dead worker's job is recovered and
a live one's never is. The supervisor replaces a worker when it dies (backing off if it keeps
dying), when it falls silent (stopped or hung: no heartbeat for ``heartbeat_timeout_seconds``),
and when its step runs past its deadline (``deadlines.py``: its jobs fail with the reason). It
also prunes storage every ``prune_interval_seconds``, publishes its state in
``uploads/.daemon.json`` (``daemon_state.py``) with a heartbeat the web process watches, and
leaves after ``idle_exit_seconds`` without work.
"""
from __future__ import annotations

import logging
import os
import selectors
import signal
import threading
import time
from typing import Callable

from .. import __version__
from ..daemon_state import DaemonState, WorkerState, with_jobs, write_daemon_state
from ..jobs.job import JobKind
from ..jobs.recovery import fail_queued, recover_abandoned
from ..jobs.spool import open_spool
from ..jobs.storage import prune_storage
from ..logs import relay
from ..models import ModelsFile
from ..settings import Settings
from ..telemetry.metrics import JOBS
from ..zoo import discard_partial
from .deadlines import loading_deadline, work_deadline
from .processes import Slot, WorkerProcess, daemon_slots
from .protocol import Event, Finished, Heartbeat, Loading, Started, Unusable, decode

log = logging.getLogger(__name__)

TICK_SECONDS = 0.5
STOP_GRACE_SECONDS = 30.0
ERROR_PAUSE_SECONDS = 1.0
CRASHES_BEFORE_GIVING_UP = 3  # workers dying at start in a row: fail the waiting jobs


class Supervisor:
    def __init__(self, settings: Settings, still_wanted: Callable[[], bool] = lambda: False):
        self.settings = settings
        self.still_wanted = still_wanted  # asked when idle: go on (True) or leave
        self.queue = open_spool(settings)
        self.models_file = ModelsFile(settings.models_file, settings.checkpoints_dir)
        self.stop = threading.Event()
        self.slots = daemon_slots(settings)
        self.worker_unusable = False
        self.unusable_reason = ""  # why workers cannot start (until one does): /health/ready
        self.restarts = 0
        self.last_prune = 0.0
        self.published: DaemonState | None = None
        self.selector = selectors.DefaultSelector()

    @property
    def workers(self) -> list[WorkerProcess]:
        return [slot.worker for slot in self.slots if slot.worker is not None]

    def run(self) -> None:
        log.info("supervisor %d started with %d worker slots", os.getpid(), len(self.slots))
        self.idle_since = time.monotonic()
        self._guarded(self._recover)
        while not self.stop.is_set():
            if not self._guarded(self._tick):
                break
        self._guarded(self._stop_workers)
        self._publish_state("stopped")
        log.info("supervisor %d stopping", os.getpid())

    def _guarded(self, step: Callable[[], object]) -> object:
        """Run one step; an unexpected error is logged and waited out, never the daemon's end
        (its workers would die with it, and their jobs with that)."""
        try:
            return step()
        except Exception:
            log.exception("supervisor: %s failed; going on", step.__name__)
            self.stop.wait(ERROR_PAUSE_SECONDS)
            return True

    def _tick(self) -> bool:
        """One turn of the loop; False when the daemon should leave."""
        now = time.monotonic()
        for slot in self.slots:
            if slot.worker is None and now >= slot.next_start and self._wanted(slot):
                self._start_worker(slot)
        self._read_reports(TICK_SECONDS)
        self._check_workers()
        if now - self.last_prune >= self.settings.prune_interval_seconds:
            self._prune()
        self._publish_state("running")
        if any(worker.jobs for worker in self.workers) or self.queue.depth():
            self.idle_since = now
        elif (self.settings.idle_exit_seconds
              and now - self.idle_since > self.settings.idle_exit_seconds):
            self._stop_workers()
            self._publish_state("stopped")  # before the lock may go to another daemon
            if not self.still_wanted():
                return False
            self.idle_since = time.monotonic()
        return True

    def _wanted(self, slot: Slot) -> bool:
        """Whether a slot needs its worker now: a detection slot always (once workers could not
        start, only while jobs wait); a slot for long jobs while one of its kinds waits."""
        if slot.lane.on_demand:
            return self.queue.waiting(slot.lane.kinds)
        return not self.worker_unusable or self.queue.depth() > 0

    def _recover(self) -> None:
        for job in recover_abandoned(self.queue):
            log.warning("recovered %s, abandoned by a worker that died (attempt %d)",
                        job.sid, job.attempts)

    def _prune(self) -> None:
        self.last_prune = time.monotonic()
        try:
            report = prune_storage(self.settings.uploads_dir, pending=self.queue.pending_sids(),
                                   retention_hours=self.settings.retention_hours,
                                   max_bytes=self.settings.max_storage_bytes)
        except OSError:
            log.exception("pruning storage failed")
            return
        if report.removed_jobs or report.removed_temp_files:
            log.info("pruned %d jobs and %d stale temp files (%d bytes); %d bytes stored",
                     report.removed_jobs, report.removed_temp_files, report.removed_bytes,
                     report.remaining_bytes)

    # --- worker processes ------------------------------------------------------------------
    def _start_worker(self, slot: Slot) -> None:
        try:
            slot.worker = worker = WorkerProcess(self.settings, slot.index, slot.lane)
        except OSError as error:  # e.g. out of processes or memory: try again later
            log.error("cannot start a worker: %s", error)
            slot.start_later(lifetime=0.0)
            return
        self.selector.register(worker.reports.fd, selectors.EVENT_READ, (worker, "reports"))
        self.selector.register(worker.output.fd, selectors.EVENT_READ, (worker, "output"))
        log.info("started worker %d in slot %d (%s)", worker.pid, slot.index, slot.lane.name)

    def _read_reports(self, timeout: float) -> None:
        """Wait up to ``timeout`` for what the workers say (events) and print (their log)."""
        if not self.workers:
            self.stop.wait(timeout)
            return
        deadline = time.monotonic() + timeout
        while self.selector.get_map():
            os.utime(self.settings.daemon_lock_file)  # the daemon's heartbeat (see daemon.py)
            remaining = max(0.0, deadline - time.monotonic())
            for key, _ in self.selector.select(remaining):
                worker, pipe = key.data
                reader = worker.reports if pipe == "reports" else worker.output
                for line in reader.read_lines():
                    if pipe == "reports":
                        self._on_event(worker, decode(line))
                    else:
                        self._relay(worker, line.decode(errors="replace"))
                if reader.closed:
                    self.selector.unregister(reader.fd)
            if remaining == 0:
                break
        else:
            self.stop.wait(max(0.0, deadline - time.monotonic()))  # every worker's pipes closed

    def _relay(self, worker: WorkerProcess, text: str) -> None:
        worker.last_output.append(text)
        if self.settings.log_format == "json":
            relay(log, text, worker_pid=worker.pid)
        else:
            log.info("[worker %d] %s", worker.pid, text)

    def _on_event(self, worker: WorkerProcess, event: Event | None) -> None:
        if event is None:
            return
        worker.reported = True
        worker.last_report = time.monotonic()
        if isinstance(event, (Heartbeat, Started, Finished)) and event.state is not None:
            worker.state = event.state
            self.unusable_reason = ""  # a worker that started: they can
        if isinstance(event, Loading):
            worker.jobs = event.jobs
            worker.deadline = loading_deadline(event.model, self.settings)
        elif isinstance(event, Started):
            worker.jobs = event.jobs
            worker.deadline = work_deadline(event.jobs, self.models_file.models, self.settings)
        elif isinstance(event, Finished):
            worker.jobs, worker.deadline = (), None
        elif isinstance(event, Unusable):
            worker.unusable_reason = event.reason
        if not isinstance(event, Heartbeat):
            self._publish_state("running")

    def _check_workers(self) -> None:
        for slot in self.slots:
            if slot.worker is not None:
                self._check_worker(slot)

    def _check_worker(self, slot: Slot) -> None:
        worker = slot.worker
        now = time.monotonic()
        if worker.process.poll() is not None:
            status = worker.process.returncode
            if status == 0 and slot.lane.on_demand:  # no job of its lane left: it left
                self._worker_gone(slot, "left, idle", restart_now=True, replaced=False)
            else:
                self._worker_gone(slot, f"exited with status {status}")
        elif worker.deadline is not None and worker.deadline.passed(now):
            self._read_reports(0)  # a "finished" (and the next "started") may be in the pipe
            if slot.worker is not worker or worker.deadline is None or not worker.deadline.passed():
                return
            reason = worker.deadline.reason
            log.error("worker %d: %s (jobs %s)", worker.pid, reason,
                      ", ".join(job.sid for job in worker.jobs))
            worker.kill()
            for job in worker.jobs:
                if not self.queue.records.is_finished(job.sid):
                    self.queue.fail(job, reason)
                    if job.kind is JobKind.DETECT:
                        JOBS.labels(job.model, "failed").inc()
                    elif job.kind is JobKind.DOWNLOAD and job.model in self.models_file.models:
                        discard_partial(self.models_file.models[job.model].checkpoint)
            self._worker_gone(slot, "killed: over its time limit", restart_now=True)
        elif now - worker.last_report > self._silence_limit(worker):
            log.error("worker %d sent nothing for %.0f s (stopped or hung): replacing it",
                      worker.pid, now - worker.last_report)
            self._worker_gone(slot, "killed: no heartbeat")

    def _silence_limit(self, worker: WorkerProcess) -> float:
        if worker.reported:
            return self.settings.heartbeat_timeout_seconds
        # Until its first word a worker is starting Python: allow it a model's load time.
        return max(self.settings.heartbeat_timeout_seconds,
                   self.settings.model_load_timeout_seconds)

    def _worker_gone(self, slot: Slot, how: str, restart_now: bool = False,
                     replaced: bool = True) -> None:
        worker = slot.worker
        worker.kill()  # and waited for: its slot lock is free, so its job can be recovered
        self._read_reports(0)  # its last words
        for fd in (worker.reports.fd, worker.output.fd):
            if fd in self.selector.get_map():
                self.selector.unregister(fd)
        worker.close()
        slot.worker = None
        log.log(logging.WARNING if replaced else logging.INFO, "worker %d (slot %d) %s after "
                "%.1f s", worker.pid, slot.index, how, worker.lifetime)
        self._recover()  # its job goes back to the queue, or fails on its last attempt
        self.restarts += replaced
        crashed_at_start = not restart_now and worker.state is None
        slot.crashes = slot.crashes + 1 if crashed_at_start else 0
        # Only when no other worker runs: one slot's failure (out of memory, say) is not the rest's.
        if not any(other.state is not None for other in self.workers):
            if worker.unusable_reason:
                self._give_up(worker.unusable_reason)
            elif slot.crashes >= CRASHES_BEFORE_GIVING_UP:
                self._give_up(f"the detection worker keeps dying as it starts ({how}): "
                              + " | ".join(worker.last_output))
                slot.crashes = 0
        slot.start_later(worker.lifetime, healthy=restart_now)

    def _give_up(self, reason: str) -> None:
        """Fail the waiting jobs rather than leave them queued behind workers that cannot start;
        start one again only for new jobs."""
        log.error("%s; failing the waiting jobs", reason)
        fail_queued(self.queue, reason)
        self.worker_unusable = True
        self.unusable_reason = reason

    def _stop_workers(self) -> None:
        """Let the workers finish their jobs and leave (SIGTERM); kill those that take too long."""
        for worker in self.workers:
            worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while (any(worker.process.poll() is None for worker in self.workers)
               and time.monotonic() < deadline):
            self._read_reports(TICK_SECONDS)
        for slot in self.slots:
            if slot.worker is not None:
                self._worker_gone(slot, "stopped", restart_now=True)

    def _publish_state(self, state: str) -> None:
        """``uploads/.daemon.json``: what /health shows; and the heartbeat web watches: the lock
        file's modification time (touching it needs no disk space)."""
        os.utime(self.settings.daemon_lock_file)
        document = DaemonState(
            pid=os.getpid(), state=state, version=__version__, restarts=self.restarts,
            slots=len(self.slots), unusable=self.unusable_reason or None,
            workers=[with_jobs(worker.state or WorkerState(worker.pid, worker.slot,
                                                           worker.lane.name, starting=True),
                               [job.sid for job in worker.jobs]) for worker in self.workers])
        if document == self.published:
            return
        self.published = document
        try:
            write_daemon_state(self.settings.daemon_state_file, document)
        except OSError as error:  # a full disk must not stop the daemon: jobs still need ending
            log.warning("cannot publish the daemon's state: %s", error)
