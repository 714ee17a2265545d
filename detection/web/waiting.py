"""Requests that wait for a job to finish (``?wait=`` long-polls, DeepStack calls), woken by an
event rather than by polling, and bounded in number so that they never hold every server thread.

One watcher thread per web process, started on the first wait and gone after a few idle seconds,
reads inotify events for uploads/: the worker's result files appear there by rename. Where inotify
is missing (not Linux) it looks at the waited-for jobs every 50 ms instead. Once a second, while
anyone waits, it calls ``on_tick`` (the service revives a dead or hung daemon there).
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from ..jobs.layout import finishes_a_job
from ..jobs.watch import watch_renames

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
FALLBACK_POLL_SECONDS = 0.05
IDLE_EXIT_SECONDS = 10.0


class JobWaiter:
    def __init__(self, uploads_dir: Path, is_finished: Callable[[str], bool], max_waiting: int,
                 on_tick: Callable[[], object] = lambda: None, watch_files: bool = True):
        """``watch_files``: results appear in uploads/ by themselves (else: look every 50 ms)."""
        self.uploads_dir = uploads_dir
        self.watch_files = watch_files
        self.is_finished = is_finished
        self.max_waiting = max_waiting
        self.on_tick = on_tick
        self._slots = threading.BoundedSemaphore(max_waiting)
        self._lock = threading.Lock()
        self._waiting: dict[str, list[threading.Event]] = {}
        self._watcher: threading.Thread | None = None

    @contextmanager
    def slot(self) -> Iterator[bool]:
        """Whether this request may wait (at most ``max_waiting`` at once); never blocks."""
        granted = self._slots.acquire(blocking=False)
        try:
            yield granted
        finally:
            if granted:
                self._slots.release()

    def wait(self, sid: str, timeout: float) -> bool:
        """Block until the job ``sid`` is finished (True) or ``timeout`` seconds pass (False)."""
        event = threading.Event()
        with self._lock:
            self._waiting.setdefault(sid, []).append(event)
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch, name="job-waiter",
                                                 daemon=True)
                self._watcher.start()
        try:
            if self.is_finished(sid):  # finished before we started listening
                return True
            return event.wait(timeout) or self.is_finished(sid)
        finally:
            with self._lock:
                events = self._waiting[sid]
                events.remove(event)
                if not events:
                    del self._waiting[sid]

    def _wake(self, sids) -> None:
        with self._lock:
            for sid in sids:
                for event in self._waiting.get(sid, ()):
                    event.set()

    def _watch(self) -> None:
        inotify = watch_renames(self.uploads_dir) if self.watch_files else None
        last_tick = idle_since = time.monotonic()
        try:
            while True:
                with self._lock:
                    waited = list(self._waiting)
                    now = time.monotonic()
                    if waited:
                        idle_since = now
                    elif now - idle_since > IDLE_EXIT_SECONDS:
                        self._watcher = None  # decided under the lock: a new wait starts one
                        return
                try:
                    self._look(inotify, waited)
                    if waited and time.monotonic() - last_tick >= TICK_SECONDS:
                        last_tick = time.monotonic()
                        # Also a safety net for a missed event (e.g. an inotify queue overflow).
                        self._wake([sid for sid in waited if self.is_finished(sid)])
                        self.on_tick()
                except Exception:  # the watcher must outlive any one failure
                    log.exception("waiting: the watcher's look failed")
                    time.sleep(TICK_SECONDS)
        finally:
            with self._lock:
                if self._watcher is threading.current_thread():  # an unexpected end
                    self._watcher = None
            if inotify is not None:
                inotify.close()

    def _look(self, inotify, waited: list[str]) -> None:
        """Wake the waiters whose jobs finished: from inotify's events, or by looking."""
        if inotify is not None:
            events = inotify.read(timeout=int(TICK_SECONDS * 1000))
            self._wake({e.name.split(".", 1)[0] for e in events if finishes_a_job(e.name)})
        else:
            time.sleep(FALLBACK_POLL_SECONDS)
            self._wake([sid for sid in waited if self.is_finished(sid)])

