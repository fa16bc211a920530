"""Through a lossy, narrow link (testbed/relay.py): bitrate adapts down, recovers, play goes on.

The kernel here has no netem, so the bot's media crosses a UDP relay whose downstream link
drops and rate-limits packets; ICE candidates on both sides point at the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from streamer.feedback import KEYFRAME_INTERVAL_S
from testbed.relay import LinkConfig, LinkModel, UdpRelay
from tests.conftest import eventually, unexplained_gaps
from verifier.bot import BotPlayer
from verifier.frame_stats import FrameLog

CAP_BPS = 3_000_000  # well under the 5.5 Mb/s a 720p60 stream starts at


@pytest.fixture
async def relay() -> AsyncIterator[UdpRelay]:
    async with UdpRelay(LinkModel(seed=11), LinkModel(seed=12)) as running:
        yield running


@contextlib.asynccontextmanager
async def playing_through(network, http, relay: UdpRelay) -> AsyncIterator[BotPlayer]:
    server, _ = network
    bot = BotPlayer(server.player_url, route=relay)
    async with bot.play(http):
        await bot.wait_frames(30)
        yield bot


@pytest.mark.timeout(90)
async def test_bitrate_adapts_to_a_lossy_narrow_link_and_recovers(network, http, relay) -> None:
    _, agent = network
    started = time.monotonic()  # the gate's clock (the pipeline asks it with monotonic time)
    async with playing_through(network, http, relay) as bot:
        assert relay.downstream.counters.delivered > 0  # the media really crosses the relay
        pipeline = agent.sessions[bot.session_id].track.pipeline
        assert pipeline.bitrate.target > CAP_BPS

        relay.downstream.config = LinkConfig(loss=0.02, rate_bps=CAP_BPS, queue_ms=100)
        await eventually(lambda: pipeline.bitrate.target < CAP_BPS, seconds=20)
        assert relay.downstream.counters.dropped_loss > 0

        # Under the cap, once adapted, the game keeps playing: readable frames keep coming,
        # at most one freeze. (A packet whose retransmission is lost as well leaves a damaged
        # frame or two until the next keyframe: those are counted, and must stay a minority.)
        await asyncio.sleep(3)
        bot.log = FrameLog()
        await bot.wait_frames(120)
        assert bot.log.summary()["freezes"] <= 1
        assert bot.log.unreadable < 0.5 * 120
        lowest = pipeline.bitrate.target

        relay.downstream.config = LinkConfig()
        await eventually(lambda: pipeline.bitrate.target > 1.1 * lowest, seconds=20)
        assert pipeline.bitrate.trace[-1].bitrate > lowest
        frames = bot.log.frames
        await bot.wait_frames(frames + 60)
        # Keyframe requests during the loss were coalesced, not each answered with an IDR: at
        # most one grant per interval since the session began (how many were asked depends
        # on which packets the loss took; test_pipeline holds the gate to its interval).
        gate = pipeline.keyframes
        assert gate.requested >= gate.granted > 0
        assert gate.granted <= 1 + (time.monotonic() - started) / KEYFRAME_INTERVAL_S


async def test_media_through_a_clean_relay_plays_as_directly(network, http, relay) -> None:
    _, agent = network
    async with playing_through(network, http, relay) as bot:
        await bot.wait_frames(120)
        assert bot.log.unreadable == 0
        assert unexplained_gaps(bot, agent) == 0
        assert relay.upstream.counters.delivered > 0  # RTCP and STUN went back through it
