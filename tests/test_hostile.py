"""Hostile and malformed messages: each gets a clear error; the server and sessions live on."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from contracts.input_events import EVENT_BURST
from contracts.protocol import MAX_MESSAGE_BYTES, Heartbeat, HostSpecs, Register, Telemetry
from node.runtime import serve
from signaling.config import ServerConfig
from signaling.connections import MESSAGE_BURST
from signaling.server import TRANSPORT_LIMIT
from tests.conftest import eventually
from tests.samples import challenge_of, host_credentials, signed
from verifier.bot import BotPlayer

BAD_SIGNALING = [
    ("{not json", "malformed"),
    ("[1, 2]", "malformed"),
    ('{"type": "play", "game": "reference"}', "unsupported_version"),
    ('{"v": 1, "type": "launch_missiles"}', "unknown_type"),
    ('{"v": 1, "type": "register", "container": "x"}', "unknown_type"),
    ('{"v": 1, "type": "play", "game": 7}', "bad_field"),
    ('{"v": 1, "type": "play", "game": "reference", "fps": 100000}', "bad_field"),
    ('{"v": 1, "type": "play", "game": "reference", "evil": true}', "bad_field"),
    ('{"v": 1, "type": "offer", "sdp": "v=0"}', "unexpected"),
    ('{"v": 1, "type": "play", "game": "reference", "width": 1281}', "bad_field"),
    ("[" * 60_000, "malformed"),
    (json.dumps({"v": 1, "type": "offer", "sdp": "x" * (MAX_MESSAGE_BYTES + 10)}), "too_large"),
]

BAD_INPUT = [
    ("{oops", "malformed"),
    ('{"type": "teleport", "seq": 1}', "unknown_type"),
    ('{"type": "key", "seq": 1, "code": 5, "down": true}', "bad_field"),
    ('{"type": "key", "seq": 1, "code": "<script>", "down": true}', "bad_field"),
    ('{"type": "pointermove", "seq": 1, "x": 2.5, "y": 0.1}', "out_of_range"),
    ('{"type": "pointerbutton", "seq": 0, "button": 0, "down": true}', "out_of_range"),
    ('{"type": "gamepad", "seq": 1, "axes": [9], "buttons": []}', "out_of_range"),
    (
        json.dumps({"type": "key", "seq": 1, "code": "KeyA", "down": True, "t": "x" * 600}),
        "too_large",
    ),
]


def _telemetry(**changes: object) -> str:
    """A heartbeat whose telemetry is valid but for `changes` (readings left out are None)."""
    gpu = {"index": 0, "name": "NVIDIA L4", "uuid": "GPU-1", "memory_total_mib": 23_034}
    telemetry = {"cpu_percent": 5.0, "ram_used_mib": 10, "gpus": [gpu]}
    return json.dumps({"v": 1, "type": "heartbeat", "telemetry": {**telemetry, **changes}})


GPU = json.loads(_telemetry())["telemetry"]["gpus"][0]
BAD_TELEMETRY = [
    (_telemetry(cpu_percent=1e9), "bad_field", "cpu_percent=1000000000.0 is outside"),
    (_telemetry(cpu_percent={"$gt": 0}), "bad_field", "cpu_percent must be a number"),
    (_telemetry(ram_used_mib=-5), "bad_field", "ram_used_mib=-5 is outside"),
    (_telemetry(gpus=[GPU] * 17), "bad_field", "gpus must be a list of at most 16 objects"),
    (_telemetry(gpus=[{**GPU, "temperature_c": 10**6}]), "bad_field", "temperature_c=1000000"),
    (_telemetry(gpus=[{**GPU, "name": "<script>" * 20}]), "bad_field", "name is longer than 96"),
    (_telemetry(gpus=[{**GPU, "shell": "rm -rf /"}]), "bad_field", "unknown fields ['shell']"),
    (_telemetry(gpus=[[GPU]]), "bad_field", "gpus[0] must be an object"),
    (_telemetry(gpus=[{**GPU, "name": "n" * 5000}] * 16), "too_large", "exceeds 65536"),
]


async def _next_error(ws: aiohttp.ClientWebSocketResponse) -> dict:
    async with asyncio.timeout(5):
        message = json.loads((await ws.receive()).data)
    assert message["type"] == "error", message
    return message


@pytest.mark.parametrize(("raw", "code"), BAD_SIGNALING)
async def test_bad_signaling_gets_an_error_and_the_socket_still_plays(
    network, http, raw, code
) -> None:
    server, _ = network
    async with http.ws_connect(server.player_url, max_msg_size=0) as ws:
        await ws.send_str(raw)
        error = await _next_error(ws)
        assert error["code"] == code
        assert error["reason"]
        await ws.send_str('{"v": 1, "type": "play", "game": "reference"}')
        async with asyncio.timeout(5):
            matched = json.loads((await ws.receive()).data)
        assert matched["type"] == "matched"


async def test_binary_and_flooding_players_are_answered_not_obeyed(network, http) -> None:
    server, _ = network
    async with http.ws_connect(server.player_url) as ws:
        await ws.send_bytes(b"\x00\x01")
        assert (await _next_error(ws))["code"] == "malformed"
        for _ in range(MESSAGE_BURST + 20):
            await ws.send_str('{"v": 1, "type": "end"}')
        codes = set()
        async with asyncio.timeout(5):
            for _ in range(MESSAGE_BURST + 20):
                codes.add(json.loads((await ws.receive()).data)["code"])
        assert codes == {"unexpected", "rate_limited"}


async def test_container_must_register_first(network, http) -> None:
    server, _ = network
    async with http.ws_connect(server.container_url) as ws:
        challenge = await challenge_of(ws)
        await ws.send_str('{"v": 1, "type": "heartbeat"}')
        assert (await _next_error(ws))["code"] == "unexpected"
        register = Register("local-1", [], [], 1280, 720, 60)
        await ws.send_str(register.to_json())  # unsigned
        assert (await _next_error(ws))["code"] == "malformed"
        # Signed, but with another host's key than the one that registered local-1.
        await ws.send_str(signed(register, host_credentials(server), challenge))
        error = await _next_error(ws)
        assert error["code"] == "conflict"
        assert error["reason"] == "container id 'local-1' belongs to another key; choose another id"


async def test_abuse_never_touches_a_live_session(network, http, playing_bot) -> None:
    """A playing bot keeps receiving frames while another client abuses the server."""
    server, _ = network
    bot = playing_bot
    await bot.wait_frames(30)
    async with http.ws_connect(server.player_url, max_msg_size=0) as abuser:
        for raw, _ in BAD_SIGNALING:
            await abuser.send_str(raw)
        await abuser.send_str("x" * (TRANSPORT_LIMIT + 1))  # beyond the transport limit
        async with asyncio.timeout(5):
            while (await abuser.receive()).type is not aiohttp.WSMsgType.CLOSE:
                pass
        assert abuser.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    seen = bot.log.frames
    await bot.wait_frames(seen + 60)
    async with http.get(server.url + "/api/sessions") as response:
        sessions = (await response.json())["sessions"]
    assert [s["state"] for s in sessions] == ["playing"]
    assert bot.session_state == "playing"  # as the bot heard it over its own signaling socket


async def test_bad_input_is_rejected_with_reasons_and_the_session_plays_on(
    network, playing_bot
) -> None:
    _, agent = network
    bot = playing_bot
    await bot.wait_frames(10)
    for raw, _ in BAD_INPUT:
        bot.send_raw(raw)
    await eventually(lambda: len(bot.errors) >= len(BAD_INPUT))
    assert sorted(e["code"] for e in bot.errors) == sorted(code for _, code in BAD_INPUT)
    assert all(e["reason"] for e in bot.errors)

    # A flood far beyond the burst allowance. Only what arrives faster than the refill rate
    # is limited, and a loaded machine's SCTP delivers slower than it is sent (and, the
    # channel being unreliable, drops some): hence so many, and no count of arrivals.
    flood = 8 * EVENT_BURST
    for _ in range(flood):
        bot.send_input({"type": "pointermove", "dx": 1, "dy": 0})
    session = agent.sessions[bot.session_id]
    await eventually(lambda: session.input.rate_limited > 0, seconds=30)
    assert session.input.rejected == len(BAD_INPUT)

    arrived = -1
    async with asyncio.timeout(30):
        while arrived != (arrived := session.input.accepted + session.input.rate_limited):  # noqa: ASYNC110 (a peer's counters)
            await asyncio.sleep(0.3)  # until the flood has stopped arriving
    await asyncio.sleep(1.0)  # let the bucket refill, then a valid event still gets through
    seq = bot.send_input({"type": "key", "code": "KeyW", "down": True})
    assert seq == flood + 1  # numbered after the whole flood
    marker = await bot.wait_input_applied(seq)
    assert marker.input_sequence == seq
    seen = bot.log.frames
    await bot.wait_frames(seen + 30)


async def _real_offer() -> str:
    """A genuine aiortc offer (video recvonly), to be mangled into hostile variants."""
    peer = RTCPeerConnection()
    peer.addTransceiver("video", direction="recvonly")
    await peer.setLocalDescription(await peer.createOffer())
    sdp = peer.localDescription.sdp
    await peer.close()
    return sdp


HOSTILE_SDP = {
    "garbage": lambda sdp: "this is not an SDP",
    "bad DTLS role": lambda sdp: sdp.replace("a=setup:actpass", "a=setup:bogus"),
    "truncated candidate": lambda sdp: re.sub(r"a=candidate:[^\r]*", "a=candidate:1 1 udp", sdp),
    "no usable codec": lambda sdp: re.sub(r"VP8|H264", "VP9", sdp),
}


@pytest.mark.parametrize("variant", HOSTILE_SDP)
async def test_a_hostile_offer_ends_that_session_and_the_container_plays_on(
    network, http, variant: str
) -> None:
    server, _ = network
    async with http.ws_connect(server.player_url) as ws:
        await ws.send_str('{"v": 1, "type": "play", "game": "reference"}')
        assert (await ws.receive_json())["type"] == "matched"
        await ws.send_str(
            json.dumps({"v": 1, "type": "offer", "sdp": HOSTILE_SDP[variant](await _real_offer())})
        )
        async with asyncio.timeout(10):
            ended = await ws.receive_json()
        assert ended["type"] == "ended"
        assert "cannot use the offer" in ended["reason"]

    bot = BotPlayer(server.player_url)  # the same container, still alive, serves the next player
    async with bot.play(http):
        await bot.wait_frames(10)


async def test_an_expired_container_is_told_and_its_old_socket_cannot_undo_a_new_one(http) -> None:
    config = ServerConfig(heartbeat_period=0.1, missed_heartbeats=2)
    register = Register("c1", ["reference"], ["x264"], 1280, 720, 60).to_json()
    async with serve("127.0.0.1", 0, config) as server:
        old = await http.ws_connect(server.container_url)
        await challenge_of(old)
        await old.send_str(register)
        assert (await old.receive_json())["type"] == "registered"
        await asyncio.sleep(0.5)  # silent past two heartbeat periods: the sweep expires it
        await old.send_str(Heartbeat().to_json())
        assert (await old.receive_json())["code"] == "expired"

        async with http.ws_connect(server.container_url) as new:
            await challenge_of(new)
            await new.send_str(register)
            assert (await new.receive_json())["type"] == "registered"
            await old.close()
            await new.send_str(Heartbeat().to_json())
            async with http.get(server.url + "/api/containers") as response:
                rows = (await response.json())["containers"]
            assert [r["container"] for r in rows] == ["c1"]


async def test_hostile_specs_and_telemetry_are_refused_while_a_session_plays_on(
    network, http, playing_bot
) -> None:
    """A second container sends out-of-range, mistyped and oversized specs and telemetry: each
    gets a coded error with a reason, it stays registered, and the bot's session never stalls."""
    server, _ = network
    bot = playing_bot
    await bot.wait_frames(10)
    register = Register("evil", ["reference"], ["x264"], 1280, 720, 60, HostSpecs("x", 1, 1, []))
    async with http.ws_connect(server.container_url) as evil:
        challenge = await challenge_of(evil)
        hostile_host = json.loads(register.to_json())
        hostile_host["host"]["cpu_cores"] = 0
        await evil.send_str(json.dumps(hostile_host))
        error = await _next_error(evil)
        assert (error["code"], error["ref"]) == ("bad_field", "")
        assert "register.host.cpu_cores=0 is outside [1, 4096]" in error["reason"]
        await evil.send_str(signed(register, host_credentials(server), challenge))
        assert (await evil.receive_json())["type"] == "registered"

        for raw, code, fragment in BAD_TELEMETRY:
            await evil.send_str(raw)
            error = await _next_error(evil)
            assert error["code"] == code
            assert fragment in error["reason"]

        await evil.send_str(Heartbeat(Telemetry(7.5, 10, [])).to_json())
        async with asyncio.timeout(5):
            while True:
                async with http.get(server.url + "/api/containers") as response:
                    rows = {r["container"]: r for r in (await response.json())["containers"]}
                if rows["evil"]["host_load"] is not None:
                    break
                await asyncio.sleep(0.02)
        assert rows["evil"]["host_load"]["cpu_percent"] == 7.5
        assert (rows["evil"]["gpu"], rows["evil"]["gpus"]) == ("cpu-only", [])
        assert rows["local-1"]["availability"] == "in_session"

    seen = bot.log.frames
    await bot.wait_frames(seen + 30)
    async with http.get(server.url + "/api/sessions") as response:
        sessions = (await response.json())["sessions"]
    assert [(s["container"], s["state"]) for s in sessions] == [("local-1", "playing")]
