"""Archive downloads only by the build's studio and by the network's containers: a real
server with host keys; unsigned, foreign-signed, replayed, stale and other-studio requests are
refused with 401/403 and their reason, a container's signed fetch (streamer/deploy.py) and the
owning studio's key are served."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from builds.catalog import BuildCatalog
from builds.downloads import HOW, FreshNonces
from builds.errors import DeployError, DownloadRefusedError
from builds.http import add_build_routes
from builds.studio_keys import STUDIO_KEYS_FILE, StudioKeys
from builds.upload import upload_build
from contracts.signing import HostCredentials, sign_download
from indexer.keys import KeyStore
from signaling.authentication import download_verifier
from streamer.deploy import deploy
from tests.build_archives import game_zip
from tests.test_deploy import serving

NOW = "2025-03-04T05:06:07+00:00"


@dataclass
class Network:
    url: str
    sha256: str
    path: str  # the archive's path on the server
    body: bytes
    container: HostCredentials  # a live host key of this network
    store: KeyStore
    acme: str  # the key of the studio that uploaded the build
    globex: str  # another studio's key
    clock: list[float]


@pytest.fixture
async def network(http, tmp_path: Path) -> AsyncIterator[Network]:
    data = tmp_path / "data"
    store = KeyStore(tmp_path / "host-keys.json")
    _, key_file = store.issue("rig-1", NOW)
    store.save()
    studios = StudioKeys(data / STUDIO_KEYS_FILE)
    clock = [time.time()]
    app = web.Application()
    add_build_routes(app, BuildCatalog(data), studios, host_keys=download_verifier(store),
                     wall_clock=lambda: clock[0])  # fmt: skip
    acme, globex = studios.issue("acme", NOW)[1], studios.issue("globex", NOW)[1]
    async with serving(app) as url:
        archive = game_zip(tmp_path / "arcade.zip")
        build = await upload_build(http, url, acme, archive)
        path = f"/api/builds/{build['sha256']}/archive"
        yield Network(url, build["sha256"], path, archive.read_bytes(),
                      HostCredentials.parse(key_file), store, acme, globex, clock)  # fmt: skip


async def fetch(http, network: Network, authorization: str | None, path: str = ""):
    headers = {} if authorization is None else {"Authorization": authorization}
    async with http.get(network.url + (path or network.path), headers=headers) as reply:
        body = await reply.read()
        return reply.status, (await reply.json() if reply.status != 200 else body)


def signed(network: Network, credentials: HostCredentials | None = None, **changes) -> str:
    """A container's Authorization header for the archive, with `changes` to its fields."""
    authorization = sign_download(credentials or network.container, "GET", network.path,
                                  network.clock[0])  # fmt: skip
    return dataclasses.replace(authorization, **changes).header()


async def test_the_owning_studio_and_a_signed_container_download_the_archive(
    http, network: Network
) -> None:
    assert await fetch(http, network, f"Bearer {network.acme}") == (200, network.body)
    assert await fetch(http, network, signed(network)) == (200, network.body)


async def test_a_container_deploys_with_its_host_key_and_not_without(
    http, network: Network, tmp_path: Path
) -> None:
    with pytest.raises(DeployError) as caught:
        await deploy(http, network.url, network.sha256, tmp_path / "unsigned")
    assert str(caught.value) == f"{network.url}{network.path} answered 401: {HOW}"
    assert not list((tmp_path / "unsigned").iterdir())  # no temporary file left
    build = await deploy(
        http, network.url, network.sha256, tmp_path / "signed", host_key=network.container
    )
    assert (build.name, build.sha256) == ("arcade", network.sha256)


async def test_unsigned_and_foreign_requests_are_refused_with_their_reason(
    http, network: Network
) -> None:
    foreign_store = KeyStore(network.store.path.with_name("elsewhere.json"))
    foreign = HostCredentials.parse(foreign_store.issue("rogue", NOW)[1])
    other_path = "/api/builds/" + "0" * 64 + "/archive"
    other = sign_download(network.container, "GET", other_path, network.clock[0]).header()
    cases = [
        (None, 401, "missing", HOW),
        ("Basic YWRtaW46YWRtaW4=", 401, "malformed",
         "the Authorization header is not 'Bearer sk_<16 hex>.<secret>'; " + HOW),
        ("Gamecast-Host key_id=hk_1", 401, "malformed",
         "expected 'Gamecast-Host key_id=hk_<16 hex>, ts=<unix seconds>, nonce=<22 to 64"
         " base64url>, sig=<86 base64url>'; " + HOW),
        (signed(network, foreign), 401, "unknown_key",
         f"no key {foreign.key_id} was issued here; " + HOW),
        (other, 401, "bad_signature",
         f"the signature does not match key {network.container.key_id} and this request; "
         + HOW),
        (signed(network, nonce="A" * 22, signature="B" * 86), 401, "bad_signature",
         f"the signature does not match key {network.container.key_id} and this request; "
         + HOW),
        (f"Bearer {network.globex}", 403, "not_yours",
         "this build belongs to another studio; " + HOW),
    ]  # fmt: skip
    for authorization, status, code, reason in cases:
        assert await fetch(http, network, authorization) == (
            status, {"error": reason, "code": code}
        ), authorization  # fmt: skip


async def test_a_signed_download_is_accepted_once_and_only_while_fresh(
    http, network: Network
) -> None:
    header = signed(network)
    assert await fetch(http, network, header) == (200, network.body)
    assert await fetch(http, network, header) == (
        401, {"error": "this signed download was used before", "code": "replayed"}
    )  # fmt: skip
    stale = sign_download(network.container, "GET", network.path, network.clock[0] - 61)
    status, reply = await fetch(http, network, stale.header())
    assert (status, reply["code"]) == (401, "stale")
    assert reply["error"].endswith("sign it anew (and check the host's clock)")
    revoked_at = network.store.revoke(network.container.key_id, NOW).revoked_at
    network.store.save()
    assert await fetch(http, network, signed(network)) == (
        401,
        {"error": f"key {network.container.key_id} of host 'rig-1' was revoked at {revoked_at};"
                  f" {HOW}", "code": "revoked_key"},
    )  # fmt: skip


def test_nonces_are_kept_for_their_window_only_and_bounded() -> None:
    nonces = FreshNonces(window_s=60, limit=2)
    nonces.accept("n1", 1000, now=1000.0)
    with pytest.raises(DownloadRefusedError) as caught:
        nonces.accept("n1", 1000, now=1030.0)
    assert caught.value.code == "replayed"
    nonces.accept("n2", 1000, now=1000.0)
    with pytest.raises(DownloadRefusedError) as caught:
        nonces.accept("n3", 1000, now=1001.0)
    assert (caught.value.code, caught.value.reason) == (
        "busy", "too many signed downloads at once; retry soon"
    )  # fmt: skip
    nonces.accept("n3", 1061, now=1061.0)  # n1 and n2 have left the window: room again
    with pytest.raises(DownloadRefusedError) as caught:
        nonces.accept("n4", 1000, now=1061.0)
    assert caught.value.code == "stale"
