"""The studio's side of an upload: stream an archive file to the server's POST /api/builds.

The file is read and sent in chunks (a build may be hundreds of MiB), with its size declared
up front so that the server can refuse an oversize upload before it is sent. A progress bar
on the given stream (stderr in the CLI) redraws in place. Failures raise UploadError with
the server's own reason; a file that is not readable raises it before anything is sent.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from builds.archive import CHUNK
from builds.errors import UploadError

BAR_WIDTH = 30


def progress_line(label: str, sent: int, total: int, width: int = BAR_WIDTH) -> str:
    """One redraw of the bar, e.g. "arcade.zip [#######-------]  25%  1.0/4.0 MiB"."""
    fraction = 1.0 if total <= 0 else min(1.0, sent / total)
    filled = round(fraction * width)
    bar = "#" * filled + "-" * (width - filled)
    mib = 1024 * 1024
    return f"{label} [{bar}] {fraction:4.0%}  {sent / mib:.1f}/{total / mib:.1f} MiB"


async def upload_build(
    http: aiohttp.ClientSession,
    server_url: str,
    key: str,
    path: Path,
    progress: TextIO | None = None,
) -> dict[str, Any]:
    """Upload the archive at `path` with studio key `key` to `server_url` (http://HOST:PORT);
    the stored build as the server describes it (see builds/http.py)."""
    try:
        source = path.open("rb")
        total = os.fstat(source.fileno()).st_size
    except OSError as exc:
        raise UploadError(f"cannot read {path}: {exc.strerror or exc}") from None
    url = server_url.rstrip("/") + "/api/builds"

    async def body() -> AsyncIterator[bytes]:
        sent = 0
        while chunk := source.read(CHUNK):
            sent += len(chunk)
            if progress is not None:
                progress.write("\r" + progress_line(path.name, sent, total))
                progress.flush()
            yield chunk
        if progress is not None:
            progress.write("\n")

    headers = {"Authorization": f"Bearer {key}", "Content-Length": str(total),
               "Content-Type": "application/octet-stream"}  # fmt: skip
    try:
        with source:
            async with http.post(url, data=body(), headers=headers) as response:
                text = await response.text()
                status = response.status
    except aiohttp.ClientError as exc:
        raise UploadError(f"cannot upload to {url}: {exc or type(exc).__name__}") from None
    try:
        reply = json.loads(text)
    except ValueError:
        reply = None
    if status not in (200, 201) or not isinstance(reply, dict):
        reason = reply.get("error") if isinstance(reply, dict) else None
        raise UploadError(
            f"the server refused the upload ({status}): {reason or text[:200] or 'no reason'}",
            status,
        )
    return reply
