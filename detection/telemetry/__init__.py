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
PROCESS_FILE = re.compile(r"[a-z]+_(?:[a-z]+_)?(?P<pid>\w+)\.db")  # counter_<pid>.db ...
GONE = "gone"  # where the counts of processes that are gone are added up


def count_into(directory: Path) -> None:
    """Make this process, and those it starts, count into ``directory`` (call before importing
    ``metrics``)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():  # /dev/shm is shared
        raise RuntimeError(f"{directory} is not a directory of this user's")
    os.environ[ENVIRONMENT] = str(directory)


def fold_gone_processes(directory: Path) -> None:
    """Add the counts of processes that are gone into one file per kind (``counter_gone.db``,
    ``histogram_gone.db``) and delete theirs: sums stay as they were (a counter never goes
    back) and the files stay few. Web and the daemon do it when they start (one at a time)."""
    from prometheus_client.mmap_dict import MmapedDict

    from ..jobs.locks import exclusively
    with exclusively(directory / ".fold.lock"):
        for kind in ("counter", "histogram"):
            gone = [path for path in directory.glob(f"{kind}_*.db")
                    if (match := PROCESS_FILE.fullmatch(path.name)) and match["pid"].isdigit()
                    and not _alive(int(match["pid"]))]
            if not gone:
                continue
            folded = directory / f"{kind}_{GONE}.db"
            totals: dict[str, float] = {}
            for path in [*gone, *([folded] if folded.exists() else [])]:
                for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
                    totals[key] = totals.get(key, 0.0) + value
            temp = directory / f".{kind}_{GONE}.db.tmp"
            counts = MmapedDict(str(temp))
            for key, value in totals.items():
                counts.write_value(key, value, 0.0)
            counts.close()
            os.replace(temp, folded)
            for path in gone:
                path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's
        return True
    return True
