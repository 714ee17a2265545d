"""The spool's tickets: their names, which a listing reads without opening a file, and their
content, a job's fields.

    queued/<enqueue time ns>-<sid>.<attempts>.<kind>.json       oldest first in a sorted listing
    running/<sid>.<attempts>.w<slot>.b<boot tag>.json           claimed by the worker of a slot

Older names (no kind: a detection; no boot tag: an unknown boot) still read.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .boot import TAG_PATTERN
from .job import BadJob, Job, JobKind

QUEUED_TICKET = re.compile(r"(?P<ns>\d{20})-(?P<sid>[0-9a-f]{32})(?:\.(?P<attempts>\d+))?"
                           r"(?:\.(?P<kind>[a-z]+))?\.json")
RUNNING_TICKET = re.compile(r"(?P<sid>[0-9a-f]{32})(?:\.(?P<attempts>\d+))?(?:\.w(?P<slot>\d+))?"
                            rf"(?:\.b(?P<boot>{TAG_PATTERN}))?\.json")
MAX_TICKET_BYTES = 64 * 1024  # a job's fields: a few hundred bytes


def queued_name(job: Job) -> str:
    return f"{job.enqueued_ns:020d}-{job.sid}.{job.attempts}.{job.kind.value}.json"


def running_name(sid: str, attempts: int, slot: int, boot_tag: str) -> str:
    return f"{sid}.{attempts}.w{slot}.b{boot_tag}.json"


def kind_in_name(match: re.Match) -> JobKind:
    """The kind a queued ticket's name says (an unknown one is a detection's worker's to fail)."""
    try:
        return JobKind(match["kind"] or JobKind.DETECT.value)
    except ValueError:
        return JobKind.DETECT


def write_fields(job: Job) -> bytes:
    return json.dumps(job.to_fields()).encode()


def read_ticket(path: Path, sid: str, attempts: int) -> Job:
    """The job in a ticket file, or ``BadJob`` saying what is wrong with it (``FileNotFoundError``
    when it has gone: another process moved it)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TICKET_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as error:  # a directory, say
        raise BadJob(f"its ticket cannot be read ({error.strerror})") from None
    if len(data) > MAX_TICKET_BYTES:
        raise BadJob(f"its ticket is over {MAX_TICKET_BYTES} bytes")
    try:
        job = Job.from_fields(json.loads(data), attempts)
    except (ValueError, RecursionError) as error:  # BadJob, JSON and UTF-8 errors, deep nesting
        raise BadJob(f"its ticket is damaged ({type(error).__name__}: {str(error)[:200]})") from None
    if job.sid != sid:
        raise BadJob("its ticket does not match its name")
    return job
