"""Build archives: honest zip and tar.gz files unpack whole; hostile ones (zip slip, absolute
paths, links out of the folder, devices, bombs) are refused with the member and the reason,
and nothing is ever written outside the destination."""

from __future__ import annotations

import io
import os
import stat
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

from builds.archive import ArchiveFormat, detect_format, extract_archive, inspect_archive
from builds.errors import ArchiveError, BuildTooLargeError, ManifestError, UnsafeArchiveError
from builds.members import ArchiveLimits, Member, MemberCheck, MemberKind
from tests.build_archives import (
    GAME,
    files_under,
    game_tar,
    game_zip,
    manifest_bytes,
    tar_entry,
    write_tar,
    write_zip,
    zip_entry,
    zip_symlink,
)

MANIFEST = ("./manifest.json", manifest_bytes())


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """An empty folder to unpack into, beside nothing else but the archive."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def refused_tar(tmp_path: Path, dest: Path, *entries: tuple[tarfile.TarInfo, bytes]) -> str:
    """Unpack a tar.gz of the manifest and `entries`; the refusal's message. Asserts that
    nothing but the archive and the (empty-handed) destination exists under tmp_path."""
    archive = write_tar(tmp_path / "build.tar.gz", [tar_entry(*MANIFEST), *entries])
    with pytest.raises(UnsafeArchiveError) as caught:
        extract_archive(archive, dest)
    assert sorted(os.listdir(tmp_path)) == ["build.tar.gz", "out"]
    return str(caught.value)


def test_an_honest_zip_unpacks_with_its_executable_bit_and_inner_links(
    tmp_path: Path, dest: Path
) -> None:
    archive = write_zip(
        tmp_path / "build.zip",
        [
            zip_entry("manifest.json", manifest_bytes()),
            zip_entry("game.py", GAME, stat.S_IFREG | 0o755),
            zip_entry("assets/", b""),
            zip_entry("assets/level1.txt", b"level one"),
            zip_symlink("assets/current.txt", "level1.txt"),
            zip_symlink("bin/game", "../game.py"),
        ],
    )
    inspection = extract_archive(archive, dest)
    assert inspection.format is ArchiveFormat.ZIP
    assert inspection.manifest.name == "arcade"
    assert inspection.unpacked_bytes == len(manifest_bytes()) + len(GAME) + len(b"level one")
    assert files_under(dest) == [
        "assets", "assets/current.txt", "assets/level1.txt", "bin", "bin/game", "game.py",
        "manifest.json",
    ]  # fmt: skip
    assert (dest / "game.py").read_bytes() == GAME
    assert os.access(dest / "game.py", os.X_OK)
    assert not os.access(dest / "manifest.json", os.X_OK)
    assert os.readlink(dest / "bin/game") == "../game.py"
    assert (dest / "assets/current.txt").read_text() == "level one"


def test_an_honest_tar_gz_unpacks_with_hard_links(tmp_path: Path, dest: Path) -> None:
    archive = write_tar(
        tmp_path / "build.tar.gz",
        [
            tar_entry("./", kind=tarfile.DIRTYPE, mode=0o755),
            tar_entry(*MANIFEST),
            tar_entry("./game.py", GAME, mode=0o755),
            tar_entry("./lib/game.py", kind=tarfile.LNKTYPE, link="./game.py"),
            tar_entry("./lib/again.py", kind=tarfile.LNKTYPE, link="lib/game.py"),
        ],
    )
    inspection = extract_archive(archive, dest)
    assert inspection.format is ArchiveFormat.TAR_GZ
    assert [member.name for member in inspection.members] == [
        "manifest.json", "game.py", "lib/game.py", "lib/again.py",
    ]  # fmt: skip
    assert files_under(dest) == ["game.py", "lib", "lib/again.py", "lib/game.py", "manifest.json"]
    assert os.stat(dest / "lib/again.py").st_ino == os.stat(dest / "game.py").st_ino
    assert os.access(dest / "game.py", os.X_OK)


def test_inspection_reads_the_manifest_and_writes_nothing(tmp_path: Path) -> None:
    archive = game_zip(tmp_path / "build.zip")
    inspection = inspect_archive(archive)
    assert [m.name for m in inspection.members] == ["manifest.json", "game.py"]
    assert inspection.manifest.entry == ("python3", "game.py")
    assert sorted(os.listdir(tmp_path)) == ["build.zip"]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../evil.txt", "the path has a '..' component"),
        ("assets/../../evil.txt", "the path has a '..' component"),
        ("/tmp/evil.txt", "the path is absolute; members must be relative"),
        ("C:/evil.txt", "the path is absolute; members must be relative"),
        ("assets\\..\\evil.txt", "the name holds a backslash; use '/' between folders"),
    ],
)
def test_zip_slip_is_refused_and_writes_nothing(
    tmp_path: Path, dest: Path, name: str, reason: str
) -> None:
    archive = write_zip(
        tmp_path / "build.zip",
        [zip_entry("manifest.json", manifest_bytes()), zip_entry(name, b"owned")],
    )
    with pytest.raises(UnsafeArchiveError) as caught:
        extract_archive(archive, dest)
    assert str(caught.value) == f"refused member {name!r}: {reason}"
    assert caught.value.member == name
    assert sorted(os.listdir(tmp_path)) == ["build.zip", "out"]
    assert files_under(dest) == ["manifest.json"]  # written before the bad member came


@pytest.mark.parametrize(
    ("name", "target", "reason"),
    [
        ("passwd", "/etc/passwd", "the link points to an absolute path '/etc/passwd'"),
        ("up", "..", "the link points outside the build: '..'"),
        ("lib/up", "../../outside", "the link points outside the build: '../../outside'"),
        ("lib/sneaky", "../x/../../y",
         "the link's target '../x/../../y' has '..' after a folder; put every '..' first"),
    ],
)  # fmt: skip
def test_tar_symlinks_escaping_the_folder_are_refused(
    tmp_path: Path, dest: Path, name: str, target: str, reason: str
) -> None:
    message = refused_tar(tmp_path, dest, tar_entry(name, kind=tarfile.SYMTYPE, link=target))
    assert message == f"refused member {name!r}: {reason}"
    assert not any(path.is_symlink() for path in dest.rglob("*"))


def test_a_symlink_whose_dotdot_follows_another_link_is_refused(tmp_path: Path, dest: Path) -> None:
    # "root" -> "." is harmless, but "root/../etc" resolves through it on disk to ../etc,
    # while on paper it reads as "etc": only leading '..' are allowed.
    message = refused_tar(
        tmp_path,
        dest,
        tar_entry("root", kind=tarfile.SYMTYPE, link="."),
        tar_entry("escape", kind=tarfile.SYMTYPE, link="root/../etc"),
    )
    assert message == (
        "refused member 'escape': the link's target 'root/../etc' has '..' after a folder;"
        " put every '..' first"
    )


def test_a_member_written_through_a_symlink_is_refused(tmp_path: Path, dest: Path) -> None:
    message = refused_tar(
        tmp_path,
        dest,
        tar_entry("lib", kind=tarfile.SYMTYPE, link="assets"),
        tar_entry("lib/evil.so", b"owned"),
    )
    assert message == (
        "refused member 'lib/evil.so': it lies inside 'lib', which is a symbolic link, not a folder"
    )


@pytest.mark.parametrize(
    ("kind", "what"),
    [
        (tarfile.CHRTYPE, "character device"),
        (tarfile.BLKTYPE, "block device"),
        (tarfile.FIFOTYPE, "fifo"),
    ],
)
def test_devices_and_fifos_are_refused(tmp_path: Path, dest: Path, kind: bytes, what: str) -> None:
    message = refused_tar(tmp_path, dest, tar_entry("dev/thing", kind=kind))
    assert message == (
        f"refused member 'dev/thing': it is a {what}; builds hold only files, folders and links"
    )


def test_a_zip_device_node_is_refused(tmp_path: Path, dest: Path) -> None:
    archive = write_zip(
        tmp_path / "build.zip",
        [zip_entry("manifest.json", manifest_bytes()), zip_entry("null", b"", stat.S_IFCHR)],
    )
    with pytest.raises(
        UnsafeArchiveError, match=r"^refused member 'null': it is a character device"
    ):
        extract_archive(archive, dest)


@pytest.mark.parametrize(
    ("link", "reason"),
    [
        ("../../etc/passwd",
         "its target is unsafe: refused member '../../etc/passwd': the path has a '..' component"),
        ("missing.py", "the hard link's target 'missing.py' is not an earlier file"),
    ],
)  # fmt: skip
def test_hard_links_must_name_an_earlier_file(
    tmp_path: Path, dest: Path, link: str, reason: str
) -> None:
    message = refused_tar(tmp_path, dest, tar_entry("h", kind=tarfile.LNKTYPE, link=link))
    assert message == f"refused member 'h': {reason}"


def test_a_name_given_twice_is_refused(tmp_path: Path, dest: Path) -> None:
    message = refused_tar(tmp_path, dest, tar_entry("./manifest.json", b"{}"))
    assert message == "refused member './manifest.json': the archive holds this name twice"


def test_a_file_where_earlier_members_made_a_folder_is_refused(tmp_path: Path, dest: Path) -> None:
    message = refused_tar(
        tmp_path,
        dest,
        tar_entry("lib/a.py", b"a"),
        tar_entry("lib", kind=tarfile.SYMTYPE, link="."),
    )
    assert message == (
        "refused member 'lib': earlier members lie in a folder of this name;"
        " it cannot be a symbolic link"
    )


def test_too_many_members_are_refused_before_reading_on(tmp_path: Path) -> None:
    files = {f"f{index}.txt": b"x" for index in range(5)}
    archive = game_tar(tmp_path / "build.tar.gz", **files)
    with pytest.raises(BuildTooLargeError) as caught:
        inspect_archive(archive, ArchiveLimits(max_members=4))
    assert str(caught.value) == "the archive has more than 4 members"
    zipped = game_zip(tmp_path / "build.zip", **files)
    with pytest.raises(BuildTooLargeError) as caught:
        inspect_archive(zipped, ArchiveLimits(max_members=4))
    assert str(caught.value) == "the archive has more than 4 members"


def test_a_zip_bomb_is_refused_by_its_unpacked_size(tmp_path: Path, dest: Path) -> None:
    bomb = game_zip(tmp_path / "bomb.zip", **{"zeros.bin": bytes(4 * 1024 * 1024)})
    assert bomb.stat().st_size < 64 * 1024
    with pytest.raises(BuildTooLargeError) as caught:
        extract_archive(bomb, dest, ArchiveLimits(max_unpacked_bytes=1024 * 1024))
    assert str(caught.value) == (
        "the archive unpacks to more than 1048576 bytes (reached at member 'zeros.bin')"
    )
    assert files_under(dest) == ["game.py", "manifest.json"]


def test_a_zip_whose_headers_understate_a_member_is_refused_at_the_declared_size(
    tmp_path: Path, dest: Path
) -> None:
    archive = game_zip(tmp_path / "liar.zip", **{"zeros.bin": bytes(100_000)})
    data = bytearray(archive.read_bytes())
    # Declare 10 bytes for zeros.bin in its local header and its central directory entry.
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = -1
        while (at := data.find(signature, at + 1)) >= 0:
            name_at = at + (30 if signature == b"PK\x03\x04" else 46)
            if data[name_at : name_at + 9] == b"zeros.bin":
                struct.pack_into("<I", data, at + offset, 10)
    archive.write_bytes(bytes(data))
    with pytest.raises(BuildTooLargeError) as caught:
        extract_archive(archive, dest)
    assert str(caught.value) == (
        "member 'zeros.bin' unpacks to more than the 10 bytes its headers declare"
    )
    assert (dest / "zeros.bin").stat().st_size <= 10  # refused before its first chunk


def test_a_zip_directory_larger_than_its_member_count_allows_is_refused(tmp_path: Path) -> None:
    # zipfile reads the whole central directory into memory, whatever count the zip claims:
    # its size is capped too, at 1 KiB per allowed member.
    long_name = "/".join(["d" * 249] * 12)  # 3,011 bytes: legal, but long
    archive = game_zip(tmp_path / "build.zip", **{long_name: b""})
    directory = sum(46 + len(name) for name in ("manifest.json", "game.py", long_name))
    with pytest.raises(BuildTooLargeError) as caught:
        inspect_archive(archive, ArchiveLimits(max_members=3))
    assert str(caught.value) == (
        f"the zip's central directory is {directory} bytes, more than 1024 per member allowed"
    )
    assert inspect_archive(archive, ArchiveLimits(max_members=4)).members[2].name == long_name


def test_not_an_archive_or_damaged_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.zip"
    text.write_bytes(b"hello, I am not a zip")
    with pytest.raises(ArchiveError) as caught:
        inspect_archive(text)
    assert str(caught.value) == (
        "the file is neither a zip nor a tar.gz archive (by its first bytes)"
    )
    truncated = tmp_path / "cut.tar.gz"
    whole = game_tar(tmp_path / "whole.tar.gz", **{"data.bin": os.urandom(50_000)})
    truncated.write_bytes(whole.read_bytes()[:20_000])
    with pytest.raises(ArchiveError, match=r"^the tar\.gz archive is damaged: "):
        inspect_archive(truncated)


def test_the_manifest_must_be_at_the_root(tmp_path: Path) -> None:
    nested = write_zip(
        tmp_path / "nested.zip",
        [zip_entry("arcade/manifest.json", manifest_bytes()), zip_entry("arcade/game.py", GAME)],
    )
    with pytest.raises(ArchiveError) as caught:
        inspect_archive(nested)
    assert str(caught.value) == (
        "manifest.json must be at the archive's root, not 'arcade/manifest.json': archive the"
        " build folder's contents rather than the folder"
    )
    bare = write_zip(tmp_path / "bare.zip", [zip_entry("game.py", GAME)])
    with pytest.raises(ArchiveError) as caught:
        inspect_archive(bare)
    assert str(caught.value) == (
        "the archive has no manifest.json at its root (see builds/MANIFEST.md)"
    )


def test_a_bad_manifest_inside_an_archive_is_a_manifest_error(tmp_path: Path) -> None:
    archive = game_tar(tmp_path / "build.tar.gz", manifest=manifest_bytes(fps=1000))
    with pytest.raises(ManifestError) as caught:
        inspect_archive(archive)
    assert str(caught.value) == (
        "manifest.json: fps: expected a whole number from 1 to 240, got 1000"
    )


def test_the_format_is_told_by_the_first_bytes() -> None:
    assert detect_format(b"PK\x03\x04rest") is ArchiveFormat.ZIP
    assert detect_format(b"\x1f\x8b\x08\x00") is ArchiveFormat.TAR_GZ
    with pytest.raises(ArchiveError):
        detect_format(b"")


def test_the_member_check_is_pure_and_normalizes_names() -> None:
    check = MemberCheck(ArchiveLimits())
    assert check.add("./", MemberKind.DIRECTORY) is None
    assert check.add("./a//b/./c.py", MemberKind.FILE, 3, mode=0o755) == Member(
        "a/b/c.py", MemberKind.FILE, 3, executable=True
    )
    assert check.add("a/b/link", MemberKind.SYMLINK, link="../../a/b/c.py") == Member(
        "a/b/link", MemberKind.SYMLINK, 0, "../../a/b/c.py", executable=False
    )
    assert check.unpacked_bytes == 3
    with pytest.raises(UnsafeArchiveError) as caught:
        check.add(".", MemberKind.FILE)
    assert str(caught.value) == "refused member '.': a file cannot be the root folder"
    with pytest.raises(UnsafeArchiveError) as caught:
        check.add("x", MemberKind.FILE, -1)
    assert str(caught.value) == "refused member 'x': the header gives a negative size -1"


def test_a_huge_pax_header_is_refused_before_tarfile_reads_it(tmp_path: Path) -> None:
    """A 40 kB tar.gz may declare a 40 MB pax header, which tarfile would read whole."""
    path = tmp_path / "pax.tar.gz"
    manifest = b'{"schema": 1}'
    with tarfile.open(path, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        info.pax_headers = {"comment": "x" * (40 << 20)}
        tar.addfile(info, io.BytesIO(manifest))
    assert path.stat().st_size < 100_000
    with pytest.raises(BuildTooLargeError, match="extended tar header; at most 65536"):
        inspect_archive(path, ArchiveLimits())


def test_a_zip64_record_hidden_from_the_locator_still_counts(tmp_path: Path) -> None:
    """Python's zipfile reads the zip64 record just before the locator, not where the locator
    points: a benign record at the pointed place must not hide the real member count."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(300):
            archive.writestr(f"f{index:04d}", b"")
    data = buffer.getvalue()
    end = data.rfind(b"PK\x05\x06")
    count, directory_size, directory_at = struct.unpack_from("<HII", data, end + 10)
    record = "<4sQ2H2L2Q2Q"
    benign = struct.pack(record, b"PK\x06\x06", 44, 45, 45, 0, 0, 1, 1, 50, directory_at + 56)
    real = struct.pack(record, b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, directory_size,
                       directory_at + 56)  # fmt: skip
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, directory_at, 1)
    tail = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, 50, directory_at + 56, 0)
    crafted = data[:directory_at] + benign + data[directory_at:end] + real + locator + tail
    path = tmp_path / "hidden.zip"
    path.write_bytes(crafted)
    assert len(zipfile.ZipFile(path).infolist()) == 300  # what zipfile would load
    with pytest.raises(BuildTooLargeError, match="more than 2 members"):
        inspect_archive(path, ArchiveLimits(max_members=2))


