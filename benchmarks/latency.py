"""`gamecast bench latency`: what a player gets, measured from the frame marker.

One run starts the signaling server in this process and, for each encoder configuration, a
container agent in its own process (so its CPU is the sender's alone). Each configuration is
played by the aiortc bot and then by headless Chromium, one client at a time, for a fixed
time after a warm-up, with a key pressed every 200 ms for input-to-photon. aiortc's stock
H.264 encoder is measured in the same run as the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from gamecast.runtime import RunningServer, serve
from verifier.bot import BotPlayer
from verifier.browser import launch_chromium
from verifier.frame_stats import FrameLog, percentile, series_summary

# label -> `gamecast container` options; the last is aiortc as it ships: the baseline.
CONFIGURATIONS = {
    "gamecast": ["--encoder", "x264"],
    "gamecast, no playout-delay": ["--encoder", "x264", "--no-playout-delay"],
    "aiortc stock H.264": ["--encoder", "aiortc", "--no-playout-delay"],
}
WARMUP_SECONDS = 3.0
INPUT_PERIOD = 0.2
# framesDecoded straight from getStats (the overlay's copy is up to a second old).
DECODED_FRAMES = """(async () => {
  let decoded = 0;
  (await window.gamecast.peer.getStats()).forEach(s => {
    if (s.type === "inbound-rtp" && s.kind === "video") decoded = s.framesDecoded;
  });
  return decoded;
})()"""
TARGETS = {"fps_min": 59.0, "chromium_g2g_p50_max_ms": 25.0}


@contextlib.asynccontextmanager
async def container_process(
    server: RunningServer, container_id: str, options: list[str]
) -> AsyncIterator[psutil.Process]:
    """A `gamecast container` process, registered and ready; stopped with SIGINT afterwards."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gamecast", "container", "--server", server.container_url,
        "--id", container_id, *options,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http, asyncio.timeout(30):
            while True:
                async with http.get(server.url + "/api/containers") as response:
                    rows = (await response.json())["containers"]
                if any(r["container"] == container_id for r in rows):
                    break
                await asyncio.sleep(0.1)
        yield psutil.Process(process.pid)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _measured(
    sender: psutil.Process, seconds: float, press: Callable[[int], Awaitable[None]]
) -> float:
    """Press keys for `seconds`, printing progress; returns the sender's CPU % of one core."""
    before, started = sender.cpu_times(), time.monotonic()
    presses = 0
    next_status = started + 5
    while (now := time.monotonic()) - started < seconds:
        await press(presses)
        presses += 1
        if now >= next_status:
            print(f"    {now - started:4.0f}/{seconds:.0f} s", flush=True)
            next_status += 5
        await asyncio.sleep(INPUT_PERIOD)
    after, elapsed = sender.cpu_times(), time.monotonic() - started
    busy = (after.user - before.user) + (after.system - before.system)
    return round(100 * busy / elapsed, 1)


async def measure_bot(
    server: RunningServer, sender: psutil.Process, seconds: float
) -> dict[str, Any]:
    bot = BotPlayer(server.player_url)
    pressed_at = time.time() * 1000
    async with aiohttp.ClientSession() as http, bot.play(http):
        await bot.wait_frames(1)
        first_frame_ms = bot.log.samples[0].received_ms - pressed_at
        await bot.wait_channel_open()
        await asyncio.sleep(WARMUP_SECONDS)
        bot.log = log = FrameLog()

        async def press(index: int) -> None:
            bot.send_input({"type": "key", "code": "KeyD", "down": index % 2 == 0})

        cpu = await _measured(sender, seconds, press)
    result = log.summary()
    result["received_fps"] = result.pop("fps")
    return {**result, "sender_cpu_pct": cpu, "play_to_first_frame_ms": round(first_frame_ms, 1)}


