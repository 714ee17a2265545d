"""Requests waiting for jobs: woken by the result's rename at once, bounded in number, polled
only where inotify is missing, and the periodic check runs while anyone waits."""
import threading
import time

import pytest

from detection.jobs.atomic import write_atomically
from detection.web import waiting
from detection.web.waiting import JobWaiter

SID = "a" * 32


@pytest.fixture
def uploads(tmp_path):
    return tmp_path


def finish_later(uploads, delay: float, name: str = f"{SID}.json") -> None:
    threading.Timer(delay, write_atomically, (uploads / name, b"{}")).start()


def is_finished(uploads):
    return lambda sid: (uploads / f"{sid}.json").exists() or (uploads / f"{sid}.error.json").exists()


@pytest.fixture
def no_ticks(monkeypatch):
    """The periodic check once a minute: whatever wakes a waiter sooner is the event (or the
    fallback poll), by a margin no machine's speed can blur."""
    monkeypatch.setattr(waiting, "TICK_SECONDS", 60.0)


@pytest.mark.parametrize("name", [f"{SID}.json", f"{SID}.error.json"])
def test_a_waiter_wakes_as_soon_as_the_result_appears(uploads, name, no_ticks):
    waiter = JobWaiter(uploads, is_finished(uploads), max_waiting=4)
    started = time.monotonic()  # before the writer's clock starts: a busy machine may run it first
    finish_later(uploads, 0.2, name)
    assert waiter.wait(SID, timeout=30)
    assert 0.2 <= time.monotonic() - started < 10  # woken by the rename, not the 30 s timeout


def test_a_waiter_gives_up_after_its_timeout(uploads):
    waiter = JobWaiter(uploads, is_finished(uploads), max_waiting=4)
    started = time.monotonic()
    assert not waiter.wait(SID, timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 10


def test_a_finished_job_answers_at_once(uploads):
    (uploads / f"{SID}.json").write_text("{}")
    assert JobWaiter(uploads, is_finished(uploads), max_waiting=1).wait(SID, timeout=10)


def test_slots_are_bounded_and_never_block(uploads):
    waiter = JobWaiter(uploads, is_finished(uploads), max_waiting=2)
    with waiter.slot() as first, waiter.slot() as second, waiter.slot() as third:
        assert (first, second, third) == (True, True, False)
    with waiter.slot() as again:
        assert again


def test_without_inotify_it_polls_and_still_wakes(uploads, monkeypatch, no_ticks):
    monkeypatch.setattr(waiting, "watch_renames", lambda directory: None)
    waiter = JobWaiter(uploads, is_finished(uploads), max_waiting=4)
    finish_later(uploads, 0.2)
    started = time.monotonic()
    assert waiter.wait(SID, timeout=30)
    assert time.monotonic() - started < 10  # by its poll, not the 30 s timeout


def test_the_periodic_check_runs_while_someone_waits_and_nothing_polls(uploads):
    ticks, looks = [], []
    finished = is_finished(uploads)
    waiter = JobWaiter(uploads, lambda sid: looks.append(sid) or finished(sid), max_waiting=4,
                       on_tick=lambda: ticks.append(time.monotonic()))
    assert not waiter.wait(SID, timeout=2.5)
    assert len(ticks) >= 2
    # A look as it starts, one at its end, one a tick (and one a tick may be taking as it ends):
    # a poll every 50 ms would look 50 times.
    assert len(looks) <= 3 + len(ticks)
