"""The builds' REST API on a real aiohttp server (loopback, ephemeral port): studios upload
real zip and tar.gz files with the upload client and the CLI; refusals carry a status and a
JSON reason, and leave no blob, no row and no temporary file behind."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import os
import sqlite3
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from builds import cli
from builds.catalog import BuildCatalog
from builds.errors import UploadError
from builds.http import add_build_routes
from builds.members import ArchiveLimits
from builds.studio_keys import STUDIO_KEYS_FILE, StudioKeys
from builds.upload import progress_line, upload_build
from tests.build_archives import (
    RawMember,
    game_tar,
    game_zip,
    honest_members,
    manifest_bytes,
    raw_zip,
    write_zip,
    zip_entry,
)
from tests.conftest import eventually

NOW = "2025-03-04T05:06:07+00:00"
LIMIT = 256 * 1024


@dataclass
class BuildServer:
    url: str
    catalog: BuildCatalog
    keys: StudioKeys
    acme: str  # a live key of studio "acme"

    def leftovers(self) -> tuple[list[str], int]:
        """The blob folder's files (temporary ones included) and the number of rows."""
        with sqlite3.connect(self.catalog.database) as db:
            (rows,) = db.execute("SELECT count(*) FROM builds").fetchone()
        return sorted(os.listdir(self.catalog.blobs)), rows


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[BuildServer]:
    data = tmp_path / "data"
    catalog = BuildCatalog(data, ArchiveLimits(max_archive_bytes=LIMIT))
    keys = StudioKeys(data / STUDIO_KEYS_FILE)
    app = web.Application()
    add_build_routes(app, catalog, keys, clock=lambda: NOW)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield BuildServer(f"http://{host}:{port}", catalog, keys, keys.issue("acme", NOW)[1])
    finally:
        await runner.cleanup()


async def post(http, server: BuildServer, body, key: str | None = None, **headers):
    key = server.acme if key is None else key
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    async with http.post(f"{server.url}/api/builds", data=body, headers=auth | headers) as reply:
        return reply.status, await reply.json(), reply.headers


async def test_upload_list_fetch_a_zip_and_a_tar_gz(server, http, tmp_path: Path) -> None:
    archive = game_zip(tmp_path / "arcade.zip")
    progress = io.StringIO()
    build = await upload_build(http, server.url, server.acme, archive, progress)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert build == {
        "name": "arcade",
        "version": "1.0.0",
        "sha256": digest,
        "size": archive.stat().st_size,
        "format": "zip",
        "studio": "acme",
        "uploaded_at": NOW,
        "manifest": server.catalog.get(digest).manifest.to_dict(),
    }
    size = archive.stat().st_size
    assert progress.getvalue().endswith("\r" + progress_line("arcade.zip", size, size) + "\n")

    tarball = game_tar(tmp_path / "arcade-1.1.tar.gz", manifest_bytes(version="1.1.0"))
    second = await upload_build(http, server.url, server.acme, tarball)
    async with http.get(f"{server.url}/api/builds") as reply:
        assert (reply.status, await reply.json()) == (200, {"builds": [build, second]})
    async with http.get(f"{server.url}/api/builds/{digest}") as reply:
        assert (reply.status, await reply.json()) == (200, build)
    async with http.get(f"{server.url}/api/builds/{second['sha256']}/archive") as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"] == "application/gzip"
        assert reply.headers["Content-Disposition"] == (
            'attachment; filename="arcade-1.1.0.tar.gz"'
        )
        assert await reply.read() == tarball.read_bytes()


async def test_the_same_bytes_twice_answer_200_with_the_stored_build(
    server, http, tmp_path: Path
) -> None:
    archive = game_zip(tmp_path / "arcade.zip")
    status, first, _ = await post(http, server, archive.read_bytes())
    assert status == 201
    status, again, _ = await post(http, server, archive.read_bytes())
    assert (status, again) == (200, first)
    assert server.leftovers() == ([f"{first['sha256']}.zip"], 1)


async def test_uploads_need_a_live_studio_key(server, http, tmp_path: Path) -> None:
    body = game_zip(tmp_path / "arcade.zip").read_bytes()
    status, reply, headers = await post(http, server, body, key="")
    assert (status, reply) == (
        401,
        {"error": "send the studio key as 'Authorization: Bearer <key>'", "code": "missing"},
    )
    assert headers["WWW-Authenticate"] == "Bearer"
    key_id = server.acme.partition(".")[0]
    server.keys.revoke(key_id, NOW)
    status, reply, _ = await post(http, server, body)
    assert (status, reply["code"]) == (401, "revoked_key")
    assert server.leftovers() == ([], 0)


