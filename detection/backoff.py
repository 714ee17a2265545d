"""When to start a process again after it ended: the detection daemon (web's launcher) and each
worker slot (the daemon's supervisor) follow the same rule."""
from __future__ import annotations

HEALTHY_LIFETIME_SECONDS = 60.0  # a process that lived this long resets the back-off
MAX_DELAY_SECONDS = 60.0


class Backoff:
    """At once after a healthy life (or a clean end), else later and later: 1 s, 2, 4... up to
    ``max_delay`` seconds."""

    def __init__(self, healthy_lifetime: float = HEALTHY_LIFETIME_SECONDS,
                 max_delay: float = MAX_DELAY_SECONDS):
        self.healthy_lifetime = healthy_lifetime
        self.max_delay = max_delay
        self.delay = 0.0

    def after(self, lifetime: float, healthy: bool = False) -> float:
        """The delay before the next start, once a process ended after ``lifetime`` seconds
        (``healthy``: it ended well, whatever its lifetime)."""
        if healthy or lifetime >= self.healthy_lifetime:
            self.delay = 0.0
        else:
            self.delay = min(self.max_delay, max(1.0, 2 * self.delay))
        return self.delay
