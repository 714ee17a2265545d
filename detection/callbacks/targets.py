"""Where a callback may go: a host the operator allowed (``callback_hosts``), over http(s), at
an address that is public unless ``callback_private`` says otherwise. Checked when the job is
accepted (a clear 400) and again at each attempt, on the addresses the connection then uses (a
name that resolves elsewhere later cannot lead into the private network)."""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048


class CallbackRefused(ValueError):
    """A callback URL this server will not post to; the message says why."""


@dataclass(frozen=True)
class CallbackPolicy:
    hosts: tuple[str, ...]  # "host" (any port) or "host:port", lower case
    allow_private: bool
    secret: str
    timeout_seconds: float  # one attempt, connection to answer
    retry_seconds: float  # attempts go on this long after the first

    @classmethod
    def of(cls, settings) -> "CallbackPolicy":
        return cls(tuple(host.lower() for host in settings.callback_hosts),
                   settings.callback_private, settings.callback_secret,
                   settings.callback_timeout_seconds, settings.callback_retry_seconds)


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str
    port: int
    path: str  # with its query

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


def parse_target(url: str, policy: CallbackPolicy) -> Target:
    """``url`` if the policy lets a callback go there (its addresses are checked by
    ``resolve``); else ``CallbackRefused``."""
    if not policy.hosts:
        raise CallbackRefused("this server sends no callbacks (its callback_hosts is empty)")
    if len(url) > MAX_URL_LENGTH or any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise CallbackRefused(f"callback_url must be a URL of at most {MAX_URL_LENGTH} "
                              "characters, without spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise CallbackRefused(f"callback_url is not a URL: {error}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallbackRefused("callback_url must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise CallbackRefused("callback_url must carry no user or password (the signature "
                              "says the call is ours)")
    if parts.fragment:
        raise CallbackRefused("callback_url must have no #fragment")
    host = parts.hostname.lower()
    port = port or (443 if parts.scheme == "https" else 80)
    name = f"[{host}]" if ":" in host else host
    if host not in policy.hosts and f"{name}:{port}" not in policy.hosts:
        raise CallbackRefused(f"callback host {name}:{port} is not one this server calls "
                              "(callback_hosts)")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(url, parts.scheme, host, port, path)


def resolve(target: Target, policy: CallbackPolicy) -> str:
    """The address to connect to: the host's, each of which must be allowed."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise CallbackRefused(f"callback host {target.host} does not resolve: {error}") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for address in addresses:
        refusal = _refusal(address, policy)
        if refusal:
            raise CallbackRefused(f"callback host {target.host} is at {address}, {refusal}")
    return addresses[0]


def _refusal(address: str, policy: CallbackPolicy) -> str | None:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip.is_multicast or ip.is_unspecified:
        return "not an address to call"
    if not ip.is_global and not policy.allow_private:
        return "a private, loopback or reserved address (callback_private is off)"
    return None
