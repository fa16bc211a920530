"""A zip archive checked whole: its two directories agree and its members' bytes are what
the headers declare, before any member is trusted.

A zip names every member twice, in the central directory at its end (which zipfile and most
tools read) and in a local header before the member's data (which streaming tools read).
A hostile archive makes them disagree, so that two tools see two builds; or hides bytes
between members, or makes members overlap (the "overlapping zip bomb"). `check_layout`
walks the local headers in offset order against the central directory (zipfile has read it)
and refuses, naming the member (cut short: builds.errors.shown):

- a central directory that does not end where its end record begins (bytes before the
  archive or between the directory and its end), a member count other than the directory's,
  bytes after the end record's comment, a directory of more than one disk;
- a local header missing, or disagreeing with the central directory on the name, the flags,
  the compression method, the CRC or the sizes (a data descriptor, flag bit 3, is read and
  held to the same values);
- a compression method other than stored (0) or deflate (8): what zip tools write for builds;
- the first member not at offset 0, a gap (hidden data) or an overlap between one member's
  end and the next one's header, or between the last member and the central directory.

`MemberReader` then inflates a member itself (not through zipfile, which would silently stop
at the declared size and ignore what follows): it refuses as soon as the output passes the
declared size, and at the end checks that the output has exactly that size, that the deflate
stream ends exactly at the declared compressed size, and the CRC. Blocking file reads
(os.pread: no shared file position with zipfile).
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass

from builds.errors import ArchiveError, BuildTooLargeError, shown

CHUNK = 256 * 1024
METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_LOCAL = struct.Struct("<4s5H3L2H")  # signature, version, flags, method, time, date, crc,
# compressed size, size, name length, extra length: 30 bytes
_END = struct.Struct("<4s4H2LH")  # the end of central directory record: 22 bytes
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # 20 bytes
_ZIP64_END = struct.Struct("<4sQ2H2L4Q")  # 56 bytes
_CENTRAL_FIXED = 46
_FULL = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Span:
    """Where one member's compressed bytes lie, as both its headers say."""

    name: str
    data_start: int
    compressed: int
    size: int
    method: int
    crc: int


def check_layout(fd: int, infos: list[zipfile.ZipInfo]) -> list[Span]:
    """The spans of `infos` (zipfile's reading of the central directory of the file `fd`), in
    the same order, once the whole file has been found consistent; else ArchiveError."""
    file_size = os.fstat(fd).st_size
    directory_at, directory_size, count = _directory(fd, file_size)
    if count != len(infos):
        raise ArchiveError(
            f"the zip's end record counts {count} members, its central directory holds {len(infos)}"
        )
    listed = sum(_CENTRAL_FIXED + len(_raw_name(i)) + len(i.extra) + len(i.comment) for i in infos)
    if listed != directory_size:
        raise ArchiveError(
            f"the zip's central directory is {directory_size} bytes by its end record, but its"
            f" entries take {listed}"
        )
    spans: dict[int, Span] = {}
    expected = 0
    for index, info in sorted(enumerate(infos), key=lambda pair: pair[1].header_offset):
        name = shown(info.filename)
        if info.header_offset > expected:
            raise ArchiveError(
                f"the zip hides {info.header_offset - expected} bytes before member {name}"
            )
        if info.header_offset < expected:
            raise ArchiveError(f"member {name} overlaps the member before it")
        spans[index], expected = _local(fd, info, name)
    if expected != directory_at:
        gap = directory_at - expected
        raise ArchiveError(
            f"the zip hides {gap} bytes before its central directory"
            if gap > 0
            else "the zip's last member overlaps its central directory"
        )
    return [spans[index] for index in range(len(infos))]


def _directory(fd: int, file_size: int) -> tuple[int, int, int]:
    """(offset, size, member count) of the central directory, its end records checked."""
    tail_at = max(0, file_size - (_END.size + 0xFFFF))
    tail = _read(fd, tail_at, file_size - tail_at, "its end record")
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + _END.size > len(tail):
        raise ArchiveError("the zip archive is damaged: it has no end of central directory")
    _, disk, directory_disk, on_disk, count, size, offset, comment = _END.unpack_from(tail, at)
    end_at = tail_at + at
    if end_at + _END.size + comment != file_size:
        raise ArchiveError(
            f"the zip has {file_size - end_at - _END.size - comment} bytes after its end record"
            " and comment (or a comment that is not its own)"
        )
    if disk or directory_disk or on_disk != count:
        raise ArchiveError("the zip spans several disks; upload it as one file")
    directory_end = end_at
    if end_at >= _ZIP64_LOCATOR.size + _ZIP64_END.size:
        locator = _read(fd, end_at - _ZIP64_LOCATOR.size, _ZIP64_LOCATOR.size, "its end record")
        signature, _, record_at, _ = _ZIP64_LOCATOR.unpack(locator)
        if signature == b"PK\x06\x07":
            directory_end = end_at - _ZIP64_LOCATOR.size - _ZIP64_END.size
            record = _ZIP64_END.unpack(_read(fd, directory_end, _ZIP64_END.size, "its record"))
            if record_at != directory_end or record[0] != b"PK\x06\x06" or record[1] != 44:
                raise ArchiveError(
                    "the zip's zip64 end record is not where its locator points, or is not"
                    " a plain 56-byte record"
                )
            count, size, offset = record[7], record[8], record[9]
    if offset + size != directory_end:
        raise ArchiveError(
            "the zip's central directory does not end where its end record begins: bytes are"
            " hidden before the archive or after the directory"
        )
    return offset, size, count


