"""The build store: archives on disk by content (blobs/<sha256>.<zip|tar.gz>), metadata in
SQLite (builds.sqlite3), both under one data folder.

An upload is never visible half-done. Its bytes go to a temporary file in blobs/ while they
are hashed and counted (`PendingUpload.write`; over the size limit is refused on the spot);
`finish` then checks the archive and its manifest, and in one transaction checks who owns
the name, moves the file into place (os.replace: atomic within a folder) and inserts the
row. Any failure removes the temporary file, and a blob moved in before a failed commit.
A crash can leave a temporary file or a blob without a row; opening the catalog removes
both, so one server process should own a data folder.

Rules of a catalog: builds are immutable and addressed by their sha256; a name belongs to
the studio that first uploaded it (BuildOwnershipError for any other); a name and version
are uploaded once (BuildConflictError for other content); the same bytes again are
accepted as the build already there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from builds.archive import DEFAULT_LIMITS, ArchiveFormat, inspect_archive
from builds.database import transaction
from builds.errors import (
    BuildConflictError,
    BuildOwnershipError,
    BuildTooLargeError,
    CatalogError,
)
from builds.manifest import Manifest, manifest_from_dict
from builds.members import ArchiveLimits

SHA256 = re.compile(r"[0-9a-f]{64}")
DATABASE_NAME = "builds.sqlite3"
_TEMP_PREFIX = ".upload-"
_COLUMNS = "sha256, name, version, size, format, studio, uploaded_at, manifest"
_SCHEMA = """CREATE TABLE IF NOT EXISTS builds (
    sha256 TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    size INTEGER NOT NULL,
    format TEXT NOT NULL,
    studio TEXT NOT NULL,
    uploaded_at TEXT NOT NULL,
    manifest TEXT NOT NULL,
    UNIQUE (name, version)
)"""


@dataclass(frozen=True, slots=True)
class BuildRecord:
    """One stored build: its archive's hash, size and format, who uploaded it, and when."""

    sha256: str
    size: int
    format: ArchiveFormat
    studio: str
    uploaded_at: str  # ISO 8601
    manifest: Manifest

    @property
    def file_name(self) -> str:
        return f"{self.sha256}.{self.format.value}"

    def to_json(self) -> dict[str, Any]:
        """The record as the REST API shows it."""
        return {
            "name": self.manifest.name,
            "version": self.manifest.version,
            "sha256": self.sha256,
            "size": self.size,
            "format": self.format.value,
            "studio": self.studio,
            "uploaded_at": self.uploaded_at,
            "manifest": self.manifest.to_dict(),
        }


