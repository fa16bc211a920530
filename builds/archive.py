"""Reading and unpacking build archives (zip, tar.gz) by the rules of builds/members.py.

The format is told by the file's first bytes, never by its name. Both readers feed every
member to one `MemberCheck` before anything is written, and unpacking writes only what was
accepted: files with O_EXCL|O_NOFOLLOW (never through a link, never over a file), folders,
hard links to files already written, and symbolic links last, after every file, so no later
member could be written through one. The archive is read whole, at upload as at unpacking:
every file member is read to its end (and hashed: `Inspection.file_sha256`), held to exactly
the size its headers declare (refused as soon as it passes it), so the unpacked total checked
on the headers is the one read. A zip's local headers and central directory must agree and
leave no byte unaccounted for (builds/zip_layout.py, which also inflates members itself); a
tar's extension headers are bounded in size and in number before one member. Names an
archive chose reach messages only cut short and escaped (builds.errors.shown). Blocking: call
it from a thread (`asyncio.to_thread`) in async code.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import posixpath
import shutil
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import IO

from builds.errors import (
    ArchiveError,
    BuildTooLargeError,
    ManifestError,
    UnsafeArchiveError,
    escaped,
    shown,
)
from builds.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest, parse_manifest
from builds.members import MAX_NAME_BYTES, ArchiveLimits, Member, MemberCheck, MemberKind
from builds.zip_layout import MemberReader, Span, check_layout

CHUNK = 256 * 1024
ZIP_DIRECTORY_BYTES_PER_MEMBER = 1024  # caps the central directory zipfile reads into memory
EMPTY_DEFLATE = 2  # bytes of a deflate stream of nothing (RFC 1951: one empty final block)
DEFAULT_LIMITS = ArchiveLimits()
_READ_ERRORS = (
    zipfile.BadZipFile, tarfile.TarError, gzip.BadGzipFile, zlib.error, EOFError,
    NotImplementedError,  # zipfile: a compression method it lacks
    UnicodeDecodeError,  # zipfile: a name flagged UTF-8 that is not
    ValueError, OverflowError, struct.error,  # numbers in headers that make no sense
)  # fmt: skip
_TAR_KINDS = {
    tarfile.DIRTYPE: MemberKind.DIRECTORY, tarfile.SYMTYPE: MemberKind.SYMLINK,
    tarfile.LNKTYPE: MemberKind.HARDLINK, tarfile.CHRTYPE: MemberKind.CHAR_DEVICE,
    tarfile.BLKTYPE: MemberKind.BLOCK_DEVICE, tarfile.FIFOTYPE: MemberKind.FIFO,
    tarfile.GNUTYPE_SPARSE: MemberKind.SPARSE,
}  # fmt: skip
_MODE_KINDS = {
    stat.S_IFREG: MemberKind.FILE, stat.S_IFDIR: MemberKind.DIRECTORY,
    stat.S_IFLNK: MemberKind.SYMLINK, stat.S_IFCHR: MemberKind.CHAR_DEVICE,
    stat.S_IFBLK: MemberKind.BLOCK_DEVICE, stat.S_IFIFO: MemberKind.FIFO,
    stat.S_IFSOCK: MemberKind.SOCKET,
}  # fmt: skip

Opener = Callable[[], IO[bytes]]  # a member's content, read from the archive


class ArchiveFormat(Enum):
    ZIP = "zip"
    TAR_GZ = "tar.gz"

    @property
    def media_type(self) -> str:
        return "application/zip" if self is ArchiveFormat.ZIP else "application/gzip"


@dataclass(frozen=True, slots=True)
class Inspection:
    """An archive that passed every check, and its manifest."""

    format: ArchiveFormat
    members: tuple[Member, ...]
    unpacked_bytes: int
    manifest: Manifest
    file_sha256: dict[str, str]  # every regular file's content (a hard link's: its target's)


def detect_format(head: bytes) -> ArchiveFormat:
    """The format of a file that starts with `head` (its first 4 bytes suffice)."""
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):  # a local header; the end of an empty zip
        return ArchiveFormat.ZIP
    if head[:2] == b"\x1f\x8b":
        return ArchiveFormat.TAR_GZ
    raise ArchiveError("the file is neither a zip nor a tar.gz archive (by its first bytes)")


def inspect_archive(path: Path, limits: ArchiveLimits = DEFAULT_LIMITS) -> Inspection:
    """Check every member of the archive at `path` and read its manifest; write nothing."""
    return _walk(path, limits, None)


def extract_archive(path: Path, dest: Path, limits: ArchiveLimits = DEFAULT_LIMITS) -> Inspection:
    """Check and unpack the archive at `path` into `dest`, an empty folder the caller made.
    On error `dest` is left half-written: unpack into a temporary folder and remove it then."""
    writer = _Writer(dest)
    inspection = _walk(path, limits, writer)
    writer.finish()
    return inspection


def _walk(path: Path, limits: ArchiveLimits, writer: _Writer | None) -> Inspection:
    check = MemberCheck(limits)
    manifest: bytes | None = None
    digests: dict[str, str] = {}
    with open(path, "rb") as source:
        archive_format = detect_format(source.read(4))
        source.seek(0)
        reader = _zip_members if archive_format is ArchiveFormat.ZIP else _tar_members
        try:
            for raw_name, kind, size, link, mode, opener in reader(source, limits):
                member = check.add(raw_name, kind, size, link, mode)
                if member is None:
                    continue
                if kind is MemberKind.FILE:  # read whole, written or not: its size is proven
                    head, digests[member.name] = _read_whole(member, opener, writer)
                    if member.name == MANIFEST_NAME:
                        manifest = head
                elif kind is MemberKind.HARDLINK:
                    digests[member.name] = digests[member.link]
                if writer is not None and kind is not MemberKind.FILE:
                    writer.add(member)
        except _READ_ERRORS as exc:
            reason = escaped(str(exc), 120)
            raise ArchiveError(f"the {archive_format.value} archive is damaged: {reason}") from None
    if manifest is None:
        raise ArchiveError(_missing_manifest(check.members))
    parsed = parse_manifest(manifest)
    check_entry_file(parsed, check.members)
    return Inspection(archive_format, tuple(check.members), check.unpacked_bytes, parsed, digests)


def _read_whole(member: Member, opener: Opener, writer: _Writer | None) -> tuple[bytes, str]:
    """Read a file member to its end (written under the writer's folder when there is one):
    its first MAX_MANIFEST_BYTES + 1 bytes and its sha256. The readers hold every member to
    its declared size, so the check's unpacked total is what is read."""
    digest = hashlib.sha256()
    head = b""
    with contextlib.ExitStack() as stack:
        content = stack.enter_context(opener())
        out = None if writer is None else stack.enter_context(writer.create(member))
        while chunk := content.read(CHUNK):
            if len(head) <= MAX_MANIFEST_BYTES:
                head += chunk[: MAX_MANIFEST_BYTES + 1 - len(head)]
            digest.update(chunk)
            if out is not None:
                out.write(chunk)
    return head, digest.hexdigest()


def check_entry_file(manifest: Manifest, members: list[Member]) -> None:
    """Refuse a manifest whose entry runs no regular file of the archive, or a program that is
    not executable: a build runs its own file, never one the container happens to have."""
    field, path = manifest.entry_file
    by_name = {member.name: member for member in members}
    member = by_name.get(path)
    if member is not None and member.kind is MemberKind.HARDLINK:
        member = by_name.get(member.link)  # the file it shares; its mode is the one on disk
    if member is None or member.kind is not MemberKind.FILE:
        what = "no member" if path not in by_name else f"a {by_name[path].kind.value}"
        raise ManifestError(
            field,
            f"{shown(path)} is {what} of the archive; the entry must run a regular file of the"
            " build (see builds/MANIFEST.md)",
        )
    if field == "entry[0]" and not member.executable:
        raise ManifestError(
            field,
            f"{shown(path)} is not executable in the archive; set its owner's execute bit"
            " (zip: with a tool that stores Unix modes) or run it with python3",
        )


def _missing_manifest(members: list[Member]) -> str:
    nested = [m.name for m in members if posixpath.basename(m.name) == MANIFEST_NAME]
    if nested:
        return (
            f"{MANIFEST_NAME} must be at the archive's root, not {shown(nested[0])}: archive the"
            " build folder's contents rather than the folder"
        )
    return f"the archive has no {MANIFEST_NAME} at its root (see builds/MANIFEST.md)"


Entry = tuple[str, MemberKind, int, str, int, Opener]  # name, kind, size, link, mode, content


MAX_TAR_HEADER_BYTES = 64 * 1024  # a pax or GNU long-name header; tarfile reads one whole
MAX_TAR_CHAIN = 4  # extension headers before one member (long name, long link, pax, global)
_TAR_EXTENSIONS = frozenset({tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                             tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE})  # fmt: skip
_CHAIN = "_gamecast_chain"  # on the TarFile: extension headers read since the last member


class _BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses, before tarfile reads them into memory, an extended header (pax
    or GNU long name) larger than MAX_TAR_HEADER_BYTES, and a chain of more than
    MAX_TAR_CHAIN of them before one member: a 40 kB tar.gz can declare a header of gigabytes,
    and tarfile reads a chain by recursion, one stack frame and one whole header per link."""

    def _proc_member(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type not in _TAR_EXTENSIONS:
            setattr(tarfile, _CHAIN, 0)
            return super()._proc_member(tarfile)  # type: ignore[misc,no-any-return]
        _refuse_large_header(self)
        chain = getattr(tarfile, _CHAIN, 0) + 1
        if chain > MAX_TAR_CHAIN:
            raise ArchiveError(
                f"the tar archive has more than {MAX_TAR_CHAIN} extended headers in a row"
                f" (at offset {self.offset}); a member needs at most {MAX_TAR_CHAIN}"
            )
        setattr(tarfile, _CHAIN, chain)
        return super()._proc_member(tarfile)  # type: ignore[misc,no-any-return]


def _refuse_large_header(info: tarfile.TarInfo) -> None:
    if info.size > MAX_TAR_HEADER_BYTES:
        raise BuildTooLargeError(
            f"the archive has a {info.size}-byte extended tar header; at most"
            f" {MAX_TAR_HEADER_BYTES} are accepted"
        )


def _tar_members(source: IO[bytes], limits: ArchiveLimits) -> Iterator[Entry]:
    # Iterated, not getmembers(): a hostile header is refused before the rest is decompressed.
    with tarfile.open(fileobj=source, mode="r:gz", tarinfo=_BoundedTarInfo) as tar:
        for info in tar:
            kind = _TAR_KINDS.get(info.type, MemberKind.FILE if info.isreg() else MemberKind.OTHER)
            if info.sparse is not None:  # a pax (GNU.sparse.*) sparse file reads as regular
                kind = MemberKind.SPARSE

            def opener(info: tarfile.TarInfo = info) -> IO[bytes]:
                content = tar.extractfile(info)
                assert content is not None, "only regular files are opened"
                return io.BufferedReader(_Counted(content, info.name, info.size), CHUNK)

            yield info.name, kind, info.size, info.linkname, info.mode, opener


def _zip_members(source: IO[bytes], limits: ArchiveLimits) -> Iterator[Entry]:
    _check_zip_directory(source, limits)
    with zipfile.ZipFile(source) as archive:
        infos = archive.infolist()
        for info in infos:  # before the layout's own messages, which would be less clear
            if info.flag_bits & 0x1:
                raise ArchiveError(
                    f"member {shown(info.filename)} is encrypted; upload it unencrypted"
                )
        spans = check_layout(source.fileno(), infos)
        for info, span in zip(infos, spans, strict=True):
            mode = info.external_attr >> 16 if info.create_system == 3 else 0  # 3: Unix
            kind = _MODE_KINDS.get(stat.S_IFMT(mode), MemberKind.OTHER) if mode else None
            if kind is None or stat.S_IFMT(mode) == 0:  # no Unix type: tell by the name
                kind = MemberKind.DIRECTORY if info.is_dir() else MemberKind.FILE
            if (kind is MemberKind.DIRECTORY) != info.is_dir():
                # Info-ZIP decides by the trailing "/", we by the mode: one archive, two builds.
                raise UnsafeArchiveError(
                    info.filename, "its mode and its name disagree on whether it is a folder"
                )
            empty = EMPTY_DEFLATE if info.compress_type == zipfile.ZIP_DEFLATED else 0
            if kind is MemberKind.DIRECTORY and (info.file_size or info.compress_size > empty):
                raise UnsafeArchiveError(info.filename, "a folder that carries bytes")

            def opener(span: Span = span) -> IO[bytes]:
                return io.BufferedReader(MemberReader(source.fileno(), span), CHUNK)

            link = ""
            if kind is MemberKind.SYMLINK:  # a zip keeps a link's target as its content
                if info.file_size > MAX_NAME_BYTES:
                    raise UnsafeArchiveError(
                        info.filename, f"the link's target is longer than {MAX_NAME_BYTES} bytes"
                    )
                with opener() as content:
                    link = content.read().decode("utf-8", "surrogateescape")
            yield info.filename, kind, info.file_size, link, mode or 0o644, opener


class _Counted(io.RawIOBase):
    """A tar member's content, held to its declared size (tarfile reads exactly that much, and
    fails on a short member; this says so in the builds' terms whatever the reader does)."""

    def __init__(self, inner: IO[bytes], name: str, size: int) -> None:
        super().__init__()
        self._inner, self._name, self._size, self._read = inner, name, size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(buffer))
        self._read += len(data)
        if self._read > self._size:
            raise BuildTooLargeError(
                f"member {shown(self._name)} unpacks to more than the {self._size} bytes its"
                " header declares"
            )
        if not data and self._read != self._size:
            raise ArchiveError(
                f"member {shown(self._name)} unpacks to {self._read} bytes, not the"
                f" {self._size} its header declares"
            )
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._inner.close()
        super().close()


