"""Where a callback may go: a host the operator allowed (``callback_hosts``), over http(s), at
addresses that are public unless ``callback_private`` says otherwise. Checked when the job is
accepted (a clear 400) and again at each attempt, on the addresses the connection then uses (a
name that resolves elsewhere later cannot lead into the private network)."""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
# IPv6 prefixes that carry an IPv4 address in their last 32 bits (NAT64, RFC 6052 and 8215)
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class CallbackRefused(ValueError):
    """A callback URL this server will not post to; the message says why."""


class Unresolved(OSError):
    """A callback's host name does not resolve now (maybe for a while: try again later)."""


@dataclass(frozen=True)
class CallbackPolicy:
    hosts: tuple[str, ...]  # "host" (its scheme's port), "host:port" or "host:*", lower case
    allow_private: bool
    secret: str = field(repr=False)
    timeout_seconds: float  # one attempt, connection to answer
    retry_seconds: float  # attempts go on this long after the first

    @classmethod
    def of(cls, settings) -> "CallbackPolicy":
        """The policy of a ``Settings``' callback_* values."""
        return cls(tuple(host.lower() for host in settings.callback_hosts),
                   settings.callback_private, settings.callback_secret,
                   settings.callback_timeout_seconds, settings.callback_retry_seconds)


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # ASCII (an international name in its xn-- form)
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
    if (len(url) > MAX_URL_LENGTH or not url.isascii()
            or any(ord(c) <= 32 or ord(c) == 127 for c in url)):
        raise CallbackRefused(f"callback_url must be an ASCII URL of at most {MAX_URL_LENGTH} "
                              "characters, without spaces or control characters (%-escape "
                              "the rest; an international name in its xn-- form)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise CallbackRefused(f"callback_url is not a URL: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise CallbackRefused("callback_url must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise CallbackRefused("callback_url must carry no user or password (the signature "
                              "says the call is ours)")
    if parts.fragment:
        raise CallbackRefused("callback_url must have no #fragment")
    host = parts.hostname.lower()
    default = 443 if scheme == "https" else 80
    port = port or default
    name = f"[{host}]" if ":" in host else host
    allowed = (port == default and host in policy.hosts) or f"{name}:{port}" in policy.hosts \
        or f"{name}:*" in policy.hosts
    if not allowed:
        raise CallbackRefused(f"callback host {name}:{port} is not one this server calls "
                              "(callback_hosts)")
    return Target(scheme, host, port, (parts.path or "/") + (f"?{parts.query}" if parts.query
                                                            else ""))


def resolve(target: Target, policy: CallbackPolicy) -> list[str]:
    """The addresses to connect to, in order: the host's, each of which must be allowed
    (``CallbackRefused`` if one is not; ``Unresolved`` if there are none now)."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise Unresolved(f"callback host {target.host} does not resolve: {error}") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for address in addresses:
        refusal = _refusal(address, policy)
        if refusal:
            raise CallbackRefused(f"callback host {target.host} is at {address}, {refusal}")
    return addresses


def _refusal(address: str, policy: CallbackPolicy) -> str | None:
    """Why ``address`` may not be called, if it may not."""
    ip = ipaddress.ip_address(address.split("%")[0])
    for each in (ip, *_embedded_ipv4(ip)):
        if each.is_multicast or each.is_unspecified:
            return "an address that is not a host's"
        if policy.allow_private:
            continue
        if not each.is_global or each.is_reserved or getattr(each, "is_site_local", False):
            return "a private, loopback or reserved address (callback_private is off)"
    return None


def _embedded_ipv4(ip) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 one leads to (mapped, 6to4, Teredo, NAT64, compatible)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    found = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
    if any(ip in network for network in NAT64) or int(ip) >> 32 == 0:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return [each for each in found if each is not None]
