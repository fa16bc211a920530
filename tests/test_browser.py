"""The web client in real headless Chromium against the real server and container."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from node.runtime import RunningServer, embedded_network
from streamer.agent import ContainerAgent
from streamer.playout_delay import URI
from tests.conftest import open_page

pytestmark = pytest.mark.browser

OPTIONS = (
    "[...document.querySelectorAll('#quality option')].map(o => [o.value, o.disabled, o.title])"
)
VIDEO_SIZE = "(v => [v.videoWidth, v.videoHeight])(document.getElementById('video'))"


@pytest.fixture
async def network_720p60() -> AsyncIterator[tuple[RunningServer, ContainerAgent]]:
    """The embedded network with one container that advertises at most 1280x720@60."""
    async with embedded_network(max_width=1280, max_height=720, max_fps=60) as running:
        yield running


async def _open_and_play(browser: Any, url: str) -> tuple[Any, list[str]]:
    """Open the page and press Play; uncaught page exceptions collect in the list returned."""
    page, errors = await open_page(browser, url)
    await page.click("#play")
    await page.wait_for_function("window.gamecast.status === 'playing'", timeout=20_000)
    return page, errors


async def test_play_decodes_frames_and_input_reaches_the_marker(network, browser) -> None:
    server, _ = network
    page, errors = await _open_and_play(browser, server.url + "/")
    await page.wait_for_function("window.gamecast.markersRead >= 30", timeout=20_000)
    assert await page.evaluate(VIDEO_SIZE) == [1280, 720]

    decoded = "window.gamecast.stats ? window.gamecast.stats.framesDecoded : 0"
    await page.wait_for_function(f"({decoded}) > 0", timeout=10_000)
    first = await page.evaluate(decoded)
    await page.wait_for_function(f"({decoded}) > {first} + 30", timeout=10_000)

    before = await page.evaluate("window.gamecast.marker.inputSequence")
    await page.keyboard.down("KeyD")
    await page.wait_for_function(f"window.gamecast.marker.inputSequence > {before}", timeout=10_000)
    await page.keyboard.up("KeyD")
    state = await page.evaluate(
        "({unreadable: window.gamecast.markersUnreadable, read: window.gamecast.markersRead, "
        "i2p: window.gamecast.i2pSamples.length, codec: window.gamecast.stats.codec})"
    )
    assert state["i2p"] >= 1
    assert state["codec"] == "video/H264"
    assert state["unreadable"] < state["read"] / 10

    answer = await page.evaluate("window.gamecast.peer.remoteDescription.sdp")
    assert f" {URI}" in answer  # the container accepted the browser's playout-delay offer

    # End, play again: one frame-callback chain, counters from zero, no page error at any point.
    await page.click("#end")
    await page.wait_for_function("window.gamecast.status.startsWith('ended')")
    await page.click("#play")
    await page.wait_for_function("window.gamecast.status === 'playing'", timeout=20_000)
    presented = "window.gamecast.presentedTimes"
    await page.evaluate(f"{presented}.length = 0")
    await page.wait_for_function(f"{presented}.length >= 60", timeout=10_000)
    times = await page.evaluate(presented)
    assert len(set(times)) == len(times)  # each frame recorded once, not by two chains
    assert errors == []


async def test_options_no_container_advertises_are_disabled_and_720p60_plays(
    network_720p60, browser
) -> None:
    server, _ = network_720p60
    page, errors = await open_page(browser, server.url + "/")
    await page.evaluate("window.gamecast.qualitiesChecked")
    assert await page.evaluate(OPTIONS) == [
        ["1280x720@60", False, ""],
        ["1920x1080@60", True, "no container offers 1920x1080@60"],
        ["1280x720@120", True, "no container offers 1280x720@120"],
        ["1920x1080@120", True, "no container offers 1920x1080@120"],
    ]
    assert await page.input_value("#quality") == "1280x720@60"

    # A choice made before the container went away: Play checks again and falls back to 720p60.
    await page.evaluate("document.getElementById('quality').value = '1920x1080@60'")
    await page.click("#play")
    await page.wait_for_function("window.gamecast.status === 'playing'", timeout=20_000)
    await page.wait_for_function("window.gamecast.markersRead >= 10", timeout=20_000)
    assert await page.input_value("#quality") == "1280x720@60"
    assert await page.evaluate(VIDEO_SIZE) == [1280, 720]
    assert errors == []


async def test_choosing_1080p60_streams_1920x1080(network, browser) -> None:
    server, _ = network
    page, errors = await open_page(browser, server.url + "/")
    await page.evaluate("window.gamecast.qualitiesChecked")
    assert [disabled for _, disabled, _ in await page.evaluate(OPTIONS)] == [False] * 4
    await page.select_option("#quality", "1920x1080@60")
    await page.click("#play")
    await page.wait_for_function("window.gamecast.status === 'playing'", timeout=20_000)
    await page.wait_for_function("window.gamecast.markersRead >= 10", timeout=20_000)
    assert await page.input_value("#quality") == "1920x1080@60"
    assert await page.evaluate(VIDEO_SIZE) == [1920, 1080]
    assert errors == []


async def test_the_page_probes_the_container_before_its_claim(network, browser) -> None:
    """DESIGN.md step 3: the indexer sends the page landmarks, the page times real fetches to
    the container's probe endpoint, and the claim follows with the player placed."""
    server, agent = network
    page, errors = await _open_and_play(browser, server.url + "/")
    probes = await page.evaluate("window.gamecast.probes")
    assert [probe["container"] for probe in probes] == [agent.config.container_id]
    assert 0 < probes[0]["rtt_ms"] < 1000  # loopback, through a real HTTP round trip
    assert errors == []
