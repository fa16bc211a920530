"""Registration over a real socket: only a live host key, signed over this connection's
challenge, registers a container; forged, replayed and revoked ones are refused with a reason."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contracts.protocol import Register
from indexer.keys import KeyStore
from node.runtime import RunningServer, serve
from signaling.config import ServerConfig
from tests.samples import challenge_of, host_credentials, signed

REGISTER = Register("rig-1", ["reference"], ["x264"], 1280, 720, 60, price_per_minute=0.02)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with serve("127.0.0.1", 0, ServerConfig(host_keys=tmp_path / "keys.json")) as running:
        yield running


async def reply_to(http, server: RunningServer, text_for) -> dict:
    """Open a container socket, send `text_for(challenge)`, return the server's reply."""
    async with http.ws_connect(server.container_url) as ws:
        challenge = await challenge_of(ws)
        await ws.send_str(text_for(challenge))
        return await ws.receive_json()


async def test_a_signed_registration_is_accepted(server, http) -> None:
    key = host_credentials(server)
    reply = await reply_to(http, server, lambda c: signed(REGISTER, key, c))
    assert reply["type"] == "registered"


async def test_a_replayed_registration_is_refused(server, http) -> None:
    key = host_credentials(server)
    captured: list[str] = []

    def capture(challenge: str) -> str:
        captured.append(signed(REGISTER, key, challenge))
        return captured[0]

    assert (await reply_to(http, server, capture))["type"] == "registered"
    reply = await reply_to(http, server, lambda _: captured[0])  # another connection, same bytes
    assert (reply["type"], reply["code"]) == ("error", "wrong_challenge")

    # Echoing the new challenge does not help: the signature covers the old one.
    def edited(challenge: str) -> str:
        body = json.loads(captured[0])
        body["challenge"] = challenge
        return json.dumps(body)

    reply = await reply_to(http, server, edited)
    assert reply["code"] == "bad_signature"


async def test_a_forged_or_altered_registration_is_refused(server, http) -> None:
    key = host_credentials(server)

    def cheaper(challenge: str) -> str:  # signed, then the price changed on the way
        body = json.loads(signed(REGISTER, key, challenge))
        body["price_per_minute"] = 0.0
        return json.dumps(body)

    assert (await reply_to(http, server, cheaper))["code"] == "bad_signature"

    stranger = dataclasses.replace(key, key_id="hk_0123456789abcdef")
    reply = await reply_to(http, server, lambda c: signed(REGISTER, stranger, c))
    assert reply["code"] == "unknown_key"
    reply = await reply_to(http, server, lambda _: REGISTER.to_json())  # no signature at all
    assert reply["code"] == "malformed"


async def test_a_revoked_key_is_refused_by_the_running_server(server, http) -> None:
    key = host_credentials(server)
    assert server.host_keys is not None
    store = KeyStore.load(server.host_keys)
    store.revoke(key.key_id, "2026-11-24T01:00:00+00:00")
    store.save()
    reply = await reply_to(http, server, lambda c: signed(REGISTER, key, c))
    assert (reply["code"], "revoked" in reply["reason"]) == ("revoked_key", True)
