"""The web client in real headless Chromium against the real server and container."""

from __future__ import annotations

from typing import Any

import pytest

from streamer.playout_delay import URI

pytestmark = pytest.mark.browser


async def _open_and_play(browser: Any, url: str, errors: list[str]) -> Any:
    """Open the page and press Play; uncaught page exceptions collect in `errors`."""
    page = await browser.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(url)
    await page.click("#play")
    await page.wait_for_function("window.gamecast.status === 'playing'", timeout=20_000)
    return page


async def test_play_decodes_frames_and_input_reaches_the_marker(network, browser) -> None:
    server, _ = network
    errors: list[str] = []
    page = await _open_and_play(browser, server.url + "/", errors)
    await page.wait_for_function("window.gamecast.markersRead >= 30", timeout=20_000)
    size = await page.evaluate(
        "(v => [v.videoWidth, v.videoHeight])(document.getElementById('video'))"
    )
    assert size == [1280, 720]

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
