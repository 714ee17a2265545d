"""The web process's callback deliveries: one thread that watches the jobs whose callbacks wait,
and a few that post them, so that a slow receiver delays only its own delivery.

A delivery's record (``<sid>.callback.json``) holds its state: ``waiting`` for the job to end,
``retrying`` after a failed attempt, then ``delivered`` or ``failed``. Deliveries left waiting or
retrying by a stopped web process go on when it starts again.
"""
from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from ..jobs.job import JobStatus
from ..jobs.records import JobRecords
from ..telemetry.metrics import CALLBACK_DELAY_SECONDS, CALLBACKS
from .sender import post
from .signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from .targets import CallbackPolicy, CallbackRefused, Target, parse_target, resolve

log = logging.getLogger(__name__)

LOOK_SECONDS = 0.1  # how often waiting jobs are looked at
GONE_CHECK_SECONDS = 5.0  # how often a waiting job is checked to still exist
MAX_DELAY_SECONDS = 60.0  # between attempts: 1 s, 2, 4... up to this
SENDERS = 4  # deliveries posting at once
OPEN = ("waiting", "retrying")


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
    def of(cls, document: dict) -> "Delivery | None":
        try:
            delivery = cls(**document)
        except TypeError:
            return None
        return delivery if isinstance(delivery.url, str) and delivery.state in (
            *OPEN, "delivered", "failed") else None