def _check_zip_directory(source: IO[bytes], limits: ArchiveLimits) -> None:
    """Refuse a zip whose central directory (which zipfile reads whole into memory) counts
    more members, or more bytes, than `limits` allow; zip64 records are read when present."""
    size = source.seek(0, os.SEEK_END)
    source.seek(max(0, size - (22 + 0xFFFF + 20)))  # end record, comment, zip64 locator
    tail = source.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        raise ArchiveError("the zip archive is damaged: it has no end of central directory")
    count, directory_bytes = struct.unpack_from("<HI", tail, at + 10)
    if at >= 20 and tail[at - 20 : at - 16] == b"PK\x06\x07":  # the zip64 locator
        # Python's zipfile reads the zip64 record just before the locator, whatever offset
        # the locator names; both places are read and the larger claim is the one judged.
        (offset,) = struct.unpack_from("<Q", tail, at - 12)
        for place in {offset, size - len(tail) + at - 20 - 56}:
            source.seek(max(0, place))
            record = source.read(56)
            if record[:4] == b"PK\x06\x06" and len(record) == 56:
                found, found_bytes = struct.unpack_from("<QQ", record, 32)
                count, directory_bytes = max(count, found), max(directory_bytes, found_bytes)
    source.seek(0)
    if count > limits.max_members:
        raise BuildTooLargeError(f"the archive has more than {limits.max_members} members")
    if directory_bytes > limits.max_members * ZIP_DIRECTORY_BYTES_PER_MEMBER:
        raise BuildTooLargeError(
            f"the zip's central directory is {directory_bytes} bytes, more than"
            f" {ZIP_DIRECTORY_BYTES_PER_MEMBER} per member allowed"
        )