def _local(fd: int, info: zipfile.ZipInfo, name: str) -> tuple[Span, int]:
    """The member's span, and where the next member must begin."""
    header = _read(fd, info.header_offset, _LOCAL.size, f"member {name}'s local header")
    (signature, _, flags, method, _, _, crc, compressed, size, name_length, extra_length) = (
        _LOCAL.unpack(header)
    )
    if signature != b"PK\x03\x04":
        raise ArchiveError(f"member {name} has no local header where the directory says")
    raw = _read(fd, info.header_offset + _LOCAL.size, name_length + extra_length, "a header")
    local_name, extra = raw[:name_length], raw[name_length:]

    def disagree(what: str) -> ArchiveError:
        return ArchiveError(
            f"member {name}: its local header and the central directory disagree on {what}"
        )

    if local_name != _raw_name(info):
        raise disagree(f"its name (the local header says {shown(local_name.decode('cp437'))})")
    if flags != info.flag_bits:
        raise disagree(f"the flags ({flags:#x}, {info.flag_bits:#x})")
    if method != info.compress_type:
        raise disagree(f"the compression method ({method}, {info.compress_type})")
    if method not in METHODS:
        raise ArchiveError(
            f"member {name} is compressed with method {method}; builds use stored (0) or"
            " deflate (8)"
        )
    if method == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise ArchiveError(f"member {name} is stored, but its two sizes differ")
    wide = False
    if _FULL in (compressed, size):
        size, compressed, wide = *_zip64_sizes(extra, size, compressed, name), True
    data_start = info.header_offset + _LOCAL.size + name_length + extra_length
    end = data_start + info.compress_size
    if flags & 0x8:  # a data descriptor after the data holds the CRC and sizes
        if (crc, compressed, size) != (0, 0, 0) and (crc, compressed, size) != (
            info.CRC, info.compress_size, info.file_size
        ):  # fmt: skip
            raise disagree("the CRC or the sizes")
        width = 8 if wide or max(info.compress_size, info.file_size) >= _FULL else 4
        descriptor = _read(fd, end, 4 + 4 + 2 * width, f"member {name}'s data descriptor")
        if descriptor[:4] == b"PK\x07\x08":
            end += 4
            descriptor = _read(fd, end, 4 + 2 * width, f"member {name}'s data descriptor")
        kind = "<L2Q" if width == 8 else "<3L"
        crc, compressed, size = struct.unpack_from(kind, descriptor)
        end += 4 + 2 * width
    if (crc, compressed, size) != (info.CRC, info.compress_size, info.file_size):
        raise disagree(
            f"the CRC or the sizes (local: {compressed} packed, {size} unpacked; directory:"
            f" {info.compress_size}, {info.file_size})"
        )
    span = Span(info.filename, data_start, info.compress_size, info.file_size, method, info.CRC)
    return span, end


def _zip64_sizes(extra: bytes, size: int, compressed: int, name: str) -> tuple[int, int]:
    at = 0
    while at + 4 <= len(extra):
        kind, length = struct.unpack_from("<2H", extra, at)
        if kind == 1 and length >= 16:
            return struct.unpack_from("<2Q", extra, at + 4)
        at += 4 + length
    raise ArchiveError(f"member {name}: its local header lacks the zip64 sizes it announces")


def _raw_name(info: zipfile.ZipInfo) -> bytes:
    return info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")


def _read(fd: int, offset: int, length: int, what: str) -> bytes:
    data = os.pread(fd, length, offset) if length else b""
    if len(data) != length or offset < 0:
        raise ArchiveError(f"the zip archive is damaged: it ends inside {what}")
    return data


class MemberReader(io.RawIOBase):
    """A member's content, inflated here and held to its declared size, end and CRC."""

    def __init__(self, fd: int, span: Span) -> None:
        super().__init__()
        self._fd = fd
        self._span = span
        self._at = span.data_start
        self._left = span.compressed  # compressed bytes not read yet
        self._inflate = zlib.decompressobj(-15) if span.method == zipfile.ZIP_DEFLATED else None
        self._produced = 0
        self._crc = 0
        self._pending = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending and not self._done:
            data = self._more()
            if not data:
                self._finish()
                break
            self._produced += len(data)
            if self._produced > self._span.size:
                raise BuildTooLargeError(
                    f"member {shown(self._span.name)} unpacks to more than the"
                    f" {self._span.size} bytes its headers declare"
                )
            self._crc = zlib.crc32(data, self._crc)
            self._pending = data
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def _more(self) -> bytes:
        if self._inflate is None:
            return self._take(min(CHUNK, self._left))
        if self._inflate.eof:
            return b""
        tail = self._inflate.unconsumed_tail or self._take(min(CHUNK, self._left))
        return self._inflate.decompress(tail, CHUNK)  # bounded output, whatever the ratio

    def _take(self, length: int) -> bytes:
        data = _read(self._fd, self._at, length, f"member {shown(self._span.name)}")
        self._at += length
        self._left -= length
        return data

    def _finish(self) -> None:
        self._done = True
        name, span = shown(self._span.name), self._span
        if self._inflate is not None and (
            not self._inflate.eof or self._inflate.unused_data or self._left
        ):
            raise ArchiveError(
                f"member {name}: its deflate stream does not end at the {span.compressed}"
                " compressed bytes its headers declare"
            )
        if self._produced != span.size:
            raise ArchiveError(
                f"member {name} unpacks to {self._produced} bytes, not the {span.size} its"
                " headers declare"
            )
        if self._crc != span.crc:
            raise ArchiveError(f"member {name} fails its CRC-32: damaged or altered")