class BuildCatalog:
    """The builds under `root` (created if missing), checked against `limits`."""

    def __init__(self, root: Path, limits: ArchiveLimits = DEFAULT_LIMITS) -> None:
        self.root = root
        self.limits = limits
        self.blobs = root / "blobs"
        self.database = root / DATABASE_NAME
        self.blobs.mkdir(parents=True, exist_ok=True)
        with transaction(self.database) as db:
            db.execute(_SCHEMA)
        self._remove_leftovers()
        # The newest upload of each name, asked for on every Play: kept here, not queried
        # (one process owns the folder, and builds never change once stored).
        self._latest = {record.manifest.name: record for record in self.builds()}

    def start_upload(self) -> PendingUpload:
        """A temporary file to stream an upload into; use it as a context manager."""
        return PendingUpload(self)

    def get(self, sha256: str) -> BuildRecord | None:
        with transaction(self.database, write=False) as db:
            cursor = db.execute(f"SELECT {_COLUMNS} FROM builds WHERE sha256 = ?", (sha256,))
            found = cursor.fetchone()
        return None if found is None else _record(found)

    def latest(self, name: str) -> BuildRecord | None:
        """The newest upload of the game `name`: what a player asking for it gets."""
        return self._latest.get(name)

    def builds(self) -> list[BuildRecord]:
        """Every build, oldest upload first."""
        with transaction(self.database, write=False) as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM builds ORDER BY uploaded_at, rowid")
            return [_record(row) for row in rows.fetchall()]

    def archive_path(self, record: BuildRecord) -> Path:
        return self.blobs / record.file_name

    def _store(self, temp: Path, record: BuildRecord) -> tuple[BuildRecord, bool]:
        """Move `temp` into place and insert `record`, or find the same bytes already there."""
        name, version = record.manifest.name, record.manifest.version
        blob = self.archive_path(record)
        placed = False
        try:
            with transaction(self.database) as db:
                owner = db.execute("SELECT studio FROM builds WHERE name = ? LIMIT 1", (name,))
                owned_by = owner.fetchone()
                if owned_by is not None and owned_by[0] != record.studio:
                    raise BuildOwnershipError(
                        f"the build name {name!r} belongs to another studio; choose another name"
                    )
                found = db.execute(f"SELECT {_COLUMNS} FROM builds WHERE sha256 = ?",
                                   (record.sha256,)).fetchone()  # fmt: skip
                if found is not None:
                    temp.unlink()
                    return _record(found), False
                clash = db.execute(
                    "SELECT sha256 FROM builds WHERE name = ? AND version = ?", (name, version)
                ).fetchone()
                if clash is not None:
                    raise BuildConflictError(
                        f"{name} {version} was uploaded before with other content (sha256"
                        f" {clash[0]}); a version never changes: upload it as a new version"
                    )
                db.execute(
                    f"INSERT INTO builds ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
                    (record.sha256, name, version, record.size, record.format.value,
                     record.studio, record.uploaded_at, json.dumps(record.manifest.to_dict())),
                )  # fmt: skip
                os.replace(temp, blob)
                placed = True
        except BaseException:
            if placed:  # the commit failed after the move
                blob.unlink(missing_ok=True)
            raise
        self._latest[name] = record
        return record, True

    def _remove_leftovers(self) -> None:
        """Temporary files and row-less blobs that a crashed process left behind."""
        with transaction(self.database, write=False) as db:
            known = {f"{sha}.{fmt}" for sha, fmt in db.execute("SELECT sha256, format FROM builds")}
        for path in self.blobs.iterdir():
            if path.name not in known:  # temporary files never are
                path.unlink(missing_ok=True)


class PendingUpload:
    """An upload on its way into the catalog: `write` its bytes, then `finish` (blocking: from
    a thread in async code) or leave the `with` block to drop it."""

    def __init__(self, catalog: BuildCatalog) -> None:
        self.catalog = catalog
        self.size = 0
        self._hash = hashlib.sha256()
        try:
            fd, name = tempfile.mkstemp(dir=catalog.blobs, prefix=_TEMP_PREFIX, suffix=".tmp")
        except OSError as exc:
            raise CatalogError(f"cannot store an upload in {catalog.blobs}: {exc}") from None
        self.temp = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._finishing = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.abort()

    def write(self, chunk: bytes) -> None:
        """Append `chunk`; over the catalog's archive limit the upload is dropped and refused."""
        self.size += len(chunk)
        if self.size > self.catalog.limits.max_archive_bytes:
            self.abort()
            raise BuildTooLargeError(
                f"the upload is over the limit of {self.catalog.limits.max_archive_bytes} bytes"
            )
        self._hash.update(chunk)
        try:
            self._file.write(chunk)
        except OSError as exc:  # the disk is full, say: the server's problem, not the studio's
            self.abort()
            raise CatalogError(f"cannot store the upload in {self.temp}: {exc}") from None

    def finish(self, studio: str, now_iso: str) -> tuple[BuildRecord, bool]:
        """Check the archive and store it for `studio`: the record, and whether it is new
        (False: these bytes were stored before). Raises BuildError subclasses; either way the
        temporary file is gone when this returns."""
        self._finishing = True  # from here this method owns the temporary file
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            inspection = inspect_archive(self.temp, self.catalog.limits)
            record = BuildRecord(self._hash.hexdigest(), self.size, inspection.format, studio,
                                 now_iso, inspection.manifest)  # fmt: skip
            return self.catalog._store(self.temp, record)  # moves or removes the file
        except OSError as exc:
            self._remove()
            raise CatalogError(f"cannot store the upload {self.temp}: {exc}") from None
        except BaseException:
            self._remove()
            raise

    def abort(self) -> None:
        """Drop the upload (no-op once `finish` has begun: it cleans up after itself)."""
        if not self._finishing:
            self._remove()

    def _remove(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self.temp.unlink()


def _record(row: tuple[Any, ...]) -> BuildRecord:
    sha256, _name, _version, size, archive_format, studio, uploaded_at, manifest = row
    return BuildRecord(sha256, size, ArchiveFormat(archive_format), studio, uploaded_at,
                       manifest_from_dict(json.loads(manifest)))  # fmt: skip