class _Writer:
    """Writes accepted members under `dest`; symbolic links wait for `finish`."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.symlinks: list[Member] = []

    def add(self, member: Member) -> None:
        """A folder, a hard link, or a symbolic link (kept for `finish`)."""
        target = self.dest / member.name
        if member.kind is MemberKind.DIRECTORY:
            target.mkdir(0o755, parents=True, exist_ok=True)
            return
        if member.kind is MemberKind.SYMLINK:
            self.symlinks.append(member)
            return
        assert member.kind is MemberKind.HARDLINK, "files are written through `create`"
        target.parent.mkdir(0o755, parents=True, exist_ok=True)
        os.link(self.dest / member.link, target, follow_symlinks=False)

    def create(self, member: Member) -> IO[bytes]:
        """A new file for `member`'s content, never through a link, never over a file."""
        target = self.dest / member.name
        target.parent.mkdir(0o755, parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        return open(os.open(target, flags, 0o755 if member.executable else 0o644), "wb")

    def finish(self) -> None:
        for member in self.symlinks:
            target = self.dest / member.name
            target.parent.mkdir(0o755, parents=True, exist_ok=True)
            os.symlink(member.link, target)


def remove_tree(path: Path) -> None:
    """Remove a temporary file or folder, if there; links inside are removed, not followed."""
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
