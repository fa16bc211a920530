"""A build's unpacked tree by content: every path, its type, its mode and its sha256.

The tree a build must have is derived from its archive (`expected_tree`: the members that
builds/archive.py accepted, with the sha256 it read of each file), so it can be derived again
from the archive at any time; the tree a folder has is read from disk (`tree_on_disk`). They
are compared before a build is used (`difference`), so that a file appended, changed, removed
or made executable in a deployed build is found, whatever changed it.

Deployed trees are read-only (`make_read_only`): files 0444 (0555 when executable), folders
0555, so a game cannot write its own build even where no sandbox binds it read-only. The
agent's user still owns them and could chmod them back: the check against the content is what
catches that, not the modes.

Hashing every file before every session would cost a large build seconds, so `HashCache`
keeps each file's sha256 with the stat that it was read under, ctime included: a write or a
chmod sets the ctime to now, and no unprivileged call sets it back, so a file whose stat is
unchanged still holds the bytes that were hashed. Blocking file I/O: from a thread.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from builds.archive import CHUNK, Inspection
from builds.errors import shown
from builds.members import MemberKind

FILE, DIRECTORY, LINK = "file", "directory", "symbolic link"
SHOWN_DIFFERENCES = 3


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One path of a tree: `content` is a file's sha256, a link's target, "" for a folder."""

    kind: str
    mode: int
    content: str = ""


Tree = Mapping[str, TreeEntry]  # by path relative to the build's root, "a/b"


def expected_tree(inspection: Inspection) -> dict[str, TreeEntry]:
    """The read-only tree `inspection`'s archive unpacks to (folders its members only imply
    included): what `make_read_only` leaves on disk after builds/archive.py extracted it."""
    tree: dict[str, TreeEntry] = {}
    executable = {m.name: m.executable for m in inspection.members if m.kind is MemberKind.FILE}
    for member in inspection.members:
        parent = os.path.dirname(member.name)
        while parent and parent not in tree:
            tree[parent] = TreeEntry(DIRECTORY, 0o555)
            parent = os.path.dirname(parent)
        if member.kind is MemberKind.DIRECTORY:
            tree[member.name] = TreeEntry(DIRECTORY, 0o555)
        elif member.kind is MemberKind.SYMLINK:
            tree[member.name] = TreeEntry(LINK, 0o777, member.link)
        else:  # a file, or a hard link: the same inode as its target on disk
            runs = executable[member.link if member.kind is MemberKind.HARDLINK else member.name]
            digest = inspection.file_sha256[member.name]
            tree[member.name] = TreeEntry(FILE, 0o555 if runs else 0o444, digest)
    return tree


class HashCache:
    """Files' sha256 by the stat they were read under (see the module's docstring)."""

    def __init__(self) -> None:
        self._known: dict[tuple[int, ...], str] = {}

    def sha256(self, path: Path, status: os.stat_result) -> str:
        key = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns,
               status.st_ctime_ns, status.st_mode)  # fmt: skip
        found = self._known.get(key)
        if found is None:
            digest = hashlib.sha256()
            with open(path, "rb", buffering=0) as source:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
            found = self._known[key] = digest.hexdigest()
        return found


def tree_on_disk(root: Path, cache: HashCache | None = None) -> dict[str, TreeEntry]:
    """The tree under `root` as it is: links read, never followed; anything that is not a
    file, folder or link is listed as its type so that it never matches."""
    cache = cache or HashCache()
    tree: dict[str, TreeEntry] = {}
    pending = [("", root)]
    while pending:
        prefix, folder = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                name = f"{prefix}{entry.name}"
                status = entry.stat(follow_symlinks=False)
                mode = stat.S_IMODE(status.st_mode)
                if stat.S_ISDIR(status.st_mode):
                    tree[name] = TreeEntry(DIRECTORY, mode)
                    pending.append((f"{name}/", Path(entry.path)))
                elif stat.S_ISLNK(status.st_mode):
                    tree[name] = TreeEntry(LINK, 0o777, os.readlink(entry.path))
                elif stat.S_ISREG(status.st_mode):
                    tree[name] = TreeEntry(FILE, mode, cache.sha256(Path(entry.path), status))
                else:
                    tree[name] = TreeEntry(f"special file {stat.S_IFMT(status.st_mode):o}", mode)
    return tree


def difference(expected: Tree, found: Tree) -> str | None:
    """How `found` differs from `expected`, the first few paths named; None when equal."""
    changes: list[str] = []
    for name in sorted(set(expected) | set(found)):
        want, have = expected.get(name), found.get(name)
        if want == have:
            continue
        if want is None:
            changes.append(f"{shown(name)} was added")
        elif have is None:
            changes.append(f"{shown(name)} was removed")
        elif want.kind != have.kind:
            changes.append(f"{shown(name)} became a {have.kind}")
        elif want.content != have.content:
            changes.append(f"{shown(name)} was changed")
        else:
            changes.append(f"{shown(name)} has mode {have.mode:o}, not {want.mode:o}")
    if not changes:
        return None
    more = len(changes) - SHOWN_DIFFERENCES
    return "; ".join(changes[:SHOWN_DIFFERENCES]) + (f"; and {more} more" if more > 0 else "")


def tree_sha256(tree: Tree) -> str:
    """One digest of a whole tree: a line per path (path, type, mode, content), sorted."""
    digest = hashlib.sha256()
    for name in sorted(tree):
        entry = tree[name]
        line = f"{name}\0{entry.kind}\0{entry.mode:o}\0{entry.content}\n"
        digest.update(line.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def make_read_only(root: Path) -> None:
    """Files 0444 (0555 when the owner may run them), folders 0555, `root` itself included;
    links are left alone (their own mode means nothing on Linux)."""
    for folder, folders, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(folder, name)
            status = os.lstat(path)
            if stat.S_ISREG(status.st_mode):
                os.chmod(path, 0o555 if status.st_mode & stat.S_IXUSR else 0o444)
        for name in folders:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, 0o555)
    os.chmod(root, 0o555)


def make_writable(root: Path) -> None:
    """Folders writable by their owner again, so that the tree can be removed."""
    if root.is_symlink() or not root.is_dir():
        return
    os.chmod(root, 0o755)
    for folder, folders, _ in os.walk(root):
        for name in folders:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755)
