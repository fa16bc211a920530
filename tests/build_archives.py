"""Real build archives for the builds tests: zip and tar.gz files, honest and hostile."""

from __future__ import annotations

import io
import json
import stat
import tarfile
import zipfile
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