async def test_another_studio_cannot_take_a_name_or_a_version_change(
    server, http, tmp_path: Path
) -> None:
    first = await upload_build(http, server.url, server.acme, game_zip(tmp_path / "a.zip"))
    rival = server.keys.issue("rival", NOW)[1]
    status, reply, _ = await post(
        http, server, game_zip(tmp_path / "b.zip", x=b"1").read_bytes(), key=rival
    )
    assert (status, reply) == (
        403,
        {"error": "the build name 'arcade' belongs to another studio; choose another name"},
    )
    with pytest.raises(UploadError) as caught:
        await upload_build(http, server.url, server.acme, game_zip(tmp_path / "c.zip", x=b"2"))
    assert caught.value.status == 409
    assert str(caught.value) == (
        f"the server refused the upload (409): arcade 1.0.0 was uploaded before with other"
        f" content (sha256 {first['sha256']}); a version never changes: upload it as a new"
        " version"
    )
    assert server.leftovers() == ([f"{first['sha256']}.zip"], 1)


async def test_an_oversize_upload_is_refused_by_its_length_or_while_streaming(server, http) -> None:
    status, reply, _ = await post(http, server, b"\x1f\x8b" + bytes(LIMIT))
    assert (status, reply) == (
        413,
        {"error": f"the upload is {LIMIT + 2} bytes, over the limit of {LIMIT}"},
    )

    async def unannounced() -> AsyncIterator[bytes]:  # chunked: no Content-Length to refuse
        for _ in range(2 * LIMIT // 4096):
            yield b"\x1f\x8b" + bytes(4094)

    status, reply, _ = await post(http, server, unannounced())
    assert (status, reply) == (413, {"error": f"the upload is over the limit of {LIMIT} bytes"})
    assert server.leftovers() == ([], 0)


@pytest.mark.parametrize(
    ("entries", "reply"),
    [
        ([zip_entry("manifest.json", manifest_bytes()), zip_entry("../../evil.sh", b"rm -rf")],
         {"error": "refused member '../../evil.sh': the path has a '..' component",
          "member": "'../../evil.sh'"}),
        ([zip_entry("manifest.json", manifest_bytes(fps=500))],
         {"error": "manifest.json: fps: expected a whole number from 1 to 240, got 500",
          "field": "fps"}),
        ([zip_entry("game.py", b"")],
         {"error": "the archive has no manifest.json at its root (see builds/MANIFEST.md)"}),
    ],
)  # fmt: skip
async def test_bad_archives_are_refused_with_a_reason_and_leave_nothing(
    server, http, tmp_path: Path, entries, reply
) -> None:
    archive = write_zip(tmp_path / "bad.zip", entries)
    status, body, _ = await post(http, server, archive.read_bytes())
    assert (status, body) == (400, reply)
    assert server.leftovers() == ([], 0)
    assert sorted(os.listdir(tmp_path)) == ["bad.zip", "data"]


async def test_hostile_archives_get_a_4xx_with_a_short_escaped_reason(
    server, http, tmp_path: Path
) -> None:
    hostile = "\x1b[2J\x1b]0;owned\x07/" + "a/" * 1000 + "../x"
    tar_path = tmp_path / "escape.tar.gz"
    with tarfile.open(tar_path, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(tarfile.TarInfo(hostile), io.BytesIO(b""))
    two_faced = honest_members()
    two_faced[1].local["name"] = b"evil.py"
    bomb = honest_members()
    bomb.append(RawMember("zeros.bin", bytes(1_000_000), central={"size": 10}, local={"size": 10}))
    utf8 = honest_members()
    utf8.append(RawMember("x", b"", local={"flags": 0x800, "name": b"\xff"},
                          central={"flags": 0x800, "name": b"\xff"}))  # fmt: skip
    cases = [
        (tar_path, 400, {
            "error": "refused member '\\x1b[2J\\x1b]0;owned\\x07/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a'"
                     "...[+1971 chars]: the path has a '..' component",
            "member": "'\\x1b[2J\\x1b]0;owned\\x07/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a'"
                      "...[+1971 chars]",
        }),
        (raw_zip(tmp_path / "two.zip", two_faced), 400, {
            "error": "member 'game.py': its local header and the central directory disagree on"
                     " its name (the local header says 'evil.py')"}),
        (raw_zip(tmp_path / "bomb.zip", bomb), 413, {
            "error": "member 'zeros.bin' unpacks to more than the 10 bytes its headers declare"}),
        (raw_zip(tmp_path / "utf8.zip", utf8), 400, {
            "error": "the zip archive is damaged: 'utf-8' codec can't decode byte 0xff in"
                     " position 0: invalid start byte"}),
    ]  # fmt: skip
    for path, status, reply in cases:
        got = await post(http, server, path.read_bytes())
        assert got[:2] == (status, reply), path.name
        assert len(reply["error"]) < 160 and "\x1b" not in str(got[1])
    assert server.leftovers() == ([], 0)


async def test_an_empty_body_is_refused(server, http) -> None:
    status, reply, _ = await post(http, server, b"")
    assert (status, reply) == (400, {"error": "the request has no body: send the archive's bytes"})
    assert server.leftovers() == ([], 0)


async def test_a_broken_upload_leaves_no_temporary_file(server, tmp_path: Path) -> None:
    body = game_zip(tmp_path / "a.zip", noise=os.urandom(100_000)).read_bytes()
    host, port = server.url.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST /api/builds HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {server.acme}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[: len(body) // 2]
    )
    await writer.drain()
    await eventually(lambda: len(server.leftovers()[0]) == 1)  # the upload is under way
    writer.close()  # the studio's connection drops halfway
    await writer.wait_closed()
    await eventually(lambda: server.leftovers() == ([], 0))


async def test_unknown_or_malformed_build_ids(server, http) -> None:
    async with http.get(f"{server.url}/api/builds/{'a' * 64}") as reply:
        assert (reply.status, await reply.json()) == (
            404,
            {"error": f"no build has sha256 {'a' * 64}"},
        )
    async with http.get(f"{server.url}/api/builds/ABC/archive") as reply:
        assert (reply.status, await reply.json()) == (
            400,
            {"error": "'ABC' is not a sha256: 64 lowercase hex digits"},
        )


async def test_the_client_names_an_unreachable_server_and_an_unreadable_file(
    http, tmp_path: Path
) -> None:
    with pytest.raises(UploadError) as caught:
        await upload_build(http, "http://127.0.0.1:1", "k", game_zip(tmp_path / "a.zip"))
    assert str(caught.value).startswith("cannot upload to http://127.0.0.1:1/api/builds: ")
    assert caught.value.status is None
    with pytest.raises(UploadError) as caught:
        await upload_build(http, "http://127.0.0.1:1", "k", tmp_path / "missing.zip")
    assert str(caught.value) == f"cannot read {tmp_path / 'missing.zip'}: No such file or directory"


def test_the_progress_bar() -> None:
    assert progress_line("a.zip", 0, 4 * 1024 * 1024, width=8) == (
        "a.zip [--------]   0%  0.0/4.0 MiB"
    )
    assert progress_line("a.zip", 1024 * 1024, 4 * 1024 * 1024, width=8) == (
        "a.zip [##------]  25%  1.0/4.0 MiB"
    )
    assert progress_line("empty.zip", 0, 0, width=4) == "empty.zip [####] 100%  0.0/0.0 MiB"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gamecast")
    cli.add_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


async def test_the_cli_issues_keys_and_uploads(server, tmp_path: Path, capsys) -> None:
    data = str(server.catalog.root)
    assert cli.run(parse("studio-keys", "--data", data, "issue", "Beta Studio")) == 0
    issued = capsys.readouterr().out
    key = issued.split("key (shown only now; keep it secret): ")[1].split()[0]
    key_id = key.partition(".")[0]
    assert issued.startswith(f"issued {key_id} for studio 'Beta Studio'\n")

    archive = game_tar(tmp_path / "beta.tar.gz", manifest_bytes(name="beta"))
    args = parse("upload", str(archive), "--server", server.url, "--key", key)
    assert await asyncio.to_thread(cli.run, args) == 0
    out, err = capsys.readouterr()
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert out == f"stored beta 1.0.0: sha256 {digest}, {archive.stat().st_size} bytes, at {NOW}\n"
    assert "beta.tar.gz [" in err and "100%" in err

    assert cli.run(parse("studio-keys", "--data", data, "revoke", key_id)) == 0
    assert cli.run(parse("studio-keys", "--data", data, "list")) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[-1].startswith(f"{key_id}  Beta Studio")
    assert listing[-1].endswith("  revoked " + server.keys.issued_keys()[-1].revoked_at)
    assert await asyncio.to_thread(cli.run, args) == 1
    assert capsys.readouterr().err.endswith(
        f"gamecast upload: the server refused the upload (401): studio key {key_id} was revoked"
        f" at {server.keys.issued_keys()[-1].revoked_at}\n"
    )
