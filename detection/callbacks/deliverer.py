"""The web process's callback deliveries: one thread that watches the jobs whose callbacks wait,
and a few that post them (at most two to one host at once), so that a slow receiver delays only
its own deliveries.

A delivery's record (``<sid>.callback.json``) holds its state: ``waiting`` for the job to end,
``retrying`` after a failed attempt, then ``delivered`` or ``failed``. Deliveries are at least
once: one left open by a stopped web process goes on (when it was due) once another serves, and
one whose 2xx came just before a crash is sent again (receivers dedupe by ``X-Detection-Job``).
"""
from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from ..jobs.job import JobStatus
from ..jobs.records import OPEN_CALLBACK_STATES, JobRecords
from ..telemetry.metrics import CALLBACK_DELAY_SECONDS, CALLBACKS
from .sender import post
from .signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from .targets import CallbackPolicy, CallbackRefused, Target, Unresolved, parse_target, resolve

log = logging.getLogger(__name__)

LOOK_SECONDS = (0.1, 1.0)  # how often a waiting job is looked at: at first, after a minute
GONE_CHECK_SECONDS = 5.0  # how often a waiting job is checked to still exist
MAX_DELAY_SECONDS = 60.0  # between attempts: 1 s, 2, 4... up to this
SENDERS = 8  # deliveries posting at once
PER_HOST = 2  # of which to one host
MAX_ERROR_CHARS = 300
FINAL_STATUSES = {410}  # Gone: the receiver says it wants no more


@dataclass
class Delivery:
    url: str
    state: str = "waiting"
    attempts: int = 0
    last_error: str | None = None
    first_attempt_at: float | None = None
    next_attempt_at: float | None = None
    delivered_at: float | None = None

    @classmethod
    def of(cls, document: dict | None) -> "Delivery | None":
        try:
            delivery = cls(**(document or {}))
        except TypeError:
            return None
        return delivery if isinstance(delivery.url, str) and delivery.state in (
            *OPEN_CALLBACK_STATES, "delivered", "failed") else None


