"""A real aiortc player through the real signaling server to a real container agent."""

from __future__ import annotations

import asyncio

import numpy as np
import psutil
import pytest
from aiortc.rtp import RTCP_PSFB_APP, RTCP_PSFB_PLI, RtcpPsfbPacket, pack_remb_fci

from contracts.protocol import Play
from node.runtime import embedded_network
from streamer.encoder import (
    EncoderHookError,
    FallbackVp8Encoder,
    LowLatencyH264Encoder,
    encoder_in_use,
    install_encoder,
)
from tests.conftest import eventually, unexplained_gaps
from verifier.bot import BotPlayer

CURSOR_AT = (0.25, 0.75)


def _region_rgb(frame, x: float, y: float) -> np.ndarray:
    """Mean colour of a small patch inside the crosshair's box, off its white lines."""
    rgb = frame.to_ndarray(format="rgb24")
    cx, cy = int(x * (frame.width - 1)), int(y * (frame.height - 1))
    return rgb[cy - 10 : cy - 4, cx - 10 : cx - 4].reshape(-1, 3).mean(axis=0)


async def test_bot_receives_continuous_frames_and_input_changes_the_game(
    network, playing_bot
) -> None:
    _, agent = network
    bot = playing_bot
    await bot.wait_frames(120)
    assert bot.log.unreadable == 0
    assert unexplained_gaps(bot, agent) == 0
    sequences = [s.marker.frame_sequence for s in bot.log.samples]
    assert sequences == sorted(set(sequences))  # in order, none twice

    bot.send_input({"type": "pointermove", "x": CURSOR_AT[0], "y": CURSOR_AT[1]})
    await bot.wait_input_applied(1)
    before = _region_rgb(bot.latest_frame, *CURSOR_AT)
    seq = bot.send_input({"type": "pointerbutton", "button": 0, "down": True})
    marker = await bot.wait_input_applied(seq)
    after = _region_rgb(bot.latest_frame, *CURSOR_AT)

    assert marker.input_sequence >= seq
    assert np.allclose(after, (230, 40, 40), atol=30), after  # main button fills it red
    assert not np.allclose(before, after, atol=30)
    session = agent.sessions[bot.session_id]
    assert session.input.accepted == 2
    # aiortc only packetizes: frames were encoded in the streamer's own pipeline thread.
    assert isinstance(encoder_in_use(session.video_sender), LowLatencyH264Encoder)
    pipeline = session.track.pipeline
    assert pipeline is not None and pipeline.encoding
    assert pipeline.stats.frames_encoded >= 120
    assert pipeline.stats.keyframes >= 1


def test_encoder_seam_fails_loudly_when_aiortc_moves_it(monkeypatch) -> None:
    import aiortc.rtcrtpsender  # noqa: PLC0415

    monkeypatch.delattr(aiortc.rtcrtpsender, "get_encoder")
    with pytest.raises(EncoderHookError, match="must be ported"):
        install_encoder("x264")
    with pytest.raises(EncoderHookError, match="no longer keeps its encoder"):
        encoder_in_use(object())


async def _availability(http, server) -> list[str]:
    async with http.get(server.url + "/api/containers") as response:
        return [c["availability"] for c in (await response.json())["containers"]]


async def test_container_is_released_after_an_end_and_after_a_vanished_player(
    network, http
) -> None:
    server, agent = network
    first = BotPlayer(server.player_url)
    async with first.play(http):
        await first.wait_frames(10)
        assert await _availability(http, server) == ["in_session"]
    await eventually(lambda: not agent.sessions)
    assert await _availability(http, server) == ["standby"]

    async with http.ws_connect(server.player_url) as vanishing:  # plays, then just disconnects
        await vanishing.send_str(Play("reference").to_json())
        assert (await vanishing.receive_json())["type"] == "matched"
        assert await _availability(http, server) == ["reserved"]
    async with asyncio.timeout(5):
        while await _availability(http, server) != ["standby"]:  # noqa: ASYNC110 (server state)
            await asyncio.sleep(0.02)

    second = BotPlayer(server.player_url)
    async with second.play(http):
        await second.wait_frames(30)
        assert unexplained_gaps(second, agent) == 0
        assert second.log.samples[0].marker.frame_sequence < 30  # a fresh stream, not the old one


# Markers a stream may lose in its first 60 frames: none for our H.264; libvpx's realtime mode
# (the VP8 fallback) trades quality for its deadline when the CPU is starved, and then a rare
# frame comes out too soft to read.
STREAMS = {
    "1080p60-h264": ("video/H264", 1920, 1080, 60, LowLatencyH264Encoder, 0),
    "720p60-vp8": ("video/VP8", 1280, 720, 60, FallbackVp8Encoder, 2),
    "720p120-h264": ("video/H264", 1280, 720, 120, LowLatencyH264Encoder, 0),
}


@pytest.mark.parametrize("stream", STREAMS)
async def test_the_player_chooses_size_and_rate_and_vp8_is_the_fallback(
    network, http, stream: str
) -> None:
    codec, width, height, fps, encoder_class, may_lose = STREAMS[stream]
    server, agent = network
    bot = BotPlayer(server.player_url, codec=codec)
    async with bot.play(http, width=width, height=height, fps=fps):
        await bot.wait_frames(60)
        assert (bot.latest_frame.width, bot.latest_frame.height) == (width, height)
        assert bot.log.unreadable <= may_lose
        assert unexplained_gaps(bot, agent) == 0
        encoder = encoder_in_use(agent.sessions[bot.session_id].video_sender)
        assert isinstance(encoder, encoder_class)


async def test_receiver_feedback_over_the_wire_steers_the_encoder(network, playing_bot) -> None:
    """REMB and PLI sent by the player's RTCP reach the container's own encode thread."""
    _, agent = network
    bot = playing_bot
    await bot.wait_frames(30)
    session = agent.sessions[bot.session_id]
    pipeline = session.track.pipeline
    sender_ssrc = session.video_sender._ssrc
    receiver = bot._pc.getReceivers()[0]
    keyframes = pipeline.keyframes.granted
    remb = pack_remb_fci(1_500_000, [sender_ssrc])
    await receiver._send_rtcp(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=remb))
    await receiver._send_rtcp(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=sender_ssrc))
    await eventually(lambda: any(c.bitrate == 1_500_000 for c in pipeline.bitrate.trace))
    await eventually(lambda: pipeline.keyframes.granted > keyframes)
    frames = bot.log.frames
    await bot.wait_frames(frames + 30)  # and the stream plays on
    assert bot.log.unreadable == 0


async def test_stopping_right_after_a_player_leaves_closes_every_peer_socket(http) -> None:
    # The agent is cancelled while the container's peer is still closing: that close must
    # finish, not leave its ICE sockets open (a leak seen as ResourceWarnings in later tests).
    process = psutil.Process()
    before = len(process.net_connections(kind="udp"))
    async with embedded_network(sessions=1) as (server, _):
        bot = BotPlayer(server.player_url)
        async with bot.play(http):
            await bot.wait_frames(10)
            assert len(process.net_connections(kind="udp")) > before
    assert len(process.net_connections(kind="udp")) == before
