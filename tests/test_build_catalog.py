"""The build catalog and studio keys: uploads stored by content with a SQLite row, refused
uploads leaving no blob, no row and no temporary file, names owned by the first studio."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tarfile
from pathlib import Path

import pytest

from builds.archive import ArchiveFormat
from builds.catalog import BuildCatalog
from builds.errors import (
    ArchiveError,
    BuildConflictError,
    BuildOwnershipError,
    BuildTooLargeError,
    CatalogError,
    ManifestError,
    StudioKeyError,
    UnsafeArchiveError,
)
from builds.members import ArchiveLimits
from builds.studio_keys import StudioKey, StudioKeys
from tests.build_archives import game_tar, game_zip, manifest_bytes, tar_entry, write_tar

NOW = "2025-03-04T05:06:07+00:00"
LATER = "2025-03-04T06:00:00+00:00"


@pytest.fixture
def catalog(tmp_path: Path) -> BuildCatalog:
    return BuildCatalog(tmp_path / "data", ArchiveLimits(max_archive_bytes=64 * 1024))


def store(catalog: BuildCatalog, archive: Path, studio: str = "acme", now: str = NOW):
    """Upload `archive` in 1 KiB chunks, as the HTTP edge streams it."""
    with catalog.start_upload() as pending, archive.open("rb") as source:
        while chunk := source.read(1024):
            pending.write(chunk)
        return pending.finish(studio, now)


def stored(catalog: BuildCatalog) -> tuple[list[str], list[str]]:
    """What is really there: the blob folder's files (temporary ones included) and the rows."""
    with sqlite3.connect(catalog.database) as db:
        rows = [row[0] for row in db.execute("SELECT sha256 FROM builds ORDER BY rowid")]
    return sorted(os.listdir(catalog.blobs)), rows


def test_an_upload_is_stored_by_its_sha256_with_a_row(catalog, tmp_path: Path) -> None:
    archive = game_zip(tmp_path / "arcade.zip")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    record, created = store(catalog, archive)
    assert created
    assert (record.sha256, record.size, record.format, record.studio, record.uploaded_at) == (
        digest, archive.stat().st_size, ArchiveFormat.ZIP, "acme", NOW
    )  # fmt: skip
    assert (record.manifest.name, record.manifest.version) == ("arcade", "1.0.0")
    assert stored(catalog) == ([f"{digest}.zip"], [digest])
    assert catalog.archive_path(record).read_bytes() == archive.read_bytes()
    assert catalog.get(digest) == record
    assert catalog.get("0" * 64) is None


def test_builds_are_listed_oldest_first_and_survive_a_reopen(catalog, tmp_path: Path) -> None:
    first, _ = store(catalog, game_zip(tmp_path / "a.zip"))
    second, _ = store(catalog, game_tar(tmp_path / "b.tar.gz", manifest_bytes(version="1.1.0")),
                      now=LATER)  # fmt: skip
    assert second.format is ArchiveFormat.TAR_GZ
    assert catalog.builds() == [first, second]
    assert catalog.latest("arcade") == second
    assert catalog.latest("zebra") is None
    reopened = BuildCatalog(catalog.root)
    assert reopened.builds() == [first, second]
    assert second.to_json() == {
        "name": "arcade",
        "version": "1.1.0",
        "sha256": second.sha256,
        "size": second.size,
        "format": "tar.gz",
        "studio": "acme",
        "uploaded_at": LATER,
        "manifest": second.manifest.to_dict(),
    }


def test_the_same_bytes_again_are_the_build_already_there(catalog, tmp_path: Path) -> None:
    archive = game_zip(tmp_path / "arcade.zip")
    record, _ = store(catalog, archive)
    again, created = store(catalog, archive, now=LATER)
    assert (again, created) == (record, False)  # the first upload's time is kept
    assert stored(catalog) == ([record.file_name], [record.sha256])


