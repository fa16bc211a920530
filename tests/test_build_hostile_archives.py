"""Archives checked whole at upload: a zip's two directories agree, nothing hides between or
around its members, every member unpacks to exactly its declared size, and tar header chains
are bounded; each hostile archive is refused with its exact reason, never a crash."""

from __future__ import annotations

import io
import stat
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest

from builds.archive import MAX_TAR_CHAIN, extract_archive, inspect_archive
from builds.errors import ArchiveError, BuildError, BuildTooLargeError, shown
from tests.build_archives import (
    GAME,
    RawMember,
    honest_members,
    manifest_bytes,
    raw_zip,
    tar_gz_bytes,
    write_zip,
    zip_entry,
)


def refusal(path: Path) -> tuple[type[BuildError], str]:
    with pytest.raises(BuildError) as caught:
        inspect_archive(path)
    return type(caught.value), str(caught.value)


def test_the_handmade_honest_zip_is_accepted(tmp_path: Path) -> None:
    """The control: the hostile zips below differ from this one in one field each."""
    honest = raw_zip(tmp_path / "honest.zip", honest_members(**{"level.dat": b"x" * 5000}))
    assert [m.name for m in inspect_archive(honest).members] == [
        "manifest.json", "game.py", "level.dat"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"local": {"name": b"evil.py"}},
         "member 'game.py': its local header and the central directory disagree on its name"
         " (the local header says 'evil.py')"),
        ({"local": {"method": zipfile.ZIP_STORED}},
         "member 'game.py': its local header and the central directory disagree on the"
         " compression method (0, 8)"),
        ({"local": {"flags": 0x800}},
         "member 'game.py': its local header and the central directory disagree on the flags"
         " (0x800, 0x0)"),
        ({"local": {"size": 999}},
         "member 'game.py': its local header and the central directory disagree on the CRC or"
         " the sizes (local: 18 packed, 999 unpacked; directory: 18, 16)"),
        ({"local": {"crc": 1}, "central": {}},
         "member 'game.py': its local header and the central directory disagree on the CRC or"
         " the sizes (local: 18 packed, 16 unpacked; directory: 18, 16)"),
    ],
)  # fmt: skip
def test_local_and_central_headers_must_agree(
    tmp_path: Path, change: dict[str, dict[str, object]], reason: str
) -> None:
    members = honest_members()
    members[1].local.update(change["local"])
    assert refusal(raw_zip(tmp_path / "two-faced.zip", members)) == (ArchiveError, reason)


def test_only_stored_and_deflate_members_are_read(tmp_path: Path) -> None:
    members = honest_members()
    members[1] = RawMember("game.py", GAME, method=zipfile.ZIP_BZIP2, data=b"BZh9")
    assert refusal(raw_zip(tmp_path / "bzip.zip", members)) == (
        ArchiveError,
        "member 'game.py' is compressed with method 12; builds use stored (0) or deflate (8)",
    )


def test_data_hidden_between_before_or_after_members_is_refused(tmp_path: Path) -> None:
    between = honest_members()
    between[1].before = b"hidden payload"
    assert refusal(raw_zip(tmp_path / "between.zip", between)) == (
        ArchiveError, "the zip hides 14 bytes before member 'game.py'"
    )  # fmt: skip
    assert refusal(
        raw_zip(tmp_path / "tail.zip", honest_members(), before_directory=b"hidden")
    ) == (ArchiveError, "the zip hides 6 bytes before its central directory")
    assert refusal(raw_zip(tmp_path / "after.zip", honest_members(), after_end=b"junk")) == (
        ArchiveError,
        "the zip has 4 bytes after its end record and comment (or a comment that is not its own)",
    )
    first = honest_members()
    first[0].before = b"MZ prepended stub"
    assert refusal(raw_zip(tmp_path / "prepended.zip", first))[1] == (
        "the file is neither a zip nor a tar.gz archive (by its first bytes)"
    )
    local = honest_members()
    local[0].before = b"PK\x03\x04 a stub"
    assert refusal(raw_zip(tmp_path / "stub.zip", local))[1] == (
        "the zip hides 11 bytes before member 'manifest.json'"
    )