class Deliverer:
    """Callbacks of the jobs under one uploads directory: ``check`` a URL, ``register`` it for
    a job, ``follow`` the job once queued, and its status (``describe(job_status)``) is posted
    when it ends."""

    def __init__(self, records: JobRecords, policy: CallbackPolicy,
                 job_status: Callable[[str], JobStatus | None],
                 is_finished: Callable[[str], bool]):
        self.records, self.policy = records, policy
        self.job_status, self.is_finished = job_status, is_finished
        self.describe: Callable[[JobStatus], dict] = lambda status: {"sid": status.job.sid}
        self._due: dict[str, float] = {}  # sid -> when to look again (monotonic)
        self._since: dict[str, float] = {}  # sid -> when it was first looked at
        self._gone_check: dict[str, float] = {}
        self._sending: dict[str, str] = {}  # sid -> its host, while an attempt runs
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._resumed = False
        self._senders = ThreadPoolExecutor(SENDERS, thread_name_prefix="callback")

    def check(self, url: str) -> Target:
        """The target of ``url`` if a callback may go there now; else ``CallbackRefused``."""
        target = parse_target(url, self.policy)
        try:
            resolve(target, self.policy)
        except Unresolved as error:
            raise CallbackRefused(str(error)) from None
        return target

    def register(self, sid: str, url: str) -> None:
        """Job ``sid``, about to be queued, calls ``url`` when it ends (recorded durably;
        ``follow`` it once it is queued: before, the queue would not know it)."""
        self.records.write_callback(sid, asdict(Delivery(url)), durable=True)

    def follow(self, sid: str) -> None:
        """Post job ``sid``'s callback when it ends."""
        self._watch(sid, time.monotonic())

    def discard(self, sid: str) -> None:
        self._close(sid)
        self.records.discard_callback(sid)

    def resume(self) -> None:
        """Go on with the deliveries a previous web process left open, each when it was due
        (once: call it when this process serves, not before its port is bound)."""
        with self._lock:
            if self._resumed:
                return
            self._resumed = True
        for sid in self.records.callback_sids():
            delivery = Delivery.of(self.records.callback(sid))
            if delivery is not None and delivery.state in OPEN_CALLBACK_STATES:
                wait = max(0.0, (delivery.next_attempt_at or 0.0) - time.time())
                self._watch(sid, time.monotonic() + wait)

    def public(self, sid: str) -> dict | None:
        """What /status shows of a job's callback."""
        delivery = Delivery.of(self.records.callback(sid))
        return None if delivery is None else asdict(delivery)

    def _watch(self, sid: str, when: float) -> None:
        with self._lock:
            self._due[sid] = when
            self._since.setdefault(sid, time.monotonic())
            self._gone_check.setdefault(sid, time.monotonic() + GONE_CHECK_SECONDS)
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="callbacks", daemon=True)
                thread.start()
                self._thread = thread
            self._lock.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._due:
                    self._lock.wait()
                now = time.monotonic()
                due = [sid for sid, when in self._due.items()
                       if when <= now and sid not in self._sending]
            troubled = 0
            for sid in due:
                try:
                    self._look(sid)
                except Exception as error:  # Redis down...: this job later, the rest go on
                    troubled += 1
                    self._later(sid, 1.0)
                    if troubled == 1:
                        log.warning("could not look at the jobs of callbacks: %s", error)
            time.sleep(LOOK_SECONDS[0])

    def _later(self, sid: str, seconds: float) -> None:
        with self._lock:
            if sid in self._due:
                self._due[sid] = time.monotonic() + seconds

    def _look(self, sid: str) -> None:
        now = time.monotonic()
        with self._lock:
            waited = now - self._since.get(sid, now)
            gone_check = self._gone_check.get(sid, now)
        if not self.is_finished(sid):
            if now >= gone_check:
                with self._lock:
                    self._gone_check[sid] = now + GONE_CHECK_SECONDS
                if self.job_status(sid) is None:
                    self._finish(sid, None, "the job is gone (pruned, or never queued)")
                    return
            self._later(sid, LOOK_SECONDS[0] if waited < 60 else LOOK_SECONDS[1])
            return
        host = _host_of(self.records.callback(sid))
        with self._lock:
            if Counter(self._sending.values())[host] >= PER_HOST:
                self._due[sid] = now + LOOK_SECONDS[0]  # its host is busy: wait a turn
                return
            self._sending[sid] = host
        try:
            self._senders.submit(self._attempt, sid)
        except RuntimeError:  # shutting down
            with self._lock:
                self._sending.pop(sid, None)

    def _attempt(self, sid: str) -> None:
        try:
            self._deliver(sid)
        except Exception as error:  # a bug: the delivery ends, and says so
            log.exception("the callback of job %s failed unexpectedly", sid)
            self._finish(sid, None, f"internal error: {type(error).__name__}")
        finally:
            with self._lock:
                self._sending.pop(sid, None)

    def _deliver(self, sid: str) -> None:
        delivery = Delivery.of(self.records.callback(sid))
        if delivery is None or delivery.state not in OPEN_CALLBACK_STATES:
            if delivery is None:  # its files were pruned under it
                log.warning("the callback record of job %s is gone; not delivered", sid)
                CALLBACKS.labels("failed").inc()
            self._close(sid)
            return
        try:
            status = self.job_status(sid)  # (RQ: records the job's end in uploads/ first)
        except Exception as error:  # Redis or the disk, for a while: try again
            log.warning("callback of job %s: its status cannot be read now: %s", sid, error)
            self._later(sid, 1.0)
            return
        if status is None:
            self._finish(sid, delivery, "the job is gone (pruned, or never queued)")
            return
        if not status.state.finished:  # seen gone for a moment, then back: wait for its end
            self._later(sid, LOOK_SECONDS[0])
            return
        now = time.time()
        delivery.first_attempt_at = delivery.first_attempt_at or now
        delivery.attempts += 1
        error, final = self._send(delivery, status)
        if error is None:
            delivery.state, delivery.delivered_at, delivery.next_attempt_at = "delivered", now, None
            delivery.last_error = None
            CALLBACKS.labels("delivered").inc()
            ended = self.records.finished_at(sid)
            if ended is not None:
                CALLBACK_DELAY_SECONDS.observe(max(0.0, time.time() - ended))
            self._record(sid, delivery)
            self._close(sid)
            return
        delay = min(MAX_DELAY_SECONDS, 2.0 ** (delivery.attempts - 1))
        if final or now + delay > delivery.first_attempt_at + self.policy.retry_seconds:
            self._finish(sid, delivery, error)
            return
        delivery.state, delivery.next_attempt_at = "retrying", now + delay
        delivery.last_error = error[:MAX_ERROR_CHARS]
        CALLBACKS.labels("retried").inc()
        self._record(sid, delivery)
        self._later(sid, delay)

    def _send(self, delivery: Delivery, status: JobStatus) -> tuple[str | None, bool]:
        """Post ``status``: (None, _) once delivered, else (why not, whether to give up)."""
        body = json.dumps(self.describe(status)).encode()
        timestamp = int(time.time())
        headers = {"Content-Type": "application/json", "User-Agent": "detection-callback/1",
                   "X-Detection-Job": status.job.sid,
                   "X-Detection-Event": f"job.{status.state.value}",
                   TIMESTAMP_HEADER: str(timestamp),
                   SIGNATURE_HEADER: signature(self.policy.secret, timestamp, body)}
        try:
            target = parse_target(delivery.url, self.policy)
            code = post(target, resolve(target, self.policy), body, headers,
                        self.policy.timeout_seconds)
        except CallbackRefused as refused:  # the settings or the name's addresses changed
            return str(refused), True
        except (OSError, http.client.HTTPException) as error:  # Unresolved and timeouts too
            return (str(error) if isinstance(error, (TimeoutError, Unresolved))
                    else f"{type(error).__name__}: {error}".rstrip(": ")), False
        if 200 <= code < 300:
            return None, False
        return f"the receiver answered HTTP {code}", code in FINAL_STATUSES

    def _finish(self, sid: str, delivery: Delivery | None, reason: str) -> None:
        """The delivery failed for good, for ``reason``."""
        delivery = delivery or Delivery.of(self.records.callback(sid))
        if delivery is not None:
            delivery.state, delivery.next_attempt_at = "failed", None
            delivery.last_error = reason[:MAX_ERROR_CHARS]
            self._record(sid, delivery)
        CALLBACKS.labels("failed").inc()
        log.warning("the callback of job %s failed: %s", sid, reason,
                    extra={"sid": sid, "event": "callback"})
        self._close(sid)

    def _record(self, sid: str, delivery: Delivery) -> None:
        try:
            self.records.write_callback(sid, asdict(delivery), durable=True)
        except OSError as error:  # a full disk: the delivery stands, its record lags
            log.warning("could not record the callback of job %s: %s", sid, error)

    def _close(self, sid: str) -> None:
        with self._lock:
            self._due.pop(sid, None)
            self._since.pop(sid, None)
            self._gone_check.pop(sid, None)


def _host_of(document: dict | None) -> str:
    delivery = Delivery.of(document)
    return "" if delivery is None else urlsplit(delivery.url).netloc
