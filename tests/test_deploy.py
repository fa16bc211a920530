"""Deploying builds on a container: fetched from a real server, verified by hash, unpacked
whole or not at all; what is deployed is listed from disk."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from builds.catalog import BuildCatalog
from builds.errors import DeployError
from builds.http import add_build_routes
from builds.members import ArchiveLimits
from builds.studio_keys import STUDIO_KEYS_FILE, StudioKeys
from builds.tree import FILE, TreeEntry
from builds.upload import upload_build
from streamer.deploy import deploy, deployed_builds
from tests.build_archives import (
    GAME,
    files_under,
    game_tar,
    game_zip,
    manifest_bytes,
    tar_entry,
    write_tar,
)


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """`app` on 127.0.0.1 at an ephemeral port; its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def build_server(data: Path) -> AsyncIterator[tuple[str, str]]:
    """The real builds API over a catalog in `data`: its URL and a studio key."""
    keys = StudioKeys(data / STUDIO_KEYS_FILE)
    app = web.Application()
    add_build_routes(app, BuildCatalog(data), keys)
    async with serving(app) as url:
        yield url, keys.issue("acme", "2025-01-01T00:00:00+00:00")[1]


def archive_app(answer: Callable[[str], web.StreamResponse]) -> web.Application:
    """A server whose archive route answers with `answer(sha256)`: a liar, or a hostile one."""

    async def archive(request: web.Request) -> web.StreamResponse:
        return answer(request.match_info["sha256"])

    app = web.Application()
    app.router.add_get("/api/builds/{sha256}/archive", archive)
    return app


async def test_a_build_is_fetched_verified_and_unpacked(http, tmp_path: Path) -> None:
    root = tmp_path / "deployed"
    async with build_server(tmp_path / "data") as (url, key):
        uploaded = await upload_build(http, url, key, game_zip(tmp_path / "arcade.zip"))
        build = await deploy(http, url, uploaded["sha256"], root)
    sha256 = uploaded["sha256"]
    assert (build.sha256, build.path, build.name) == (sha256, root / sha256, "arcade")
    assert build.manifest.to_dict() == uploaded["manifest"]
    assert files_under(root) == [
        ".blobs", f".blobs/{sha256}", sha256, f"{sha256}/game.py", f"{sha256}/manifest.json"
    ]  # fmt: skip
    assert (root / ".blobs" / sha256).read_bytes() == (tmp_path / "arcade.zip").read_bytes()
    assert (build.path / "game.py").read_bytes() == GAME
    modes = [stat.S_IMODE(os.stat(path).st_mode) for path in
             (build.path, build.path / "game.py", build.path / "manifest.json")]  # fmt: skip
    assert modes == [0o555, 0o555, 0o444]  # read-only, the executable bit kept
    assert build.tree["game.py"] == TreeEntry(FILE, 0o555, hashlib.sha256(GAME).hexdigest())
    assert deployed_builds(root) == [build]


async def test_deploying_again_needs_no_server(http, tmp_path: Path) -> None:
    root = tmp_path / "deployed"
    async with build_server(tmp_path / "data") as (url, key):
        uploaded = await upload_build(http, url, key, game_tar(tmp_path / "arcade.tar.gz"))
        first = await deploy(http, url, uploaded["sha256"], root)
    assert await deploy(http, url, uploaded["sha256"], root) == first  # the server is gone
    sha256 = first.sha256
    assert files_under(root) == sorted(
        [".blobs", f".blobs/{sha256}", sha256, f"{sha256}/game.py", f"{sha256}/manifest.json"]
    )


async def test_deployed_builds_are_listed_by_name(http, tmp_path: Path) -> None:
    root = tmp_path / "deployed"
    async with build_server(tmp_path / "data") as (url, key):
        builds = []
        for name in ("zebra", "arcade"):
            archive = game_zip(tmp_path / f"{name}.zip", manifest_bytes(name=name))
            uploaded = await upload_build(http, url, key, archive)
            builds.append(await deploy(http, url, uploaded["sha256"], root))
    (root / ".unpack-interrupted").mkdir()  # temporary names never count
    (root / ("0" * 64)).mkdir()  # a folder without a manifest is not a build
    assert [b.name for b in deployed_builds(root)] == ["arcade", "zebra"]
    assert deployed_builds(tmp_path / "nothing-here") == []


async def test_bytes_with_another_hash_are_refused(http, tmp_path: Path) -> None:
    root = tmp_path / "deployed"
    honest = game_zip(tmp_path / "arcade.zip").read_bytes()
    wanted = hashlib.sha256(honest).hexdigest()
    swapped = game_zip(tmp_path / "evil.zip", backdoor=b"x").read_bytes()
    async with serving(archive_app(lambda _: web.Response(body=swapped))) as url:
        with pytest.raises(DeployError) as caught:
            await deploy(http, url, wanted, root)
    assert str(caught.value) == (
        f"{url}/api/builds/{wanted}/archive sent an archive whose sha256 is"
        f" {hashlib.sha256(swapped).hexdigest()}, not {wanted}: refused (damaged on the way,"
        " or swapped)"
    )
    assert os.listdir(root) == []


async def test_a_hostile_archive_is_refused_and_nothing_is_left(http, tmp_path: Path) -> None:
    root = tmp_path / "deployed"
    hostile = write_tar(
        tmp_path / "hostile.tar.gz",
        [tar_entry("manifest.json", manifest_bytes()), tar_entry("../../../evil", b"x")],
    ).read_bytes()
    sha256 = hashlib.sha256(hostile).hexdigest()
    async with serving(archive_app(lambda _: web.Response(body=hostile))) as url:
        with pytest.raises(DeployError) as caught:
            await deploy(http, url, sha256, root)
    assert str(caught.value) == (
        f"build {sha256} cannot be unpacked: refused member '../../../evil': the path has a"
        " '..' component"
    )
    assert os.listdir(root) == [".blobs"]
    assert os.listdir(root / ".blobs") == []  # no blob kept for a build that is not deployed
    assert sorted(os.listdir(tmp_path)) == ["deployed", "hostile.tar.gz"]


async def test_an_archive_over_the_limit_is_cut_off(http, tmp_path: Path) -> None:
    root = tmp_path / "deployed"
    big = os.urandom(100_000)
    sha256 = hashlib.sha256(big).hexdigest()
    async with serving(archive_app(lambda _: web.Response(body=big))) as url:
        with pytest.raises(DeployError) as caught:
            await deploy(http, url, sha256, root, ArchiveLimits(max_archive_bytes=50_000))
    assert str(caught.value) == (
        f"{url}/api/builds/{sha256}/archive sends more than the limit of 50000 bytes"
    )
    assert os.listdir(root) == []


async def test_refusals_and_failures_say_what_happened(http, tmp_path: Path) -> None:
    root = tmp_path / "deployed"
    async with build_server(tmp_path / "data") as (url, _):
        with pytest.raises(DeployError) as caught:
            await deploy(http, url, "f" * 64, root)
        assert str(caught.value) == (
            f"{url}/api/builds/{'f' * 64}/archive answered 404: no build has sha256 {'f' * 64}"
        )
    with pytest.raises(DeployError) as caught:
        await deploy(http, url, "f" * 64, root)  # the server is gone
    assert str(caught.value).startswith(f"cannot fetch {url}/api/builds/{'f' * 64}/archive: ")
    with pytest.raises(DeployError) as caught:
        await deploy(http, url, "../etc", root)
    assert str(caught.value) == "'../etc' is not a sha256: 64 lowercase hex digits"
    assert os.listdir(root) == []