def test_overlapping_members_are_refused(tmp_path: Path) -> None:
    """The overlapping-zip bomb: one member's data holds the next member's local header, so
    the same bytes unpack twice."""
    inner = RawMember("b.bin", b"B" * 100, method=zipfile.ZIP_STORED)
    raw_zip(tmp_path / "inner.zip", [inner])
    inner_bytes = (tmp_path / "inner.zip").read_bytes()[: 30 + 5 + 100]  # header, name, data
    outer = RawMember("a.bin", inner_bytes, method=zipfile.ZIP_STORED)
    members = [*honest_members(), outer, inner]
    zip_path = raw_zip(tmp_path / "overlap.zip", members)
    data = bytearray(zip_path.read_bytes())
    # Point b.bin's central entry at the copy of its header inside a.bin's data.
    a_at = data.find(b"a.bin") - 30
    struct.pack_into("<L", data, data.rfind(b"PK\x01\x02") + 42, a_at + 30 + 5)
    zip_path.write_bytes(bytes(data))
    assert refusal(zip_path) == (ArchiveError, "member 'b.bin' overlaps the member before it")


def test_a_member_must_unpack_to_exactly_its_declared_size(tmp_path: Path) -> None:
    # Both headers declare 10 bytes and the CRC of those 10: the rest of the stream is hidden.
    prefix = b"\0" * 10
    members = honest_members()
    members.append(RawMember("zeros.bin", b"\0" * 1_000_000))
    for header in (members[-1].local, members[-1].central):
        header.update(size=10, crc=zlib.crc32(prefix))
    assert refusal(raw_zip(tmp_path / "bomb.zip", members)) == (
        BuildTooLargeError,
        "member 'zeros.bin' unpacks to more than the 10 bytes its headers declare",
    )
    short = honest_members()
    short.append(RawMember("level.dat", b"abc"))
    for header in (short[-1].local, short[-1].central):
        header.update(size=5)
    assert refusal(raw_zip(tmp_path / "short.zip", short)) == (
        ArchiveError, "member 'level.dat' unpacks to 3 bytes, not the 5 its headers declare"
    )  # fmt: skip
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = packer.compress(b"abc") + packer.flush()
    trailing = honest_members()
    trailing.append(RawMember("level.dat", b"abc", data=stream + b"hidden"))
    assert refusal(raw_zip(tmp_path / "trailing.zip", trailing)) == (
        ArchiveError,
        "member 'level.dat': its deflate stream does not end at the"
        f" {len(stream) + 6} compressed bytes its headers declare",
    )
    altered = honest_members()
    for header in (altered[1].local, altered[1].central):
        header.update(crc=12345)
    assert refusal(raw_zip(tmp_path / "crc.zip", altered)) == (
        ArchiveError, "member 'game.py' fails its CRC-32: damaged or altered"
    )  # fmt: skip


def test_the_end_record_must_count_the_directory(tmp_path: Path) -> None:
    assert refusal(raw_zip(tmp_path / "count.zip", honest_members(), count=1)) == (
        ArchiveError, "the zip's end record counts 1 members, its central directory holds 2"
    )  # fmt: skip


def test_a_name_flagged_utf8_that_is_not_is_refused_as_damaged(tmp_path: Path) -> None:
    members = honest_members()
    members.append(RawMember("x", b"", local={"flags": 0x800, "name": b"\xff\xfe"},
                             central={"flags": 0x800, "name": b"\xff\xfe"}))  # fmt: skip
    kind, reason = refusal(raw_zip(tmp_path / "utf8.zip", members))
    assert kind is ArchiveError
    assert reason.startswith("the zip archive is damaged: 'utf-8' codec can't decode byte 0xff")


