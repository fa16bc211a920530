"""The builds' REST API on the signaling server's aiohttp app.

  POST /api/builds                  a studio uploads an archive: `Authorization: Bearer <key>`,
                                    the raw archive as the body (any content type). 201 with
                                    the build, or 200 when these bytes were stored before.
  GET  /api/builds                  {"builds": [build, ...]}, oldest first
  GET  /api/builds/{sha256}         one build
  GET  /api/builds/{sha256}/archive the archive's bytes (streamed from disk), for its studio
                                    (`Authorization: Bearer <key>`) and the network's
                                    containers (`Authorization: Gamecast-Host ...`, signed
                                    with a host key: builds/downloads.py); 401 or 403 with
                                    {"error", "code"} otherwise. A server without host keys
                                    (no `host_keys` given) serves archives to anyone.

A build is BuildRecord.to_json(): name, version, sha256, size, format, studio, uploaded_at,
manifest. Refusals are JSON {"error": reason} (plus "code", "field" or "member" where the
error has one) with 400 (a bad archive or manifest, a malformed sha256), 401 (no live key),
403 (the name is another studio's), 404, 409 (the version exists with other content), 413
(over a size limit: the declared Content-Length is refused before a byte is read, and a body
without one is cut off where it passes the limit) or 500 (the server's storage failed).

The body goes to disk chunk by chunk as it arrives, never whole in memory (each chunk is
written from the event loop: a page-cache write of at most 256 KiB); checking and storing the
archive, which reads it all, and every SQLite query run in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import hdrs, web

from builds.archive import CHUNK
from builds.catalog import SHA256, BuildCatalog, BuildRecord
from builds.downloads import DownloadGate, FreshNonces, HostVerifier
from builds.errors import (
    ArchiveError,
    BuildConflictError,
    BuildError,
    BuildOwnershipError,
    BuildTooLargeError,
    DownloadRefusedError,
    ManifestError,
    StudioKeyError,
    UnsafeArchiveError,
    shown,
)
from builds.studio_keys import StudioKeys

log = logging.getLogger(__name__)

CATALOG = web.AppKey("build_catalog", BuildCatalog)
_STATUS: tuple[tuple[type[BuildError], int], ...] = (
    (StudioKeyError, 401),
    (BuildOwnershipError, 403),
    (BuildConflictError, 409),
    (BuildTooLargeError, 413),
    (ManifestError, 400),
    (ArchiveError, 400),
)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def add_build_routes(
    app: web.Application,
    catalog: BuildCatalog,
    keys: StudioKeys,
    clock: Callable[[], str] = utc_now,
    *,
    host_keys: HostVerifier | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> None:
    """Serve `catalog` on `app`, uploads authenticated by `keys`; `clock` stamps uploads.
    Archives go to their studio and to containers whose signature `host_keys` verifies (at
    `wall_clock`'s time); without `host_keys`, to anyone, as registrations are then unsigned."""
    app[CATALOG] = catalog
    if host_keys is None:
        log.warning("build archives are served to anyone: no host key store configured")
    gate = None if host_keys is None else DownloadGate(keys, host_keys, FreshNonces())
    api = _BuildApi(catalog, keys, clock, gate, wall_clock)
    app.router.add_post("/api/builds", api.upload)
    app.router.add_get("/api/builds", api.list_builds)
    app.router.add_get("/api/builds/{sha256}", api.one_build)
    app.router.add_get("/api/builds/{sha256}/archive", api.archive)


class _BuildApi:
    def __init__(
        self,
        catalog: BuildCatalog,
        keys: StudioKeys,
        clock: Callable[[], str],
        gate: DownloadGate | None,
        wall_clock: Callable[[], float],
    ) -> None:
        self.catalog = catalog
        self.keys = keys
        self.clock = clock
        self.gate = gate
        self.wall_clock = wall_clock

    async def upload(self, request: web.Request) -> web.Response:
        limit = self.catalog.limits.max_archive_bytes
        try:
            header = request.headers.get(hdrs.AUTHORIZATION)
            key = await asyncio.to_thread(self.keys.authenticate, header)
            if request.content_length is not None and request.content_length > limit:
                raise BuildTooLargeError(
                    f"the upload is {request.content_length} bytes, over the limit of {limit}"
                )
            with self.catalog.start_upload() as pending:
                try:
                    async for chunk in request.content.iter_chunked(CHUNK):
                        pending.write(chunk)
                except ConnectionResetError:  # the studio's side, not a fault of the server's
                    log.info("an upload of studio %r broke off; nothing is kept", key.studio)
                    return _error(400, "the connection was lost before the upload's end")
                if pending.size == 0:
                    raise ArchiveError("the request has no body: send the archive's bytes")
                record, created = await asyncio.to_thread(pending.finish, key.studio, self.clock())
        except BuildError as exc:
            return _refusal(exc)
        if created:
            log.info(
                "studio %r uploaded %s %s (%s, %d bytes)",
                key.studio, record.manifest.name, record.manifest.version, record.sha256,
                record.size,
            )  # fmt: skip
        return web.json_response(record.to_json(), status=201 if created else 200)

    async def list_builds(self, request: web.Request) -> web.Response:
        try:
            records = await asyncio.to_thread(self.catalog.builds)
        except BuildError as exc:
            return _refusal(exc)
        return web.json_response({"builds": [record.to_json() for record in records]})

    async def one_build(self, request: web.Request) -> web.Response:
        found = await self._find(request)
        return found if isinstance(found, web.Response) else web.json_response(found.to_json())

    async def archive(self, request: web.Request) -> web.StreamResponse:
        found = await self._find(request)
        if isinstance(found, web.Response):
            return found
        if self.gate is not None:
            header = request.headers.get(hdrs.AUTHORIZATION)
            try:
                who = await asyncio.to_thread(
                    self.gate.allow, header, request.method, request.path, found.studio,
                    self.wall_clock(),
                )  # fmt: skip
            except BuildError as exc:
                return _refusal(exc)
            log.info("build %s (%s) downloaded by %s", found.manifest.name, found.sha256,
                     who.describe())  # fmt: skip
        name = f"{found.manifest.name}-{found.manifest.version}.{found.format.value}"
        return web.FileResponse(
            self.catalog.archive_path(found),
            headers={
                hdrs.CONTENT_TYPE: found.format.media_type,
                hdrs.CONTENT_DISPOSITION: f'attachment; filename="{name}"',
                hdrs.ETAG: f'"{found.sha256}"',
            },
        )

    async def _find(self, request: web.Request) -> BuildRecord | web.Response:
        """The build the URL names, or the response that says why there is none."""
        sha256 = request.match_info["sha256"]
        if not SHA256.fullmatch(sha256):
            return _error(400, f"{sha256!r} is not a sha256: 64 lowercase hex digits")
        try:
            record = await asyncio.to_thread(self.catalog.get, sha256)
        except BuildError as exc:
            return _refusal(exc)
        return record if record is not None else _error(404, f"no build has sha256 {sha256}")


def _refusal(exc: BuildError) -> web.Response:
    status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)
    body: dict[str, Any] = {}
    if isinstance(exc, DownloadRefusedError):
        status = exc.status
        body["code"] = exc.code
    elif isinstance(exc, StudioKeyError):
        body["code"] = exc.code
    elif isinstance(exc, ManifestError):
        body["field"] = exc.field
    elif isinstance(exc, UnsafeArchiveError):
        body["member"] = shown(exc.member)  # the studio's own name, cut short and escaped
    if status == 500:
        log.error("build catalog failure: %s", exc)
    challenge = "Bearer, Gamecast-Host" if isinstance(exc, DownloadRefusedError) else "Bearer"
    headers = {"WWW-Authenticate": challenge} if status == 401 else None
    return _error(status, str(exc), body, headers)


def _error(
    status: int,
    reason: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.json_response({"error": reason, **(extra or {})}, status=status, headers=headers)