def test_a_name_belongs_to_the_studio_that_uploaded_it_first(catalog, tmp_path: Path) -> None:
    record, _ = store(catalog, game_zip(tmp_path / "a.zip"), studio="acme")
    for archive in (game_zip(tmp_path / "a.zip"), game_zip(tmp_path / "b.zip", other=b"2")):
        with pytest.raises(BuildOwnershipError) as caught:
            store(catalog, archive, studio="rival")
        assert str(caught.value) == (
            "the build name 'arcade' belongs to another studio; choose another name"
        )
    assert stored(catalog) == ([record.file_name], [record.sha256])


def test_a_version_is_uploaded_once(catalog, tmp_path: Path) -> None:
    record, _ = store(catalog, game_zip(tmp_path / "a.zip"))
    with pytest.raises(BuildConflictError) as caught:
        store(catalog, game_zip(tmp_path / "b.zip", patched=b"1"))
    assert str(caught.value) == (
        f"arcade 1.0.0 was uploaded before with other content (sha256 {record.sha256});"
        " a version never changes: upload it as a new version"
    )
    assert stored(catalog) == ([record.file_name], [record.sha256])


def test_an_oversize_upload_is_refused_while_streaming(catalog, tmp_path: Path) -> None:
    big = game_tar(tmp_path / "big.tar.gz", **{"noise.bin": os.urandom(80 * 1024)})
    with pytest.raises(BuildTooLargeError) as caught:
        store(catalog, big)
    assert str(caught.value) == "the upload is over the limit of 65536 bytes"
    assert stored(catalog) == ([], [])


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda folder: write_tar(folder / "slip.tar.gz", [
            tar_entry("manifest.json", manifest_bytes()), tar_entry("../../evil", b"x")]),
         UnsafeArchiveError, "refused member '../../evil': the path has a '..' component"),
        (lambda folder: write_tar(folder / "link.tar.gz", [
            tar_entry("manifest.json", manifest_bytes()),
            tar_entry("etc", kind=tarfile.SYMTYPE, link="/etc")]),
         UnsafeArchiveError, "refused member 'etc': the link points to an absolute path '/etc'"),
        (lambda folder: game_zip(folder / "bad.zip", manifest_bytes(name="Arcade!")),
         ManifestError, "manifest.json: name: expected 1 to 32 of a-z, 0-9 and '-', not"
                        " starting '-', got 'Arcade!'"),
        (lambda folder: game_zip(folder / "bomb.zip", zeros=bytes(3 * 1024 * 1024)),
         BuildTooLargeError, "the archive unpacks to more than 2097152 bytes (reached at"
                             " member 'zeros')"),
    ],
)  # fmt: skip
def test_a_hostile_or_bad_archive_leaves_nothing_behind(
    tmp_path: Path, make, error: type[Exception], message: str
) -> None:
    catalog = BuildCatalog(
        tmp_path / "data",
        ArchiveLimits(max_archive_bytes=64 * 1024, max_unpacked_bytes=2 * 1024 * 1024),
    )
    with pytest.raises(error) as caught:
        store(catalog, make(tmp_path))
    assert str(caught.value) == message
    assert stored(catalog) == ([], [])
    assert sorted(path.name for path in tmp_path.iterdir() if path.name != "data") == [
        make(tmp_path).name
    ]  # nothing escaped next to the data folder either


def test_a_dropped_upload_leaves_no_temporary_file(catalog) -> None:
    with catalog.start_upload() as pending:
        pending.write(b"PK\x03\x04 half an archive")
        assert stored(catalog) == ([pending.temp.name], [])
    assert stored(catalog) == ([], [])
    with pytest.raises(ArchiveError) as caught, catalog.start_upload() as pending:
        pending.write(b"PK\x03\x04 half an archive")
        pending.finish("acme", NOW)
    assert str(caught.value) == ("the zip archive is damaged: it has no end of central directory")
    assert stored(catalog) == ([], [])


