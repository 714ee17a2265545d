"""Being woken when a file appears in a directory by rename (how tickets and results appear),
with inotify; where there is none (not Linux), callers poll instead."""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def watch_renames(directory: Path):
    """An inotify instance watching writes and renames into ``directory`` (``.read(timeout=ms)``
    blocks until one happens), or None where there is none."""
    try:
        from inotify_simple import INotify, flags
        inotify = INotify()
    except (ImportError, OSError) as error:
        log.info("no inotify (%s): polling %s instead", error, directory)
        return None
    try:
        inotify.add_watch(str(directory), flags.MOVED_TO | flags.CLOSE_WRITE)
    except OSError as error:
        inotify.close()
        log.warning("cannot watch %s (%s): polling it instead", directory, error)
        return None
    return inotify