def pax_chain(links: int) -> bytes:
    """A tar stream whose manifest.json comes after `links` pax headers in a row."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("game.py", GAME),):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
        manifest = manifest_bytes()
        info = tarfile.TarInfo("manifest.json")
        info.size, info.pax_headers = len(manifest), {"comment": "c"}
        tar.addfile(info, io.BytesIO(manifest))
    raw = buffer.getvalue()
    at = raw.index(b"@PaxHeader")  # the pax header of manifest.json: one header + one data block
    start = at - at % 512
    pax = raw[start : start + 1024]
    return raw[:start] + pax * (links - 1) + raw[start:]


def test_a_chain_of_tar_extension_headers_is_bounded(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed.tar.gz"
    allowed.write_bytes(tar_gz_bytes(pax_chain(MAX_TAR_CHAIN)))
    assert inspect_archive(allowed).manifest.name == "arcade"
    chained = tmp_path / "chained.tar.gz"
    chained.write_bytes(tar_gz_bytes(pax_chain(MAX_TAR_CHAIN + 1)))
    offset = pax_chain(MAX_TAR_CHAIN + 1).index(b"@PaxHeader") // 512 * 512 + 4 * 1024
    assert refusal(chained) == (
        ArchiveError,
        f"the tar archive has more than 4 extended headers in a row (at offset {offset}); a"
        " member needs at most 4",
    )


def test_a_gnu_long_name_larger_than_the_bound_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "long.tar.gz"
    with tarfile.open(path, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("a/" * 35_000 + "x")
        tar.addfile(info, io.BytesIO(b""))
    assert refusal(path) == (
        BuildTooLargeError,
        "the archive has a 70002-byte extended tar header; at most 65536 are accepted",
    )


def test_names_in_refusals_are_cut_short_and_escaped(tmp_path: Path) -> None:
    hostile = "\x1b]0;owned\x07" + "a" * 300 + "/../escape"
    assert shown(hostile) == ("'\\x1b]0;owned\\x07" + "a" * 38 + "'...[+272 chars]")
    hostile = "\x1b]0;owned\x07/" + "a/" * 150 + "../escape"
    path = tmp_path / "escape.tar.gz"
    with tarfile.open(path, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(tarfile.TarInfo(hostile), io.BytesIO(b""))
    kind, reason = refusal(path)
    assert (kind.__name__, reason) == (
        "UnsafeArchiveError",
        f"refused member {shown(hostile)}: the path has a '..' component",
    )
    assert "\x1b" not in reason and len(reason) < 140


def test_nothing_of_a_hostile_zip_is_written_past_the_refusal(tmp_path: Path) -> None:
    members = honest_members()
    members.append(RawMember("zeros.bin", b"\0" * 1_000_000))
    for header in (members[-1].local, members[-1].central):
        header.update(size=10, crc=zlib.crc32(b"\0" * 10))
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(BuildTooLargeError):
        extract_archive(raw_zip(tmp_path / "bomb.zip", members), dest)
    assert (dest / "zeros.bin").stat().st_size == 0


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        # A folder by its mode, a file by its name: Info-ZIP would unpack a file we never read.
        (zip_entry("game.py", b"print('hidden')", stat.S_IFDIR | 0o755),
         "its mode and its name disagree on whether it is a folder"),
        (zip_entry("assets/", b"hidden", stat.S_IFDIR | 0o755), "a folder that carries bytes"),
    ],
)  # fmt: skip
def test_a_zip_folder_that_is_not_a_plain_folder_is_refused(
    tmp_path: Path, entry: tuple[zipfile.ZipInfo, bytes], why: str
) -> None:
    path = write_zip(tmp_path / "odd.zip", [zip_entry("manifest.json", manifest_bytes()), entry])
    kind, reason = refusal(path)
    assert kind.__name__ == "UnsafeArchiveError"
    assert reason.endswith(why), reason
