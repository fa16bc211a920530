"""A container's builds on disk: fetch, verify and unpack the builds it is asked to host.

`root/<sha256>/` holds one unpacked build, its manifest.json among its files; what is there
is what the container announces as deployed (`deployed_builds`), which the indexer's
"build deployed" filter reads. A build appears there whole or not at all: the archive is
downloaded to a temporary file while it is hashed, refused unless its sha256 is the one
asked for (the server, or anyone between, cannot swap a build), unpacked by builds/archive.py
(the same checks as an upload) into a temporary folder, and only then renamed into place.
Temporary names start with "." and never count as deployed; a failure removes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import hdrs

from builds.archive import CHUNK, DEFAULT_LIMITS, extract_archive, remove_tree
from builds.catalog import SHA256
from builds.errors import BuildError, DeployError
from builds.manifest import MANIFEST_NAME, Manifest, parse_manifest
from builds.members import ArchiveLimits
from contracts.signing import HostCredentials, sign_download

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeployedBuild:
    """A build unpacked on this host: run `manifest.entry` with `path` as the working folder."""

    sha256: str
    path: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        """The game id players ask for."""
        return self.manifest.name


async def deploy(
    http: aiohttp.ClientSession,
    server_url: str,
    sha256: str,
    root: Path,
    limits: ArchiveLimits = DEFAULT_LIMITS,
    *,
    host_key: HostCredentials | None = None,
) -> DeployedBuild:
    """Make the build `sha256` of the server at `server_url` (http://HOST:PORT) deployed under
    `root`: at once when it already is, else fetched, verified and unpacked. The fetch is
    signed with `host_key` (builds/downloads.py); None fetches unsigned, which only a network
    without host keys serves. Raises DeployError saying what failed; nothing partial is left
    under `root`."""
    if not SHA256.fullmatch(sha256):
        raise DeployError(f"{sha256!r} is not a sha256: 64 lowercase hex digits")
    there = await asyncio.to_thread(_deployed, root / sha256)
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
        return await asyncio.to_thread(_unpack, archive, sha256, root, limits)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(archive)  # the unpacked folder is what stays; an open reader keeps its copy


def deployed_builds(root: Path) -> list[DeployedBuild]:
    """The builds unpacked under `root`, by name then sha256; a folder whose manifest cannot
    be read is skipped with a warning (it was not made by `deploy`)."""
    if not root.is_dir():
        return []
    found = [_deployed(path) for path in root.iterdir() if SHA256.fullmatch(path.name)]
    return sorted((b for b in found if b is not None), key=lambda b: (b.name, b.sha256))


def _deployed(path: Path) -> DeployedBuild | None:
    try:
        manifest = parse_manifest((path / MANIFEST_NAME).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, BuildError) as exc:
        log.warning("ignoring %s, which is not a deployed build: %s", path, exc)
        return None
    return DeployedBuild(path.name, path, manifest)


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


def _unpack(archive: Path, sha256: str, root: Path, limits: ArchiveLimits) -> DeployedBuild:
    """Blocking: unpack `archive` into a temporary folder, then rename it to root/sha256."""
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".unpack-"))
    try:
        inspection = extract_archive(archive, staging, limits)
        os.rename(staging, root / sha256)
    except BuildError as exc:
        remove_tree(staging)
        raise DeployError(f"build {sha256} cannot be unpacked: {exc}") from None
    except OSError as exc:
        remove_tree(staging)
        there = _deployed(root / sha256)  # another deploy of the same build finished first
        if there is not None:
            return there
        raise DeployError(f"cannot unpack build {sha256} under {root}: {exc}") from None
    except BaseException:
        remove_tree(staging)
        raise
    return DeployedBuild(sha256, root / sha256, inspection.manifest)
