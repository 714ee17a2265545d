"""What the service tells about itself: Prometheus metrics from every process (``metrics.py``).

prometheus-client's multiprocess mode: each process (web, the daemon, its workers) counts into its
own files in one directory, named by ``PROMETHEUS_MULTIPROC_DIR``, which must be set before
prometheus_client is imported; web's ``GET /metrics`` sums them. Web sets it from its settings
(``Settings.metrics_dir``, in /dev/shm), and the processes it starts inherit it.
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path

ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"
PROCESS_FILE = re.compile(r"\w+_(?P<pid>\d+)\.db")  # prometheus-client's: counter_<pid>.db ...


def count_into(directory: Path) -> None:
    """Make this process, and those it starts, count into ``directory`` (call before importing
    ``metrics``)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():  # /dev/shm is shared
        raise RuntimeError(f"{directory} is not a directory of this user's")
    os.environ[ENVIRONMENT] = str(directory)


def forget_gone_processes(directory: Path) -> None:
    """Delete the counts of processes that are gone (their totals drop: Prometheus reads that
    as a counter reset). The daemon does it when it starts, so the files stay few."""
    for path in directory.glob("*.db"):
        match = PROCESS_FILE.fullmatch(path.name)
        if match and not _alive(int(match["pid"])):
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's
        return True
    return True
