"""Optional API keys, as a Pyramid security policy: views with ``permission="api"`` need a key
when the settings name any. Keys come as ``Authorization: Bearer KEY``, ``X-API-Key: KEY`` or, for
DeepStack clients, an ``api_key`` form field (read from the bounded form parse, and only when no
header carries a key). Keys are compared in constant time, as SHA-256 digests so that neither
a key's content nor its length shows in the time taken."""
from __future__ import annotations

import hashlib
import hmac

from pyramid.security import Allowed, Denied

API_PERMISSION = "api"


def presented_key(request) -> str | None:
    authorization = request.headers.get("Authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    if "X-API-Key" in request.headers:
        return request.headers["X-API-Key"].strip()
    if request.method == "POST" and request.content_type == "multipart/form-data":
        return request.upload_form.fields.get("api_key")
    return None


def key_matches(candidate: str | None, keys: tuple[str, ...]) -> bool:
    if candidate is None:
        return False
    # Compare digests (equal lengths) with every key, so the time taken tells nothing.
    digest = hashlib.sha256(candidate.encode()).digest()
    results = [hmac.compare_digest(digest, hashlib.sha256(key.encode()).digest())
               for key in keys]
    return any(results)


class ApiKeyPolicy:
    def __init__(self, keys: tuple[str, ...]):
        self.keys = keys

    def identity(self, request) -> bool:
        return not self.keys or key_matches(presented_key(request), self.keys)

    def authenticated_userid(self, request) -> str | None:
        return "api-client" if self.keys and self.identity(request) else None

    def permits(self, request, context, permission):
        if permission != API_PERMISSION or request.identity:
            return Allowed("no key needed, or a valid key")
        return Denied("a valid API key is required")

    def remember(self, request, userid, **kw) -> list:
        return []

    def forget(self, request, **kw) -> list:
        return []
