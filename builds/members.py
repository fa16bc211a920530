"""Which archive members a build may hold: the rules, apart from reading zip or tar files.

An archive comes from a studio and is unpacked on operators' hosts, so every member is
checked before a byte is written (the classic attacks: "zip slip" with `..` or an absolute
path, a symbolic link pointing out of the folder and a member written through it, a device
node, a zip bomb). `MemberCheck` sees members one at a time, as archive.py reads them, so a
hostile archive is refused at its first bad member without reading the rest. Pure: names,
kinds and sizes in, accepted members or UnsafeArchiveError/BuildTooLargeError out.

Rules, each refusal naming the member:
- names are relative POSIX paths: not absolute, no drive letter, no backslash, no NUL, no
  `..` component, at most 255 bytes a component and 4096 in all; `.` components are dropped
  (tar's "./game.py"), and the root itself ("./") is skipped;
- only files, directories, symbolic links and hard links; no devices, fifos, sockets or
  sparse files; no name twice; nothing inside a member that is not a directory (a file
  written "through" a symbolic link could land anywhere the link points);
- a symbolic link's target is relative and stays inside the root, and its `..` components
  come first only: "y/../z" reads as "z" on paper, but on disk ".." applies to y's own
  target, which may be the root itself (y -> "."), and so leaves it;
- a hard link names an earlier file of the archive;
- at most `max_members` members and `max_unpacked_bytes` bytes unpacked, by their headers
  (archive.py says why the readers never yield more than a header declares).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from enum import Enum

from builds.errors import BuildTooLargeError, UnsafeArchiveError, shown

MAX_NAME_BYTES = 4096
MAX_COMPONENT_BYTES = 255
_DRIVE = re.compile(r"[A-Za-z]:")


class MemberKind(Enum):
    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symbolic link"
    HARDLINK = "hard link"
    CHAR_DEVICE = "character device"
    BLOCK_DEVICE = "block device"
    FIFO = "fifo"
    SOCKET = "socket"
    SPARSE = "sparse file"
    OTHER = "member of an unknown type"


ALLOWED_KINDS = frozenset({MemberKind.FILE, MemberKind.DIRECTORY, MemberKind.SYMLINK,
                           MemberKind.HARDLINK})  # fmt: skip


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    """How large one build may be, packed and unpacked; tests use tiny limits."""

    max_archive_bytes: int = 512 * 1024**2  # the archive file: an upload, a download
    max_unpacked_bytes: int = 2 * 1024**3
    max_members: int = 10_000


@dataclass(frozen=True, slots=True)
class Member:
    """An accepted member: `name` is normalized ("a/b", no "./"), `link` is a symbolic link's
    target as written or a hard link's normalized target, `executable` its owner's x bit."""

    name: str
    kind: MemberKind
    size: int = 0
    link: str = ""
    executable: bool = False


def normalize_name(raw: str) -> str:
    """`raw` as a relative POSIX path without "." components; "" for the root itself."""
    if "\0" in raw:
        raise UnsafeArchiveError(raw, "the name holds a NUL byte")
    if "\\" in raw:
        raise UnsafeArchiveError(raw, "the name holds a backslash; use '/' between folders")
    if raw.startswith("/") or _DRIVE.match(raw):
        raise UnsafeArchiveError(raw, "the path is absolute; members must be relative")
    if len(raw.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise UnsafeArchiveError(raw, f"the name is longer than {MAX_NAME_BYTES} bytes")
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    for part in parts:
        if part == "..":
            raise UnsafeArchiveError(raw, "the path has a '..' component")
        if len(part.encode("utf-8", "surrogateescape")) > MAX_COMPONENT_BYTES:
            raise UnsafeArchiveError(raw, f"a component is longer than {MAX_COMPONENT_BYTES} bytes")
    return "/".join(parts)


def check_symlink_target(name: str, target: str) -> None:
    """Refuse a symbolic link at `name` (normalized) whose `target` could leave the root."""
    if (
        not target
        or "\0" in target
        or len(target.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES
    ):
        raise UnsafeArchiveError(name, "the link's target is empty, too long or holds NUL")
    if target.startswith("/") or "\\" in target or _DRIVE.match(target):
        raise UnsafeArchiveError(name, f"the link points to an absolute path {shown(target)}")
    parts = [part for part in target.split("/") if part not in ("", ".")]
    ups = 0
    while ups < len(parts) and parts[ups] == "..":
        ups += 1
    if ".." in parts[ups:]:
        raise UnsafeArchiveError(
            name, f"the link's target {shown(target)} has '..' after a folder; put every '..' first"
        )
    if ups > name.count("/"):  # one '..' per folder the link lies in, at most
        raise UnsafeArchiveError(name, f"the link points outside the build: {shown(target)}")


class MemberCheck:
    """Accepts an archive's members in order, or refuses at the first one that breaks a rule."""

    def __init__(self, limits: ArchiveLimits) -> None:
        self.limits = limits
        self.members: list[Member] = []
        self.unpacked_bytes = 0
        self._kinds: dict[str, MemberKind] = {}  # the members' names
        self._folders: set[str] = set()  # folders that earlier members lie in

    def add(
        self, raw_name: str, kind: MemberKind, size: int = 0, link: str = "", mode: int = 0o644
    ) -> Member | None:
        """The member as accepted (None for the root folder itself), or raise."""
        if kind not in ALLOWED_KINDS:
            raise UnsafeArchiveError(
                raw_name,
                f"it is a {kind.value}; builds hold only files, folders and links",
            )
        name = normalize_name(raw_name)
        if not name:
            if kind is not MemberKind.DIRECTORY:
                raise UnsafeArchiveError(raw_name, f"a {kind.value} cannot be the root folder")
            return None
        if len(self.members) >= self.limits.max_members:
            raise BuildTooLargeError(f"the archive has more than {self.limits.max_members} members")
        if name in self._kinds:
            raise UnsafeArchiveError(raw_name, "the archive holds this name twice")
        if name in self._folders and kind is not MemberKind.DIRECTORY:
            raise UnsafeArchiveError(
                raw_name,
                f"earlier members lie in a folder of this name; it cannot be a {kind.value}",
            )
        self._check_parents(raw_name, name)
        if kind is MemberKind.SYMLINK:
            check_symlink_target(name, link)
        elif kind is MemberKind.HARDLINK:
            try:
                link = normalize_name(link)
            except UnsafeArchiveError as exc:
                raise UnsafeArchiveError(raw_name, f"its target is unsafe: {exc}") from None
            if self._kinds.get(link) not in (MemberKind.FILE, MemberKind.HARDLINK):
                raise UnsafeArchiveError(
                    raw_name, f"the hard link's target {shown(link)} is not an earlier file"
                )
        if kind is MemberKind.FILE:
            if size < 0:
                raise UnsafeArchiveError(raw_name, f"the header gives a negative size {size}")
            self.unpacked_bytes += size
            if self.unpacked_bytes > self.limits.max_unpacked_bytes:
                raise BuildTooLargeError(
                    f"the archive unpacks to more than {self.limits.max_unpacked_bytes} bytes"
                    f" (reached at member {shown(raw_name)})"
                )
        member = Member(
            name, kind, size if kind is MemberKind.FILE else 0, link, bool(mode & 0o100)
        )
        self.members.append(member)
        self._kinds[name] = kind
        return member

    def _check_parents(self, raw_name: str, name: str) -> None:
        parent = posixpath.dirname(name)
        while parent:
            kind = self._kinds.get(parent)
            if kind is not None and kind is not MemberKind.DIRECTORY:
                raise UnsafeArchiveError(
                    raw_name,
                    f"it lies inside {shown(parent)}, which is a {kind.value}, not a folder",
                )
            self._folders.add(parent)
            parent = posixpath.dirname(parent)
