"""The network dashboard in real headless Chromium against the real server and container."""

from __future__ import annotations

import asyncio

import pytest

from contracts.protocol import BuildEvent, GpuSpec, HostSpecs, Register
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


async def test_a_container_s_build_reports_are_on_its_card_and_a_touched_disk_is_marked(
    network, http, browser
) -> None:
    server, _ = network
    register = Register("host", ["arcade"], ["x264"], 1280, 720, 60)
    hostile = "<img src=x onerror=window.pwned=1>"
    reports = [
        BuildEvent("crashed", "arcade", "1.0", session="i1.s1", detail="exited with code 1"),
        BuildEvent("limit_killed", "arcade", "1.0", session="i1.s2", limit="cpu_time"),
        BuildEvent("hash_refused", "arcade", "1.0", detail=f"'game.py' was changed {hostile}"),
    ]
    async with http.ws_connect(server.container_url) as host:
        challenge = await challenge_of(host)
        await host.send_str(signed(register, host_credentials(server), challenge))
        assert (await host.receive_json())["type"] == "registered"
        for report in reports:
            await host.send_str(report.to_json())
        page, errors = await open_page(browser, server.url + "/static/dashboard.html")
        shown = "window.dashboard.containers.some(c => c.build_events.counts.hash_refused === 1)"
        await page.wait_for_function(shown, timeout=10_000)
        await page.wait_for_function(POLLED.format(1, 2), timeout=10_000)
        card = page.locator(CARD.format("host"))
        text = await card.inner_text()
        assert "lifecycle\nneeds re-inspection" in text
        assert "1 crashed, 1 killed by a limit, 1 refused by the hash check" in text
        events = card.locator("li.build-event")
        assert await events.evaluate_all("items => items.map(i => i.dataset.kind)") == [
            "hash_refused", "limit_killed", "crashed",
        ]  # fmt: skip
        assert f"arcade 1.0: refused by the hash check: 'game.py' was changed {hostile}" in text
        assert "arcade 1.0: killed by a limit (cpu time) in i1.s2" in text
        assert await card.locator("img").count() == 0
        weight = "e => getComputedStyle(e).fontWeight"
        assert await card.locator("li.hash_refused").evaluate(weight) == "700"  # highlighted
        assert errors == []
