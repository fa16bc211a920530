"""Container-side impairments: the settings, the delay line, and each fault in a real stream."""

from __future__ import annotations

import time

import aiohttp
import pytest

from node.runtime import run_agent, serve
from streamer.agent import AgentConfig
from streamer.impairment import NO_IMPAIRMENT, DelayLine, Impairment, ImpairmentError
from streamer.pipeline import SenderPipeline
from tests.conftest import eventually
from verifier.bot import BotPlayer


def test_settings_are_checked_and_described() -> None:
    assert not NO_IMPAIRMENT.active and NO_IMPAIRMENT.describe() == "none"
    impaired = Impairment(extra_delay_ms=20, serve_fps=30, ignore_input=True)
    assert impaired.active
    assert impaired.describe() == (
        "frames held 20 ms before sending, at most 30 fps served whatever was asked, input ignored"
    )
    assert [impaired.frame_rate(asked) for asked in (60, 30, 24)] == [30, 30, 24]
    assert NO_IMPAIRMENT.frame_rate(120) == 120
    with pytest.raises(ImpairmentError) as raised:
        Impairment(extra_delay_ms=-1)
    assert str(raised.value) == "extra delay -1 ms is outside [0, 5000] ms"
    with pytest.raises(ImpairmentError) as raised:
        Impairment(extra_delay_ms=float("nan"))
    assert str(raised.value) == "extra delay nan ms is outside [0, 5000] ms"
    with pytest.raises(ImpairmentError) as raised:
        Impairment(serve_fps=500)
    assert (
        str(raised.value) == "served frame rate 500 is outside [0, 240] (0: as each session asks)"
    )


def test_the_delay_line_releases_in_order_when_due() -> None:
    line: DelayLine[str] = DelayLine(0.1)
    assert line.next_due is None and line.pop_due(5.0) == []
    for index, item in enumerate("abc"):
        line.push(item, 1.0 + index / 60)
    # Several frames in flight at once: the rate is kept, only the latency grows.
    assert (len(line), line.next_due) == (3, pytest.approx(1.1))
    assert line.pop_due(1.099) == []
    assert line.pop_due(1.12) == ["a", "b"]
    assert line.next_due == pytest.approx(1.1 + 2 / 60)
    assert line.pop_due(2.0) == ["c"] and len(line) == 0
    with pytest.raises(ImpairmentError) as raised:
        DelayLine(-0.5)
    assert str(raised.value) == "a delay line cannot hold items for -0.5 s"


async def test_held_outputs_keep_their_order_and_arrive_no_sooner_than_the_delay() -> None:
    produced: dict[int, float] = {}

    def produce(slot: int) -> int:
        produced[slot] = time.monotonic()
        return slot

    pipeline = SenderPipeline(produce, fps=60, encoder=None)
    pipeline.hold_output(0.1)
    try:
        outputs = []
        for _ in range(20):
            slot = await pipeline.next_output()
            outputs.append((slot, time.monotonic()))
    finally:
        pipeline.stop()
    slots = [slot for slot, _ in outputs]
    assert slots == sorted(slots) and len(set(slots)) == 20
    assert all(arrived - produced[slot] >= 0.1 for slot, arrived in outputs)
    with pytest.raises(RuntimeError) as raised:
        pipeline.hold_output(0.05)
    assert str(raised.value) == "hold_output must be called before the pipeline starts"


@pytest.mark.parametrize(
    ("impairment", "expected_fps"),
    [(Impairment(serve_fps=30), 30), (Impairment(ignore_input=True), 60)],
    ids=["serve_fps", "ignore_input"],
)
async def test_a_session_of_an_impaired_container_serves_what_the_impairment_says(
    impairment: Impairment, expected_fps: int
) -> None:
    async with serve("127.0.0.1", 0) as server:
        config = AgentConfig(server.container_url, "box-1", encoder="x264", impairment=impairment)
        async with run_agent(config, sessions=1) as agent, aiohttp.ClientSession() as http:
            bot = BotPlayer(server.player_url)
            async with bot.play(http, width=640, height=360, fps=60):
                await bot.wait_channel_open()
                session = agent.sessions[bot.session_id]
                for _ in range(3):
                    bot.send_input({"type": "key", "code": "KeyD", "down": True})
                counters = session.input
                await eventually(lambda: counters.accepted + counters.ignored == 3)
                # Ten frames on, the game has rendered with whatever it was given.
                await bot.wait_frames(bot.log.frames + 10)
                shown = bot.log.samples[-1].marker.input_sequence
    assert session.track.fps == expected_fps
    if impairment.ignore_input:
        assert (counters.accepted, counters.ignored, shown) == (0, 3, 0)
    else:
        assert (counters.accepted, counters.ignored, shown) == (3, 0, 3)
