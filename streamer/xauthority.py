"""Xauthority files (libXau's format), so that only holders of a display's cookie draw on it.

An X server started with `-auth FILE` accepts a client only if it presents a cookie from that
file (MIT-MAGIC-COOKIE-1); Xvfb without it accepts anyone who reaches its socket. Each entry
is: family (2 bytes, big-endian), then address, display number, auth name and auth data, each
as a 2-byte big-endian length and its bytes (libXau, AuRead.c). Clients pick the entry for
their display: libXau (libxcb: x11grab, SDL) takes FamilyWild for any address; python-xlib
only FamilyLocal with the host's name; an empty number matches any display for both.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

FAMILY_LOCAL = 256
FAMILY_WILD = 65535
COOKIE_NAME = b"MIT-MAGIC-COOKIE-1"
COOKIE_BYTES = 16


def _counted(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def entry(family: int, address: bytes, number: str, cookie: bytes) -> bytes:
    """One Xauthority entry for `cookie` (MIT-MAGIC-COOKIE-1)."""
    if len(cookie) != COOKIE_BYTES:
        raise ValueError(f"an MIT-MAGIC-COOKIE-1 is {COOKIE_BYTES} bytes, got {len(cookie)}")
    return (
        struct.pack(">H", family)
        + _counted(address)
        + _counted(number.encode())
        + _counted(COOKIE_NAME)
        + _counted(cookie)
    )


def cookie_file(cookies: Mapping[str, bytes], hostname: str) -> bytes:
    """A file with each display's cookie ("" as the number: any display), for libXau and
    python-xlib clients alike."""
    return b"".join(
        entry(family, address, number, cookie)
        for number, cookie in sorted(cookies.items())
        for family, address in ((FAMILY_WILD, b""), (FAMILY_LOCAL, hostname.encode()))
    )


def entries(data: bytes) -> list[tuple[int, bytes, str, bytes, bytes]]:
    """(family, address, number, name, data) of each entry; ValueError if truncated."""
    found, offset = [], 0
    while offset < len(data):
        if offset + 2 > len(data):
            raise ValueError(f"truncated Xauthority entry at byte {offset}")
        (family,) = struct.unpack_from(">H", data, offset)
        offset += 2
        fields = []
        for _ in range(4):
            if offset + 2 > len(data):
                raise ValueError(f"truncated Xauthority entry at byte {offset}")
            (length,) = struct.unpack_from(">H", data, offset)
            if offset + 2 + length > len(data):
                raise ValueError(f"truncated Xauthority entry at byte {offset}")
            fields.append(data[offset + 2 : offset + 2 + length])
            offset += 2 + length
        address, number, name, cookie = fields
        found.append((family, address, number.decode(), name, cookie))
    return found
