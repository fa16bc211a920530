"""Live-session sampling end to end: a real indexer, container agent, verifier and player.

A player plays a session and reports its summaries every 2 s (verifier/bot.py's BotPlayer
with `report_stats`, as the page does); the container reports its frame timings. Once the
session can be sampled, a verifier enlists: the coordinator schedules a LIVE check of the
session, the verifier reads the sample from the indexer and judges it, and the decision shows
in /api/containers. A healthy container passes; one that serves 30 of the 60 fps asked fails
on fps, seen from both sides, and is put in quality control.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from contracts.verdict import Check
from judge.coordinator import VerificationConfig
from node.runtime import (
    RunningServer,
    embedded_network,
    run_agent,
    run_verifier,
    serve,
    verification_for,
)
from signaling.config import ServerConfig
from streamer.agent import AgentConfig
from streamer.impairment import NO_IMPAIRMENT, Impairment
from tests.conftest import open_page
from verifier.agent import VerifierAgent, VerifierConfig
from verifier.bot import BotPlayer

WAIT_S = 20
# Sampling is due within 0.1 s on average once a session can be sampled; the container is
# admitted at registration, so only the first bot session (due at once) competes, and a live
# sample that fell due before the verifier enlisted goes first.
CONFIG = ServerConfig(
    verification=verification_for(
        1, VerificationConfig(round_seconds=20.0, spot_interval=3600.0, live_interval=0.1)
    )
)
FINDINGS = ["sent_fps", "frame_interval_p95_ms", "encode_p95_ms", "fps", "freezes"]


@contextlib.asynccontextmanager
async def playing(
    http: aiohttp.ClientSession, impairment: Impairment
) -> AsyncIterator[tuple[RunningServer, BotPlayer]]:
    """An indexer, a container serving one session at 640x360@60 at most, and a player on it
    that reports its summaries."""
    async with serve("127.0.0.1", 0, CONFIG) as server:
        agent = AgentConfig(
            server.container_url, "c1", encoder="x264", max_width=640, max_height=360,
            max_fps=60, impairment=impairment,
        )  # fmt: skip
        async with run_agent(agent, sessions=1):
            bot = BotPlayer(server.player_url, report_stats=True)
            async with bot.play(http, width=640, height=360, fps=60):
                yield server, bot


async def sample_of(
    http: aiohttp.ClientSession, server: RunningServer, session: str | None
) -> dict[str, Any]:
    """The session's sample once it holds two player summaries and 30 frame times."""
    async with asyncio.timeout(WAIT_S):
        while True:
            async with http.get(f"{server.url}/api/sessions/{session}/sample") as response:
                sample = await response.json()
            if len(sample["player"]) >= 2 and len(sample["frame_times_ms"]) >= 30:
                return dict(sample)
            await asyncio.sleep(0.25)


async def live_decision(http: aiohttp.ClientSession, server: RunningServer) -> dict[str, Any]:
    """The container's row once a live decision about it is in, and that decision."""
    async with asyncio.timeout(WAIT_S):
        while True:
            async with http.get(f"{server.url}/api/containers") as response:
                (row,) = (await response.json())["containers"]
            for decision in row["verification"]["decisions"]:
                if decision["check"] == "live":
                    return {"row": row, "decision": decision}
            await asyncio.sleep(0.25)


async def judged(
    http: aiohttp.ClientSession, server: RunningServer, session: str | None
) -> tuple[dict[str, Any], dict[str, Any], VerifierAgent]:
    """Enlist a verifier once the session can be sampled (and its first sample fell due):
    the live decision, the container's row then, and the verifier."""
    await sample_of(http, server, session)
    await asyncio.sleep(2.5)  # two sweeps: the sample's due time is drawn, and passes
    verifier = VerifierAgent(VerifierConfig(server.url, "v0"))
    async with run_verifier(verifier):
        found = await live_decision(http, server)
    return found["decision"], found["row"], verifier


def failing(decision: dict[str, Any]) -> set[str]:
    return {f["name"] for f in decision["findings"] if not f["passed"]}


async def test_a_healthy_session_passes_its_live_sample(http) -> None:
    async with playing(http, NO_IMPAIRMENT) as (server, bot):
        sample = await sample_of(http, server, bot.session_id)
        decision, row, verifier = await judged(http, server, bot.session_id)
    assert (sample["type"], sample["session"], sample["container"], sample["fps"]) == (
        "session_sample", bot.session_id, "c1", 60,
    )  # fmt: skip
    assert sample["window_s"] > 0 and len(sample["encode_ms"]) >= 30
    first = sample["player"][0]
    assert (first["width"], first["height"], first["codec"]) == (640, 360, "video/H264")
    assert first["rtt_ms"] is None  # what only a browser knows
    assert decision["outcome"] == "passed", decision
    assert [f["name"] for f in decision["findings"]] == FINDINGS
    assert decision["majority"] == ["v0"]
    (verdict,) = [v for v in verifier.verdicts if v.check is Check.LIVE]
    assert verdict.container_id == "c1" and verdict.metrics["fps"] >= 48
    assert row["verification"]["penalty"] == 0


async def test_a_container_serving_half_the_rate_fails_on_fps(http) -> None:
    async with playing(http, Impairment(serve_fps=30)) as (server, bot):
        decision, row, _ = await judged(http, server, bot.session_id)
    assert decision["outcome"] == "failed"
    assert {"sent_fps", "fps"} <= failing(decision), decision
    by_name = {f["name"]: f for f in decision["findings"]}
    assert by_name["sent_fps"]["claimed"] == 60 and by_name["sent_fps"]["measured"] < 33
    assert by_name["fps"]["measured"] < 33
    # Out of the candidates until a bot session settles it; the session in progress goes on.
    assert row["state"] == "quality control" and row["verification"]["penalty"] > 0
    assert row["sessions"] == [bot.session_id]


async def test_a_session_the_indexer_does_not_hold_has_no_sample(http) -> None:
    async with (
        serve("127.0.0.1", 0, CONFIG) as server,
        http.get(f"{server.url}/api/sessions/nobody.s1/sample") as response,
    ):
        assert response.status == 404
        assert await response.text() == (
            "no session 'nobody.s1' here: it ended, or another indexer holds it"
        )


@pytest.mark.browser
async def test_the_page_reports_its_summaries_into_the_session_s_sample(http, browser) -> None:
    async with embedded_network(max_width=1280, max_height=720, max_fps=60, sessions=1) as (
        server,
        _,
    ):
        page, errors = await open_page(browser, server.url + "/")
        await page.click("#play")
        await page.wait_for_function("window.gamecast.statsReported >= 2", timeout=20_000)
        session = await page.evaluate("window.gamecast.session")
        sample = await sample_of(http, server, session)
        async with http.get(f"{server.url}/api/sessions") as response:
            refused = (await response.json())["errors"]
    first, last = sample["player"][0], sample["player"][-1]
    assert (first["width"], first["height"], first["codec"]) == (1280, 720, "video/H264")
    assert last["frames_decoded"] > first["frames_decoded"] > 0
    assert last["fps"] > 0 and last["rtt_ms"] is not None
    assert refused == 0 and errors == []
