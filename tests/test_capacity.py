"""Capacity: how many sessions a container serves at once, measured or set, and never exceeded."""

from __future__ import annotations

import contextlib
import logging
import os

import pytest

from contracts.protocol import Play, StreamCapacity
from contracts.stream_shapes import advertised_shapes
from node import runtime
from node.runtime import embedded_network, prepare_host
from streamer.agent import AgentConfig
from streamer.capacity import (
    CapacityError,
    capacity_from_costs,
    fixed_capacity,
    measure_frame_ms,
    sessions_for,
)
from streamer.encoder import X264, H264Backend
from verifier.bot import BotPlayer


@pytest.mark.parametrize(
    ("frame_ms", "fps", "cores", "sessions"),
    [
        (3.5, 60, 2, 3),  # 0.42 of a core each (send overhead included), 1.6 cores usable
        (3.5, 120, 2, 1),
        (9.0, 60, 2, 1),
        (9.0, 120, 2, 0),  # cannot sustain even one
        (0.01, 60, 64, 64),  # capped at what one registration may claim
    ],
)
def test_sessions_follow_the_cost_of_a_frame(
    frame_ms: float, fps: int, cores: int, sessions: int
) -> None:
    assert sessions_for(frame_ms, fps, cores) == sessions


@pytest.mark.parametrize("bad", [(0.0, 60, 2), (3.0, 0, 2), (3.0, 60, 0)])
def test_nonsense_costs_are_refused(bad: tuple[float, int, int]) -> None:
    with pytest.raises(ValueError, match="need positive"):
        sessions_for(*bad)


def test_shapes_are_the_standard_ones_within_the_limits_plus_the_largest() -> None:
    assert advertised_shapes(1920, 1080, 120) == [
        (1280, 720, 60), (1920, 1080, 60), (1280, 720, 120), (1920, 1080, 120),
    ]  # fmt: skip
    assert advertised_shapes(1280, 720, 60) == [(1280, 720, 60)]
    assert advertised_shapes(640, 360, 30) == [(640, 360, 30)]


def test_a_shape_the_host_cannot_sustain_is_not_advertised() -> None:
    costs = {(1280, 720): 3.5, (1920, 1080): 9.0}
    shapes = advertised_shapes(1920, 1080, 120)
    assert capacity_from_costs(costs, shapes, cores=2) == [
        StreamCapacity(1280, 720, 60, 3),
        StreamCapacity(1920, 1080, 60, 1),
        StreamCapacity(1280, 720, 120, 1),
    ]


def test_a_host_that_sustains_no_shape_is_refused_rather_than_advertising_none() -> None:
    # An empty capacity would read as an agent that predates capacity (one session, any shape).
    with pytest.raises(CapacityError, match="cannot sustain one session of any shape"):
        capacity_from_costs({(1920, 1080): 40.0}, [(1920, 1080, 60)], cores=1)


def test_the_operators_figure_is_bounded() -> None:
    assert fixed_capacity([(1280, 720, 60)], 4) == [StreamCapacity(1280, 720, 60, 4)]
    with pytest.raises(ValueError, match="1 to 64 sessions"):
        fixed_capacity([(1280, 720, 60)], 0)


def test_a_frame_is_really_drawn_and_encoded_to_measure_it() -> None:
    small, large = measure_frame_ms(X264, 640, 360), measure_frame_ms(X264, 1920, 1080)
    assert 0 < small < large  # nine times the pixels cost more, whatever this host is


async def test_the_host_is_probed_and_benchmarked_before_registering(caplog, monkeypatch) -> None:
    measured: dict[tuple[int, int], float] = {}

    def recorded(backend: H264Backend, width: int, height: int) -> float:
        measured[width, height] = measure_frame_ms(backend, width, height)
        return measured[width, height]

    monkeypatch.setattr(runtime, "measure_frame_ms", recorded)
    config = AgentConfig("ws://unused", "c1", max_width=1280, max_height=720, max_fps=60)
    with caplog.at_level(logging.INFO, logger="node.runtime"):
        prepared = await prepare_host(config)
    assert prepared.encoder in ("nvenc", "x264") and prepared.encoder_reason
    ((shape, sessions),) = [((c.width, c.height, c.fps), c.sessions) for c in prepared.capacity]
    assert shape == (1280, 720, 60) and sessions >= 1  # a 720p60 session fits on any CI host
    # What it advertises is what its own measurement gives on this host's cores.
    assert list(measured) == [(1280, 720)]
    assert sessions == sessions_for(measured[1280, 720], 60, os.cpu_count() or 1)
    assert list(prepared.capacity) == capacity_from_costs(measured, [shape], os.cpu_count() or 1)
    assert any("capacity from a self-benchmark" in m for m in caplog.messages)
    fixed = await prepare_host(config, sessions=5)
    assert fixed.capacity == (StreamCapacity(1280, 720, 60, 5),)


async def test_a_container_serves_its_capacity_at_once_and_refuses_one_more(http) -> None:
    async with (
        embedded_network(max_width=1280, max_height=720, max_fps=60, sessions=2) as (server, agent),
        contextlib.AsyncExitStack() as players,
    ):
        bots = [BotPlayer(server.player_url) for _ in range(2)]
        for bot in bots:  # small streams: two sessions on a 2-core CI machine beside the test
            await players.enter_async_context(bot.play(http, width=640, height=360, fps=30))
        for bot in bots:
            await bot.wait_frames(30)
        assert {bot.session_id for bot in bots} == set(agent.sessions)
        async with http.get(server.url + "/api/containers") as response:
            (row,) = (await response.json())["containers"]
        assert (row["load"], sorted(row["sessions"])) == (1.0, sorted(agent.sessions))
        assert row["capacity"] == [{"width": 1280, "height": 720, "fps": 60, "sessions": 2}]

        # A third player waits in the queue, told why, and is matched when a seat frees.
        async with http.ws_connect(server.player_url) as third:
            await third.send_str(Play("reference", 640, 360, 30).to_json())
            queued = await third.receive_json()
            assert (queued["type"], queued["position"], queued["filter"]) == (
                "queued",
                1,
                "standby",
            )
            await players.aclose()  # the two bots leave
            matched = await third.receive_json()
            assert (matched["type"], matched["container"]) == ("matched", "local-1")
