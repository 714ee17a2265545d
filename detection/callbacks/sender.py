"""One POST of a callback, bounded in time as a whole, to the address that was checked.

``http.client`` connects to that address (not to the name again: it could resolve elsewhere by
now), says the name in ``Host`` and, for https, in TLS (SNI and the certificate's check), and
follows no redirect. A timer shuts the socket once ``timeout`` has passed, so a receiver that
trickles its answer cannot hold the sending thread longer than that.
"""
from __future__ import annotations

import http.client
import socket
import ssl
import threading

from .targets import Target

MAX_ANSWER_BYTES = 4096  # of the receiver's body: read only to reuse nothing, then dropped


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a given address, verified for the target's host name."""

    def __init__(self, address: str, port: int, hostname: str, timeout: float):
        super().__init__(address, port, timeout=timeout)
        self.hostname = hostname
        self.tls = ssl.create_default_context()

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self.tls.wrap_socket(self.sock, server_hostname=self.hostname)


def post(target: Target, address: str, body: bytes, headers: dict[str, str],
         timeout: float) -> int:
    """The receiver's HTTP status; ``OSError`` (a timeout included) or
    ``http.client.HTTPException`` when it gave none."""
    if target.scheme == "https":
        connection = _PinnedHTTPS(address, target.port, target.host, timeout)
    else:
        connection = http.client.HTTPConnection(address, target.port, timeout=timeout)
    expired = threading.Event()
    deadline = threading.Timer(timeout, _shut, [connection, expired])
    deadline.start()
    try:
        connection.request("POST", target.path, body=body,
                           headers={**headers, "Host": target.host_header})
        answer = connection.getresponse()
        answer.read(MAX_ANSWER_BYTES)
        return answer.status
    except (OSError, http.client.HTTPException) as error:
        if expired.is_set() or isinstance(error, TimeoutError):
            raise TimeoutError(f"no answer within {timeout:g} s (timed out)") from None
        raise
    finally:
        deadline.cancel()
        connection.close()


def _shut(connection: http.client.HTTPConnection, expired: threading.Event) -> None:
    expired.set()
    sock = connection.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