@pytest.mark.parametrize(
    ("entry", "files", "field", "reason"),
    [
        (["python3", "main.py"], {}, "entry[1]", "'main.py' is no member of the archive"),
        (["bin/game"], {}, "entry[0]", "'bin/game' is no member of the archive"),
        (["python3", "assets"], {"assets/": b"", "assets/a.png": b"png"}, "entry[1]",
         "'assets' is a directory of the archive"),
    ],
)  # fmt: skip
def test_the_entry_must_run_a_regular_file_of_the_archive(
    tmp_path: Path, entry: list[str], files: dict[str, bytes], field: str, reason: str
) -> None:
    archive = game_zip(tmp_path / "build.zip", manifest_bytes(entry=entry), **files)
    with pytest.raises(ManifestError) as caught:
        inspect_archive(archive)
    assert (caught.value.field, str(caught.value)) == (
        field,
        f"manifest.json: {field}: {reason}; the entry must run a regular file of the build"
        " (see builds/MANIFEST.md)",
    )


def test_an_entry_through_a_link_or_without_its_execute_bit_is_refused(tmp_path: Path) -> None:
    linked = write_tar(
        tmp_path / "linked.tar.gz",
        [tar_entry("manifest.json", manifest_bytes(entry=["python3", "run.py"])),
         tar_entry("game.py", GAME), tar_entry("run.py", kind=tarfile.SYMTYPE, link="game.py")],
    )  # fmt: skip
    with pytest.raises(ManifestError) as caught:
        inspect_archive(linked)
    assert str(caught.value) == (
        "manifest.json: entry[1]: 'run.py' is a symbolic link of the archive; the entry must"
        " run a regular file of the build (see builds/MANIFEST.md)"
    )
    plain = write_zip(
        tmp_path / "plain.zip",
        [zip_entry("manifest.json", manifest_bytes(entry=["bin/game"])),
         zip_entry("bin/game", b"\x7fELF", stat.S_IFREG | 0o644)],
    )  # fmt: skip
    with pytest.raises(ManifestError) as caught:
        inspect_archive(plain)
    assert str(caught.value) == (
        "manifest.json: entry[0]: 'bin/game' is not executable in the archive; set its owner's"
        " execute bit (zip: with a tool that stores Unix modes) or run it with python3"
    )


def test_a_program_of_the_build_and_the_example_build_are_accepted(tmp_path: Path) -> None:
    native = write_tar(
        tmp_path / "native.tar.gz",
        [tar_entry("manifest.json", manifest_bytes(entry=["./bin/game", "--fast"])),
         tar_entry("bin/game", b"\x7fELF", mode=0o755),
         tar_entry("bin/run", kind=tarfile.LNKTYPE, link="bin/game")],
    )  # fmt: skip
    assert inspect_archive(native).manifest.entry == ("./bin/game", "--fast")
    example = Path(__file__).resolve().parent.parent / "examples" / "arcade"
    files = {p.name: p.read_bytes() for p in example.iterdir() if p.is_file()}
    arcade = write_zip(
        tmp_path / "arcade.zip", [zip_entry(name, data) for name, data in files.items()]
    )
    assert inspect_archive(arcade).manifest.entry == ("python3", "game.py")
