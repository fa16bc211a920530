"""A container's builds on disk: fetch, verify, unpack, and check them again before each use.

`root/<sha256>/` holds one unpacked build, its manifest.json among its files, read-only
(builds/tree.py); `root/.blobs/<sha256>` keeps the archive it came from, whose sha256 is its
name. A build appears whole or not at all: the archive is downloaded to a temporary file while
it is hashed, refused unless its sha256 is the one asked for (the server, or anyone between,
cannot swap a build), kept as the blob, unpacked by builds/archive.py (the same checks as an
upload) into a temporary folder, checked against the tree the blob derives, made read-only,
and only then renamed into place. Temporary names start with "." and never count as deployed.

What the container announces (`deployed_builds`, at the agent's start) is only what a blob
proves: a folder without a blob whose sha256 is its name (planted, or left by an older
release) is never announced; the tree a build must have is derived from its blob again and
held in the agent's memory (`DeployedBuild.tree`), where no build can write it; a folder that
differs from it is reported (`BuildFault`) and unpacked again from the blob. `verify_build`
does the same check before each session.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import hdrs

from builds.archive import CHUNK, DEFAULT_LIMITS, extract_archive, inspect_archive, remove_tree
from builds.catalog import SHA256
from builds.errors import BuildError, DeployError
from builds.manifest import Manifest
from builds.members import ArchiveLimits
from builds.tree import (
    HashCache,
    TreeEntry,
    difference,
    expected_tree,
    make_read_only,
    make_writable,
    tree_on_disk,
    tree_sha256,
)
from contracts.signing import HostCredentials, sign_download

log = logging.getLogger(__name__)


BLOBS = ".blobs"  # under the builds' root: the archives, by sha256


@dataclass(frozen=True, slots=True)
class DeployedBuild:
    """A build unpacked on this host: run `manifest.entry` with `path` as the working folder.
    `tree` is what `path` must hold (derived from the blob, kept in memory)."""

    sha256: str
    path: Path
    manifest: Manifest
    tree: Mapping[str, TreeEntry] = field(default_factory=dict)
    hashes: HashCache = field(default_factory=HashCache, compare=False, repr=False)

    @property
    def name(self) -> str:
        """The game id players ask for."""
        return self.manifest.name

    @property
    def blob(self) -> Path:
        return self.path.parent / BLOBS / self.sha256


@dataclass(frozen=True, slots=True)
class BuildFault:
    """A deployed build found altered on disk (or a folder no blob proves: `planted`, with no
    name or version): what was found, and whether the build was unpacked again from its blob.
    The agent reports it to the indexer (streamer/fault_reports.py), which sends the host to
    re-inspection: its own storage was touched."""

    sha256: str
    reason: str
    redeployed: bool
    name: str = ""
    version: str = ""
    planted: bool = False


Report = Callable[[BuildFault], None]


def _ignore(fault: BuildFault) -> None:
    del fault


async def deploy(
    http: aiohttp.ClientSession,
    server_url: str,
    sha256: str,
    root: Path,
    limits: ArchiveLimits = DEFAULT_LIMITS,
    *,
    host_key: HostCredentials | None = None,
    report: Report = _ignore,
) -> DeployedBuild:
    """Make the build `sha256` of the server at `server_url` (http://HOST:PORT) deployed under
    `root`: at once when it already is, else fetched, verified and unpacked. The fetch is
    signed with `host_key` (builds/downloads.py); None fetches unsigned, which only a network
    without host keys serves. A deployed folder found altered is unpacked again from its
    blob and `report`ed, as `deployed_builds` does. Raises DeployError saying what failed;
    nothing partial is left under `root`."""
    if not SHA256.fullmatch(sha256):
        raise DeployError(f"{sha256!r} is not a sha256: 64 lowercase hex digits")
    there = await asyncio.to_thread(_deployed, root, sha256, limits, report)
    if there is not None:
        return there
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    path = f"/api/builds/{sha256}/archive"
    headers: dict[str, str] = {}
    if host_key is not None:
        signed = sign_download(host_key, "GET", path, time.time())
        headers[str(hdrs.AUTHORIZATION)] = signed.header()
    archive = await _download(http, f"{server_url.rstrip('/')}{path}", sha256, root, limits,
                              headers=headers)  # fmt: skip
    try:
        return await asyncio.to_thread(_keep, archive, sha256, root, limits)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(archive)  # moved to the blobs unless something failed


def deployed_builds(
    root: Path, report: Report = _ignore, limits: ArchiveLimits = DEFAULT_LIMITS
) -> list[DeployedBuild]:
    """The builds deployed under `root` that their blobs prove, by name then sha256; a folder
    no blob proves is reported and skipped, an altered one reported and unpacked again.
    Blocking: each blob is hashed and read whole, each tree hashed."""
    if not root.is_dir():
        return []
    names = sorted(path.name for path in root.iterdir() if SHA256.fullmatch(path.name))
    found = [_deployed(root, name, limits, report) for name in names]
    return sorted((b for b in found if b is not None), key=lambda b: (b.name, b.sha256))


def verify_build(build: DeployedBuild, report: Report = _ignore) -> str | None:
    """None when `build`'s folder still holds exactly its tree; else the fault is reported and
    the folder unpacked again from the blob (None when that worked), or the reason the build
    must not run. Blocking: from a thread; unchanged files are not hashed again."""
    try:
        found = difference(build.tree, tree_on_disk(build.path, build.hashes))
    except OSError as exc:
        found = f"its folder cannot be read: {exc}"
    if found is None:
        return None
    log.error("build %s (%s) was altered on disk: %s", build.name, build.sha256, found)
    name, version = build.name, build.manifest.version
    try:
        _install(build.path.parent, build.sha256, DEFAULT_LIMITS)
    except DeployError as exc:
        report(BuildFault(build.sha256, found, False, name, version))
        return f"{build.name} was altered on this host and cannot be deployed again: {exc}"
    report(BuildFault(build.sha256, found, True, name, version))
    log.warning("build %s (%s) unpacked again from its blob", build.name, build.sha256)
    return None


def _deployed(
    root: Path, sha256: str, limits: ArchiveLimits, report: Report
) -> DeployedBuild | None:
    """The build root/sha256 as its blob proves it (unpacked again if it was altered), or
    None: no such folder, or nothing proves it."""
    folder, blob = root / sha256, root / BLOBS / sha256
    if not folder.exists() and not folder.is_symlink() and not blob.exists():
        return None
    try:
        if _file_sha256(blob) != sha256:
            raise DeployError(f"its blob {blob} does not hash to {sha256}")
        inspection = inspect_archive(blob, limits)
    except (OSError, BuildError) as exc:
        reason = "no blob proves it" if isinstance(exc, FileNotFoundError) else str(exc)
        log.error("not announcing %s: %s (a folder not deployed by this host)", folder, reason)
        report(BuildFault(sha256, f"not announced: {reason}", redeployed=False, planted=True))
        return None
    build = DeployedBuild(sha256, folder, inspection.manifest, expected_tree(inspection))
    return build if verify_build(build, report) is None else None


async def _download(
    http: aiohttp.ClientSession,
    url: str,
    sha256: str,
    root: Path,
    limits: ArchiveLimits,
    *,
    headers: dict[str, str],
) -> Path:
    """The archive at `url` in a temporary file under `root`, its sha256 checked."""
    fd, name = tempfile.mkstemp(dir=root, prefix=".download-", suffix=".tmp")
    temp = Path(name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            async with http.get(url, headers=headers) as response:
                if response.status != 200:
                    raise DeployError(
                        f"{url} answered {response.status}: {await _reason(response)}"
                    )
                async for chunk in response.content.iter_chunked(CHUNK):
                    size += len(chunk)
                    if size > limits.max_archive_bytes:
                        raise DeployError(
                            f"{url} sends more than the limit of {limits.max_archive_bytes} bytes"
                        )
                    digest.update(chunk)
                    out.write(chunk)
        if digest.hexdigest() != sha256:
            raise DeployError(
                f"{url} sent an archive whose sha256 is {digest.hexdigest()}, not {sha256}:"
                " refused (damaged on the way, or swapped)"
            )
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)  # at once, even when cancelled: no await here
        if isinstance(exc, aiohttp.ClientError | OSError):
            raise DeployError(f"cannot fetch {url}: {exc or type(exc).__name__}") from None
        raise
    return temp


async def _reason(response: aiohttp.ClientResponse) -> str:
    with contextlib.suppress(aiohttp.ClientError, ValueError):
        body = await response.json(content_type=None)
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return str(body["error"])
    return response.reason or "no reason given"


def _keep(archive: Path, sha256: str, root: Path, limits: ArchiveLimits) -> DeployedBuild:
    """Blocking: keep the verified `archive` as root/.blobs/sha256, then unpack it."""
    blobs = root / BLOBS
    try:
        blobs.mkdir(exist_ok=True)
        os.chmod(archive, 0o444)
        os.replace(archive, blobs / sha256)
    except OSError as exc:
        raise DeployError(f"cannot keep build {sha256} under {blobs}: {exc}") from None
    try:
        return _install(root, sha256, limits)
    except BaseException:
        (blobs / sha256).unlink(missing_ok=True)  # a blob is kept only for a deployed build
        raise


def _install(root: Path, sha256: str, limits: ArchiveLimits) -> DeployedBuild:
    """Blocking: unpack the blob of `sha256` into a temporary folder, check it against the tree
    the blob derives, make it read-only, and put it in place of whatever root/sha256 held."""
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".unpack-"))
    target = root / sha256
    try:
        inspection = extract_archive(root / BLOBS / sha256, staging, limits)
        tree = expected_tree(inspection)
        make_read_only(staging)
        unpacked = difference(tree, tree_on_disk(staging))
        if unpacked is not None:  # our own unpacking, or the disk, is at fault
            raise DeployError(f"build {sha256} did not unpack as its archive says: {unpacked}")
        if target.exists() or target.is_symlink():
            old = Path(tempfile.mkdtemp(dir=root, prefix=".old-"))
            os.rename(target, old / "tree")
            _remove(old)
        os.rename(staging, target)
    except BuildError as exc:
        _remove(staging)
        if isinstance(exc, DeployError):
            raise
        raise DeployError(f"build {sha256} cannot be unpacked: {exc}") from None
    except OSError as exc:
        _remove(staging)
        raise DeployError(f"cannot unpack build {sha256} under {root}: {exc}") from None
    except BaseException:
        _remove(staging)
        raise
    log.info("build %s unpacked: tree sha256 %s", sha256, tree_sha256(tree))
    return DeployedBuild(sha256, target, inspection.manifest, tree)


def _remove(path: Path) -> None:
    make_writable(path)
    remove_tree(path)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as source:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
