"""Which boot of the machine this is. What must not outlive a boot (the spool's pixels, never
fsynced; a result not yet made durable) is tagged with it, rather than dated by the clock: a clock
stepped after the boot, or a file restored from a backup, would date it wrong.

Linux names each boot with a fresh UUID (``/proc/sys/kernel/random/boot_id``); elsewhere the
kernel's boot time stands in (psutil: macOS's ``kern.boottime``, Windows' uptime counter).
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
TAG_PATTERN = r"[0-9a-f]{12}"


def boot_id() -> str:
    """This boot's name: the kernel's boot id, else its boot time."""
    try:
        return BOOT_ID_FILE.read_text().strip()
    except OSError:
        import psutil
        return f"booted-at-{round(psutil.boot_time())}"


@functools.lru_cache(maxsize=1)
def boot_tag() -> str:
    """12 hex digits naming this boot, for file names."""
    return hashlib.sha256(boot_id().encode()).hexdigest()[:12]
