"""The signature a callback carries, and its check (a receiver's side is in README.md).

``X-Detection-Signature: sha256=<hex>`` is HMAC-SHA256, keyed with ``callback_secret``, over
``<timestamp>.<body>`` where ``X-Detection-Timestamp`` is the Unix time of the attempt: a receiver
recomputes it over the raw body and refuses old timestamps (a replayed delivery).
"""
from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Detection-Signature"
TIMESTAMP_HEADER = "X-Detection-Timestamp"
TOLERANCE_SECONDS = 300  # a receiver's default window for the timestamp


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Detection-Signature`` value of ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify(secret: str, timestamp: str, signed: str, body: bytes, now: float,
           tolerance: float = TOLERANCE_SECONDS) -> bool:
    """Whether ``signed`` is ``body``'s signature at ``timestamp``, within ``tolerance`` s of
    ``now``."""
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12) \
            or abs(now - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, int(timestamp), body).encode(),
                               signed.encode("utf-8", "replace"))