async def measure_chromium(
    server: RunningServer, sender: psutil.Process, seconds: float
) -> dict[str, Any]:
    async with launch_chromium() as browser:
        page = await browser.new_page()
        await page.goto(server.url + "/")
        await page.click("#play")
        await page.wait_for_function("window.gamecast.timeToFirstFrameMs !== null", timeout=30_000)
        first_frame_ms = await page.evaluate("window.gamecast.timeToFirstFrameMs")
        await page.wait_for_function("window.gamecast.status === 'playing'", timeout=30_000)
        await asyncio.sleep(WARMUP_SECONDS)
        await page.evaluate(
            "(s => { s.markersUnreadable = 0;"
            " for (const k of ['g2gSamples', 'displaySamples', 'i2pSamples', 'presentedTimes'])"
            " s[k].length = 0; })"
            "(window.gamecast)"
        )

        async def press(index: int) -> None:
            await (page.keyboard.down if index % 2 == 0 else page.keyboard.up)("KeyD")

        decoded_before, started = await page.evaluate(DECODED_FRAMES), time.monotonic()
        cpu = await _measured(sender, seconds, press)
        decoded = await page.evaluate(DECODED_FRAMES) - decoded_before
        elapsed = time.monotonic() - started
        data = await page.evaluate(
            "(s => ({times: s.presentedTimes, g2g: s.g2gSamples, i2p: s.i2pSamples,"
            " display: s.displaySamples, unreadable: s.markersUnreadable, stats: s.stats}))"
            "(window.gamecast)"
        )
    result = series_summary(data["times"], data["g2g"], data["i2p"])
    stats = data["stats"] or {}
    # Received = decoded (getStats); presented = frame callbacks, what the 60 Hz compositor showed.
    result["presented_fps"] = result.pop("fps")
    result["received_fps"] = round(decoded / elapsed, 2)
    result["display_p50_ms"] = round(percentile(data["display"], 0.5), 1)
    extra = {
        "unreadable": data["unreadable"],
        "sender_cpu_pct": cpu,
        "codec": stats.get("codec"),
        "jitter_buffer_ms": stats.get("jitterBufferMs"),
        "decode_ms": stats.get("decodeMs"),
    }
    return {**result, **extra, "play_to_first_frame_ms": round(first_frame_ms, 1)}


def machine() -> dict[str, Any]:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "system": platform.platform()}  # fmt: skip


async def run(seconds: float, with_browser: bool) -> dict[str, Any]:
    rows = []
    async with serve("127.0.0.1", 0) as server:
        for number, (label, options) in enumerate(CONFIGURATIONS.items()):
            async with container_process(server, f"bench-{number}", options) as sender:
                clients: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
                    "aiortc bot": measure_bot
                }
                if with_browser:
                    clients["chromium"] = measure_chromium
                for client, measure in clients.items():
                    timing = f"{WARMUP_SECONDS:.0f} s warm-up, {seconds:.0f} s measured"
                    print(f"  {label} -> {client}: {timing}", flush=True)
                    rows.append(
                        {
                            "config": label,
                            "client": client,
                            **await measure(server, sender, seconds),
                        }
                    )
    return {"benchmark": "latency", "resolution": "1280x720", "fps": 60, "seconds": seconds,
            "machine": machine(), "targets": TARGETS, "results": rows}  # fmt: skip


COLUMNS = (
    ("config", "config", "{}"), ("client", "client", "{}"), ("received_fps", "recv fps", "{:.1f}"),
    ("presented_fps", "shown fps", "{:.1f}"),
    ("interval_mean_ms", "ivl ms", "{:.2f}"), ("interval_std_ms", "ivl sd", "{:.2f}"),
    ("g2g_p50_ms", "g2g p50", "{:.1f}"), ("g2g_p95_ms", "g2g p95", "{:.1f}"),
    ("display_p50_ms", "disp p50", "{:.1f}"),
    ("i2p_p50_ms", "i2p p50", "{:.1f}"), ("i2p_p95_ms", "i2p p95", "{:.1f}"),
    ("play_to_first_frame_ms", "play->1st ms", "{:.0f}"),
    ("sender_cpu_pct", "sender CPU %", "{:.0f}"), ("freezes", "freezes", "{}"),
)  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    def cell(row: dict[str, Any], key: str, form: str) -> str:
        value = row.get(key)
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        return "-" if missing else form.format(value)

    cells = [[title for _, title, _ in COLUMNS]] + [
        [cell(r, k, f) for k, _, f in COLUMNS] for r in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells
    )


def main(args: argparse.Namespace) -> None:
    print(
        f"gamecast bench latency: 720p60 on loopback, {args.seconds:.0f} s per client and encoder"
    )
    report = asyncio.run(run(args.seconds, not args.no_browser))
    print()
    print(table(report["results"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nJSON written to {out}")
