"""One POST of a callback, bounded in time as a whole, to the addresses that were checked.

``http.client`` connects to those addresses in turn (not to the name again: it could resolve
elsewhere by now), says the name in ``Host`` and, for https, in TLS (SNI and the certificate's
check), and follows no redirect. The answer's status line and headers are read, its body never.
A timer shuts the connection's socket once ``timeout`` has passed, so a receiver that trickles
its TLS handshake or its headers cannot hold the sending thread longer than that.
"""
from __future__ import annotations

import http.client
import socket
import ssl
import threading

from .targets import Target

TLS = ssl.create_default_context()


class _Attempt:
    """The sockets of one attempt, shut together when its time is up."""

    def __init__(self, timeout: float):
        self.expired = threading.Event()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.timer = threading.Timer(timeout, self.shut)

    def keep(self, sock: socket.socket) -> socket.socket:
        with self.lock:
            self.sockets.append(sock)
            if self.expired.is_set():
                self._shut(sock)
        return sock

    def shut(self) -> None:
        with self.lock:
            self.expired.set()
            for sock in self.sockets:
                self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Connection(http.client.HTTPConnection):
    """HTTP, or HTTPS verified for ``hostname``, to one address; its sockets kept by the
    attempt as soon as they exist."""

    def __init__(self, address: str, port: int, target: Target, attempt: _Attempt,
                 timeout: float):
        super().__init__(address, port, timeout=timeout)
        self.target, self.attempt = target, attempt

    def connect(self) -> None:
        super().connect()
        self.attempt.keep(self.sock)
        if self.target.scheme == "https":
            tls = TLS.wrap_socket(self.sock, server_hostname=self.target.host,
                                  do_handshake_on_connect=False)
            self.sock = self.attempt.keep(tls)
            tls.do_handshake()


def post(target: Target, addresses: list[str], body: bytes, headers: dict[str, str],
         timeout: float) -> int:
    """The receiver's HTTP status, from the first of ``addresses`` that takes a connection;
    ``OSError`` (``TimeoutError`` once ``timeout`` is up) or ``http.client.HTTPException``
    when none answered."""
    attempt = _Attempt(timeout)
    attempt.timer.start()
    try:
        for index, address in enumerate(addresses):
            connection = _Connection(address, target.port, target, attempt, timeout)
            try:
                try:
                    connection.connect()
                except OSError:
                    if index + 1 < len(addresses) and not attempt.expired.is_set():
                        continue  # the next address of the name
                    raise
                connection.request("POST", target.path, body=body,
                                   headers={**headers, "Host": target.host_header})
                status = connection.getresponse().status
                if attempt.expired.is_set():  # an answer cut short by the timer is none
                    raise TimeoutError
                return status
            finally:
                connection.close()
        raise OSError("the host has no address")
    except (OSError, http.client.HTTPException) as error:
        if attempt.expired.is_set() or isinstance(error, TimeoutError):
            raise TimeoutError(f"no answer within {timeout:g} s") from None
        raise
    finally:
        attempt.timer.cancel()