class Deliverer:
    """Callbacks of the jobs under one uploads directory: ``check`` a URL, ``register`` it for
    a job, and the job's status (``describe(job_status)``) is posted when the job ends."""

    def __init__(self, records: JobRecords, policy: CallbackPolicy,
                 job_status: Callable[[str], JobStatus | None],
                 is_finished: Callable[[str], bool]):
        self.records, self.policy = records, policy
        self.job_status, self.is_finished = job_status, is_finished
        self.describe: Callable[[JobStatus], dict] = lambda status: {"sid": status.job.sid}
        self._due: dict[str, float] = {}  # sid -> when to look again
        self._gone_check: dict[str, float] = {}
        self._sending: set[str] = set()
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._senders = ThreadPoolExecutor(SENDERS, thread_name_prefix="callback")

    def check(self, url: str) -> Target:
        """The target of ``url`` if a callback may go there now; else ``CallbackRefused``."""
        target = parse_target(url, self.policy)
        resolve(target, self.policy)
        return target

    def register(self, sid: str, url: str) -> None:
        """Job ``sid``, about to be queued, calls ``url`` when it ends (recorded durably; ``follow``
        it once it is queued: before, the queue would not know it)."""
        self.records.write_callback(sid, asdict(Delivery(url)), durable=True)

    def follow(self, sid: str) -> None:
        """Post job ``sid``'s callback when it ends."""
        self._watch(sid, time.monotonic())

    def discard(self, sid: str) -> None:
        self._close(sid)
        self.records.discard_callback(sid)

    def resume(self) -> None:
        """Go on with the deliveries a previous web process left open."""
        now = time.monotonic()
        for sid in self.records.callback_sids():
            delivery = Delivery.of(self.records.callback(sid) or {})
            if delivery is not None and delivery.state in OPEN:
                self._watch(sid, now)

    def public(self, sid: str) -> dict | None:
        """What /status shows of a job's callback."""
        delivery = Delivery.of(self.records.callback(sid) or {})
        return None if delivery is None else asdict(delivery)

    def _watch(self, sid: str, when: float) -> None:
        with self._lock:
            self._due[sid] = when
            self._gone_check.setdefault(sid, when + GONE_CHECK_SECONDS)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="callbacks", daemon=True)
                self._thread.start()
            self._lock.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._due:
                    self._lock.wait()
                due = [sid for sid, when in self._due.items()
                       if when <= time.monotonic() and sid not in self._sending]
            for sid in due:
                try:
                    self._look(sid)
                except Exception:  # one job's trouble (Redis down...) must not stop the rest
                    log.exception("looking at the callback of job %s failed", sid)
                    self._later(sid, 1.0)
            time.sleep(LOOK_SECONDS)

    def _later(self, sid: str, seconds: float) -> None:
        with self._lock:
            if sid in self._due:
                self._due[sid] = time.monotonic() + seconds

    def _look(self, sid: str) -> None:
        now = time.monotonic()
        if not self.is_finished(sid):
            if now < self._gone_check.get(sid, now):
                self._later(sid, LOOK_SECONDS)
                return
            self._gone_check[sid] = now + GONE_CHECK_SECONDS
            if self.job_status(sid) is not None:
                self._later(sid, LOOK_SECONDS)
                return
        with self._lock:
            self._sending.add(sid)
        self._senders.submit(self._attempt, sid)

    def _attempt(self, sid: str) -> None:
        try:
            self._deliver(sid)
        except Exception as error:  # a bug: the delivery ends, and says so
            log.exception("the callback of job %s failed unexpectedly", sid)
            self._give_up(sid, f"internal error: {type(error).__name__}")
        finally:
            with self._lock:
                self._sending.discard(sid)

    def _deliver(self, sid: str) -> None:
        delivery = Delivery.of(self.records.callback(sid) or {})
        if delivery is None or delivery.state not in OPEN:  # pruned, or ended meanwhile
            self._close(sid)
            return
        status = self.job_status(sid)  # (RQ: records the job's end in uploads/ first)
        now = time.time()
        delivery.first_attempt_at = delivery.first_attempt_at or now
        delivery.attempts += 1
        error, final = self._send(delivery, status) if status is not None else (
            "the job is gone (pruned, or never queued)", True)
        if error is None:
            delivery.state, delivery.delivered_at, delivery.next_attempt_at = "delivered", now, None
            delivery.last_error = None
            CALLBACKS.labels("delivered").inc()
            ended = self.records.finished_at(sid)
            if ended is not None:
                CALLBACK_DELAY_SECONDS.observe(max(0.0, time.time() - ended))
        else:
            delay = min(MAX_DELAY_SECONDS, 2.0 ** (delivery.attempts - 1))
            delivery.last_error = error
            if final or now + delay > delivery.first_attempt_at + self.policy.retry_seconds:
                delivery.state, delivery.next_attempt_at = "failed", None
                CALLBACKS.labels("failed").inc()
                log.warning("the callback of job %s failed after %d attempts: %s", sid,
                            delivery.attempts, error, extra={"sid": sid, "event": "callback"})
            else:
                delivery.state, delivery.next_attempt_at = "retrying", now + delay
                CALLBACKS.labels("retried").inc()
        try:
            self.records.write_callback(sid, asdict(delivery), durable=True)
        except OSError as write_error:  # a full disk: the delivery stands, its record lags
            log.warning("could not record the callback of job %s: %s", sid, write_error)
        if delivery.state == "retrying":
            self._later(sid, delivery.next_attempt_at - now)
        else:
            self._close(sid)

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
        except (OSError, http.client.HTTPException) as error:  # timeouts included
            return str(error) if isinstance(error, TimeoutError) else \
                f"{type(error).__name__}: {error}".rstrip(": "), False
        return (None, False) if 200 <= code < 300 else (f"the receiver answered HTTP {code}", False)

    def _give_up(self, sid: str, reason: str) -> None:
        delivery = Delivery.of(self.records.callback(sid) or {})
        if delivery is not None:
            delivery.state, delivery.last_error, delivery.next_attempt_at = "failed", reason, None
            try:
                self.records.write_callback(sid, asdict(delivery), durable=True)
            except OSError:
                pass
        CALLBACKS.labels("failed").inc()
        self._close(sid)

    def _close(self, sid: str) -> None:
        with self._lock:
            self._due.pop(sid, None)
            self._gone_check.pop(sid, None)
