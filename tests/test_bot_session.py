"""Bot sessions against real containers on loopback: a healthy one passes, each impaired one
fails on exactly the finding that describes its fault (issue 6)."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
from collections.abc import AsyncIterator

import pytest

from contracts.verdict import Check, Finding, Verdict
from gamecast.verifier_cli import add_commands, report
from node.runtime import RunningServer, run_agent, serve
from streamer.agent import AgentConfig
from streamer.impairment import NO_IMPAIRMENT, Impairment
from verifier.bot import BotError
from verifier.bot_session import SessionRequest, run_bot_session
from verifier.bot_verdict import BotLimits
from verifier.trace import DEFAULT_TRACE, InputTrace

# The first eleven events of the default trace (keys, Space, pointer): 4.3 s of play.
SHORT_TRACE = InputTrace("short", DEFAULT_TRACE.events[:12], tail_ms=400)
SHAPE = {"width": 640, "height": 360, "fps": 60}


@contextlib.asynccontextmanager
async def container(impairment: Impairment) -> AsyncIterator[RunningServer]:
    """An indexer on an ephemeral port with one container, impaired as asked."""
    async with serve("127.0.0.1", 0) as server:
        config = AgentConfig(
            server.container_url, "box-1", encoder="x264", max_width=1280, max_height=720,
            max_fps=60, impairment=impairment,
        )  # fmt: skip
        async with run_agent(config, sessions=1):
            yield server


async def play(server: RunningServer, mode: str = "aiortc"):
    request = SessionRequest(server.url, trace=SHORT_TRACE, **SHAPE)
    return await run_bot_session(request, verifier_id="v-1", mode=mode, limits=BotLimits())


def failed(verdict) -> list[str]:
    return [finding.name for finding in verdict.failures]


async def test_a_healthy_container_passes_every_finding() -> None:
    async with container(NO_IMPAIRMENT) as server:
        verdict, observed = await play(server)
    assert (verdict.container_id, verdict.verifier_id, verdict.check) == ("box-1", "v-1", Check.BOT)
    assert failed(verdict) == [] and verdict.reason == ""
    assert [f.name for f in verdict.findings] == [
        "fps", "freezes", "g2g_p95_ms", "i2p_p95_ms", "decode_errors", "input_reaction",
    ]  # fmt: skip
    metrics = verdict.metrics
    # Space released changes nothing visible: every other input of the trace is checked.
    assert (metrics["reactions_expected"], metrics["reactions_seen"]) == (11.0, 11.0)
    assert len(observed.events) == 12 and observed.frames > 200
    assert metrics["decode_errors"] == 0.0


async def test_serving_30_fps_to_a_60_fps_session_fails_on_fps() -> None:
    async with container(Impairment(serve_fps=30)) as server:
        verdict, _ = await play(server)
    assert failed(verdict) == ["fps"]
    fps = verdict.failures[0]
    assert fps.claimed == 60 and 28.0 <= fps.measured <= 31.0
    assert fps.detail == f"{fps.measured:.1f} fps served to a session that asked for 60 " \
        "(at least 54.0 required)"  # fmt: skip
    assert verdict.metrics["reactions_seen"] == verdict.metrics["reactions_expected"] == 11.0


async def test_100_ms_of_extra_delay_fails_on_glass_to_glass_and_input_to_photon() -> None:
    async with container(Impairment(extra_delay_ms=100)) as server:
        verdict, _ = await play(server)
    assert failed(verdict) == ["g2g_p95_ms", "i2p_p95_ms"]
    g2g, i2p = verdict.failures
    assert g2g.detail == f"glass-to-glass p95 {g2g.measured:.1f} ms (at most 50 ms)"
    assert verdict.metrics["g2g_p50_ms"] >= 100.0
    assert i2p.measured >= 100.0 and i2p.claimed == 80.0
    assert verdict.metrics["fps"] >= 54.0  # held, not slowed: the rate is untouched


async def test_a_container_that_ignores_input_fails_on_reactions() -> None:
    async with container(Impairment(ignore_input=True)) as server:
        verdict, _ = await play(server)
    assert failed(verdict) == ["i2p_p95_ms", "input_reaction"]
    i2p, reaction = verdict.failures
    assert i2p.detail == "no frame showed any input applied: input-to-photon cannot be measured"
    assert math.isnan(verdict.metrics["i2p_p95_ms"])
    assert (reaction.claimed, reaction.measured) == (12, 0)
    assert reaction.detail == "12 of 12 inputs showed no reaction; first: no frame showed input 1"


async def test_a_session_elsewhere_than_asked_is_not_judged() -> None:
    async with container(NO_IMPAIRMENT) as server:
        elsewhere = SessionRequest(server.url, container="box-2", trace=SHORT_TRACE, **SHAPE)
        with pytest.raises(BotError) as raised:
            await run_bot_session(elsewhere, verifier_id="v-1")
        assert str(raised.value) == (
            "the indexer seated the bot on container box-1, not box-2: a bot check needs its "
            "ticket to reach a given container"
        )
        forged = SessionRequest(server.url, ticket="forged", trace=SHORT_TRACE, **SHAPE)
        with pytest.raises(BotError) as raised:
            await run_bot_session(forged, verifier_id="v-1")
        assert json.loads(str(raised.value).removeprefix("server answered ")) == {
            "v": 1, "type": "error", "code": "forbidden",
            "reason": "this ticket opens no verification session", "ref": "play",
        }  # fmt: skip


@pytest.mark.browser
async def test_the_chromium_bot_plays_the_same_trace_and_passes() -> None:
    async with container(NO_IMPAIRMENT) as server:
        verdict, observed = await play(server, mode="chromium")
    assert (verdict.container_id, failed(verdict)) == ("box-1", [])
    assert verdict.metrics["reactions_seen"] == verdict.metrics["reactions_expected"] == 11.0
    assert len(observed.events) == 12


def verifier_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gamecast")
    add_commands(parser.add_subparsers())
    return parser


def test_the_cli_prints_a_findings_table_and_standard_json() -> None:
    findings = (
        Finding("fps", True, 60, 59.9, "59.9 fps served"),
        Finding("i2p_p95_ms", False, 80.0, None, "no frame showed any input applied"),
    )
    verdict = Verdict("box-1", "v-1", Check.BOT, 1.0, findings, {"i2p_p95_ms": math.nan})
    failed_row, summary, line = report(verdict).splitlines()[-3:]
    assert failed_row.split() == ["i2p_p95_ms", "FAIL", "80.0", "-", "no", "frame", "showed", "any",
                             "input", "applied"]  # fmt: skip
    assert summary == "container box-1: FAILED: no frame showed any input applied"
    assert json.loads(line)["metrics"] == {"i2p_p95_ms": None}


def test_the_cli_refuses_what_it_cannot_use(tmp_path, capsys) -> None:
    parser = verifier_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["verifier", "--server", "ws://127.0.0.1:8080/ws/player"])
    assert "expected the indexer's http://HOST:PORT (as players open it); got " \
        "'ws://127.0.0.1:8080/ws/player'" in capsys.readouterr().err  # fmt: skip
    trace = tmp_path / "trace.json"
    trace.write_text("{}")
    args = parser.parse_args(["verifier", "--server", "http://127.0.0.1:1", "--trace", str(trace)])
    with pytest.raises(SystemExit) as raised:
        args.handler(args)
    assert str(raised.value) == f"gamecast verifier: {trace}: trace version None is not " \
        "supported; use 1"  # fmt: skip