def test_a_disk_failure_while_storing_rolls_the_row_back(
    catalog, tmp_path: Path, monkeypatch
) -> None:
    def full_disk(source: str, target: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(CatalogError) as caught:
        store(catalog, game_zip(tmp_path / "a.zip"))
    assert str(caught.value).startswith(f"cannot store the upload {catalog.blobs}/.upload-")
    assert str(caught.value).endswith(".tmp: [Errno 28] No space left on device")
    assert stored(catalog) == ([], [])


def test_opening_a_catalog_removes_what_a_crash_left(catalog, tmp_path: Path) -> None:
    record, _ = store(catalog, game_zip(tmp_path / "a.zip"))
    (catalog.blobs / ".upload-crashed.tmp").write_bytes(b"partial")
    (catalog.blobs / f"{'f' * 64}.zip").write_bytes(b"moved in, never committed")
    BuildCatalog(catalog.root)
    assert stored(catalog) == ([record.file_name], [record.sha256])


# Studio keys ------------------------------------------------------------------------------


@pytest.fixture
def keys(tmp_path: Path) -> StudioKeys:
    return StudioKeys(tmp_path / "keys" / "studio-keys.sqlite3")


def test_an_issued_key_authenticates_its_studio(keys) -> None:
    key, secret = keys.issue("Acme Games", NOW)
    assert key == StudioKey(key.key_id, "Acme Games", NOW)
    assert secret.startswith(f"{key.key_id}.") and len(secret) == len(key.key_id) + 44
    assert keys.authenticate(f"Bearer {secret}") == key
    assert keys.authenticate(f"bearer {secret}") == key
    assert secret.encode() not in keys.path.read_bytes()  # only its hash is kept


def test_a_revoked_key_is_refused_and_keeps_its_first_revocation(keys) -> None:
    key, secret = keys.issue("acme", NOW)
    other, other_secret = keys.issue("acme", NOW)
    assert keys.revoke(key.key_id, LATER).revoked_at == LATER
    assert keys.revoke(key.key_id, "2030-01-01T00:00:00+00:00").revoked_at == LATER
    with pytest.raises(StudioKeyError) as caught:
        keys.authenticate(f"Bearer {secret}")
    assert (caught.value.code, str(caught.value)) == (
        "revoked_key", f"studio key {key.key_id} was revoked at {LATER}"
    )  # fmt: skip
    assert keys.authenticate(f"Bearer {other_secret}") == other
    assert keys.issued_keys() == [StudioKey(key.key_id, "acme", NOW, LATER), other]


@pytest.mark.parametrize(
    ("header", "code", "message"),
    [
        (None, "missing", "send the studio key as 'Authorization: Bearer <key>'"),
        ("", "missing", "send the studio key as 'Authorization: Bearer <key>'"),
        ("Basic dXNlcjpwYXNz", "malformed",
         "the Authorization header is not 'Bearer sk_<16 hex>.<secret>'"),
        ("Bearer sk_123", "malformed",
         "the Authorization header is not 'Bearer sk_<16 hex>.<secret>'"),
        (f"Bearer sk_{'0' * 16}.{'A' * 43}", "unknown_key",
         f"no studio key sk_{'0' * 16} was issued here"),
    ],
)  # fmt: skip
def test_bad_credentials_are_refused_with_a_code(keys, header, code: str, message: str) -> None:
    with pytest.raises(StudioKeyError) as caught:
        keys.authenticate(header)
    assert (caught.value.code, str(caught.value)) == (code, message)


def test_a_wrong_secret_is_refused(keys) -> None:
    key, secret = keys.issue("acme", NOW)
    forged = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    with pytest.raises(StudioKeyError) as caught:
        keys.authenticate(f"Bearer {forged}")
    assert (caught.value.code, str(caught.value)) == (
        "wrong_secret", f"the secret of studio key {key.key_id} is wrong"
    )  # fmt: skip


def test_key_commands_refuse_what_does_not_fit(keys) -> None:
    with pytest.raises(StudioKeyError) as caught:
        keys.issue(" leading space", NOW)
    assert str(caught.value) == (
        "studio name ' leading space' must be 1 to 64 of letters, digits, ' ._-',"
        " starting with a letter or digit"
    )
    with pytest.raises(StudioKeyError) as caught:
        keys.revoke("sk_nope", NOW)
    assert str(caught.value) == (
        f"no studio key 'sk_nope' in {keys.path}; list the keys to find its id"
    )
    with pytest.raises(StudioKeyError) as caught:
        keys.issue("acme", "yesterday")
    assert str(caught.value) == "time 'yesterday' is not ISO 8601"
    assert keys.issued_keys() == []
