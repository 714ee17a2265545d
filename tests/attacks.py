"""What a hostile client sends: multipart bodies built to exhaust a parser, and ways to watch the
server while it receives them (open descriptors, memory). Shared by the hostile test modules."""
from __future__ import annotations

import os
import secrets
from pathlib import Path


def multipart_body(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body of ``(name, file name or None, content)`` parts."""
    boundary = secrets.token_hex(16)
    chunks = []
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
                      + content + b"\r\n")
    body = b"".join(chunks) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def many_parts_body(count: int) -> tuple[bytes, str]:
    """``count`` tiny file parts: WebOb opened a temp file for each (3000 ran web.py out of fds)."""
    return multipart_body([(f"f{i}", f"f{i}.bin", b"x") for i in range(count)])


def nested_multipart_body(depth: int) -> tuple[bytes, str]:
    """Multiparts inside multiparts (``multipart/mixed``), ``depth`` levels deep."""
    inner = b"x"
    for level in range(depth):
        boundary = f"b{level}"
        inner = (f"--{boundary}\r\nContent-Type: multipart/mixed; boundary=b{level - 1}\r\n\r\n"
                 .encode() + inner + f"\r\n--{boundary}--\r\n".encode())
    body = (b'--top\r\nContent-Disposition: form-data; name="image"\r\n'
            + f"Content-Type: multipart/mixed; boundary=b{depth - 1}\r\n\r\n".encode()
            + inner + b"\r\n--top--\r\n")
    return body, "multipart/form-data; boundary=top"


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")
