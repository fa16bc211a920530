"""Real build archives for the builds tests: zip and tar.gz files, honest and hostile."""

from __future__ import annotations

import gzip
import io
import json
import stat
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST: dict[str, Any] = {
    "schema": 1,
    "name": "arcade",
    "version": "1.0.0",
    "entry": ["python3", "game.py"],
    "resolution": [1280, 720],
    "fps": 60,
    "requires": {"gpu": False, "vram_mib": 0, "cpu_cores": 1, "ram_mib": 256},
    "inputs": ["keyboard", "mouse", "gamepad"],
    "price_ceiling_per_minute": 0.05,
}
GAME = b"print('arcade')\n"


def manifest_bytes(**changes: Any) -> bytes:
    return json.dumps(MANIFEST | changes).encode()


def zip_entry(
    name: str, data: bytes = b"", mode: int | None = None
) -> tuple[zipfile.ZipInfo, bytes]:
    """A zip member; `mode` (type and permission bits) is stored as Unix attributes."""
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    if mode is not None:
        info.create_system = 3
        info.external_attr = mode << 16
    return info, data


def zip_symlink(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    return zip_entry(name, target.encode(), stat.S_IFLNK | 0o777)


def write_zip(path: Path, entries: list[tuple[zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in entries:
            archive.writestr(info, data)
    return path


def tar_entry(
    name: str,
    data: bytes = b"",
    kind: bytes = tarfile.REGTYPE,
    link: str = "",
    mode: int = 0o644,
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def write_tar(path: Path, entries: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for info, data in entries:
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def game_zip(path: Path, manifest: bytes | None = None, **extra: bytes) -> Path:
    """An honest build: manifest.json, an executable game.py, and any `extra` files."""
    files = {"manifest.json": manifest or manifest_bytes(), "game.py": GAME} | extra
    return write_zip(
        path,
        [zip_entry(name, data, (stat.S_IFREG | 0o755) if name == "game.py" else None)
         for name, data in files.items()],
    )  # fmt: skip


def game_tar(path: Path, manifest: bytes | None = None, **extra: bytes) -> Path:
    files = {"manifest.json": manifest or manifest_bytes(), "game.py": GAME} | extra
    return write_tar(
        path,
        [tar_entry(f"./{name}", data, mode=0o755 if name == "game.py" else 0o644)
         for name, data in files.items()],
    )  # fmt: skip


def files_under(folder: Path) -> list[str]:
    """Every path under `folder`, relative, sorted: what a test expects to be there or not."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@dataclass
class RawMember:
    """One member of a zip written byte by byte (`raw_zip`): whatever a field is set to is
    written, true or not; `local` and `central` override single fields of one header
    ("name", "flags", "method", "crc", "compressed", "size", "offset" for central)."""

    name: str
    content: bytes = b""
    method: int = zipfile.ZIP_DEFLATED
    mode: int = stat.S_IFREG | 0o644
    data: bytes | None = None  # the compressed bytes; None: `content` compressed by `method`
    before: bytes = b""  # written just before the local header: data hidden between members
    local: dict[str, Any] = field(default_factory=dict)
    central: dict[str, Any] = field(default_factory=dict)


def raw_zip(
    path: Path,
    members: list[RawMember],
    *,
    before_directory: bytes = b"",
    after_end: bytes = b"",
    count: int | None = None,
) -> Path:
    """A zip of `members` with no tool between the test and the bytes: hostile layouts."""
    out = bytearray()
    centrals = []
    for member in members:
        if member.data is not None:
            data = member.data
        elif member.method == zipfile.ZIP_DEFLATED:
            packer = zlib.compressobj(9, zlib.DEFLATED, -15)
            data = packer.compress(member.content) + packer.flush()
        else:
            data = member.content
        true = {"name": member.name.encode(), "flags": 0, "method": member.method,
                "crc": zlib.crc32(member.content), "compressed": len(data),
                "size": len(member.content)}  # fmt: skip
        out += member.before
        header = true | {"offset": len(out)} | member.central
        local = true | member.local
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, local["flags"], local["method"], 0,
                           0x21, local["crc"], local["compressed"], local["size"],
                           len(local["name"]), 0) + local["name"] + data  # fmt: skip
        central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 0x0314, 20, header["flags"],
                              header["method"], 0, 0x21, header["crc"], header["compressed"],
                              header["size"], len(header["name"]), 0, 0, 0, 0,
                              member.mode << 16, header["offset"])  # fmt: skip
        centrals.append(central + header["name"])
    out += before_directory
    directory_at = len(out)
    for central in centrals:
        out += central
    number = len(members) if count is None else count
    out += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, number, number,
                       len(out) - directory_at, directory_at, 0)  # fmt: skip
    path.write_bytes(bytes(out + after_end))
    return path


def honest_members(**extra: bytes) -> list[RawMember]:
    """The honest build as `raw_zip` members: manifest.json, an executable game.py, `extra`."""
    return [RawMember("manifest.json", manifest_bytes()),
            RawMember("game.py", GAME, mode=stat.S_IFREG | 0o755),
            *(RawMember(name, data) for name, data in extra.items())]  # fmt: skip


def tar_gz_bytes(raw: bytes) -> bytes:
    """`raw` (a tar stream) gzipped, as an upload sends a tar.gz."""
    return gzip.compress(raw)
