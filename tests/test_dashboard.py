"""The network dashboard in real headless Chromium against the real server and container."""

from __future__ import annotations

import asyncio

import pytest

from contracts.protocol import GpuSpec, HostSpecs, Register
from streamer.telemetry import TelemetryReader
from tests.conftest import open_page
from tests.samples import challenge_of, host_credentials, signed

pytestmark = pytest.mark.browser

CARD = '[data-container="{}"]'
POLLED = "window.dashboard.polls >= {} && window.dashboard.containers.length === {}"


async def test_dashboard_lists_the_container_with_its_specs(network, http, browser) -> None:
    server, _ = network
    with TelemetryReader() as reader:
        here = await asyncio.to_thread(reader.host_specs)
    page, errors = await open_page(browser, server.url + "/")
    await page.click("#dashboard")  # linked from the play page
    await page.wait_for_function(POLLED.format(1, 1), timeout=10_000)

    card = page.locator(CARD.format("local-1"))
    text = await card.inner_text()
    for shown in (
        "standby",
        "reference",
        "x264",
        "1920x1080@120",
        f"{here.cpu_model}, {here.cpu_cores} cores",
        "sessions\nnone",
    ):
        assert shown in text, f"{shown!r} not in {text!r}"
    if not here.gpus:
        assert "CPU only: no NVIDIA driver" in text
    # The load arrives with the first heartbeat and is refreshed by the next polls.
    await page.wait_for_function(
        "window.dashboard.containers[0].host_load !== null && window.dashboard.polls >= 2",
        timeout=10_000,
    )
    assert "load\nCPU " in await card.inner_text()
    summary = await page.inner_text("#summary")
    assert summary.startswith("1 container, 0 sessions, 0 messages refused; updated ")
    assert errors == []


async def test_server_strings_are_shown_as_text_never_as_markup(network, http, browser) -> None:
    server, _ = network
    hostile = "<img src=x onerror=window.pwned=1><b>bold</b>"
    gpu = GpuSpec(0, hostile[:96], "GPU-<i>", 1024)
    register = Register(
        "evil", [hostile], ["<x264>"], 1280, 720, 60, HostSpecs(hostile, 1, 1, [gpu])
    )
    async with http.ws_connect(server.container_url) as evil:
        challenge = await challenge_of(evil)
        await evil.send_str(signed(register, host_credentials(server), challenge))
        assert (await evil.receive_json())["type"] == "registered"
        page, _ = await open_page(browser, server.url + "/static/dashboard.html")
        await page.wait_for_function(POLLED.format(1, 2), timeout=10_000)
        card = page.locator(CARD.format("evil"))
        text = await card.inner_text()
        assert hostile in text
        assert f"GPU 0: {hostile}" in text
        assert await card.locator("img, b, i, x264").count() == 0
        assert await page.evaluate("window.pwned === undefined")
