"""One bot session: play a trace against a container, measure it from the markers, judge it.

A bot asks the indexer for a session (with a check's ticket: on the container under check),
lets the stream settle, plays an input trace (verifier/trace.py) on the real input channel,
and reads the marker of every decoded frame. Two clients play the same trace:
- "aiortc": verifier/bot.py, the aiortc receiver that releases frames on the RTP marker bit;
- "chromium": the web client in headless Chromium. Its page measures what a player sees;
  the trace's events go through the page's own input channel (`window.gamecast.sendInput`),
  so both clients send the same numbered events, and a small script beside the page keeps
  the frames the reaction rule needs (verifier/reaction.py).

Either way the session ends in a BotObservation, and `judge_session` (pure) turns that into a
Verdict(check=Check.BOT): fps against the rate asked, freezes, glass-to-glass and
input-to-photon p95 against bounds, unreadable frames, and the game's reaction to each input.
Glass-to-glass compares the container's clock with the bot's: run a verifier on a host whose
clock is NTP-synchronised, or raise the bound by the offset.
"""

from __future__ import annotations

import asyncio
import base64
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np

from contracts.input_events import InputEvent
from contracts.marker import FrameMarker
from contracts.verdict import Verdict
from verifier.bot import BotError, BotPlayer
from verifier.bot_verdict import BotLimits, BotObservation, judge_session
from verifier.browser import launch_chromium
from verifier.frame_stats import FrameLog, series_summary
from verifier.reaction import (
    REACTION_FRAMES,
    ReactionSampler,
    SampledFrame,
)
from verifier.trace import DEFAULT_TRACE, InputTrace, TraceEvent

DEFAULT_LIMITS = BotLimits()


@dataclass(frozen=True, slots=True)
class SessionRequest:
    """Which container to play, how, and with what."""

    server_url: str  # the indexer, http://HOST:PORT
    ticket: str = ""  # a bot check's ticket (Play.ticket); "": play like any player
    container: str = ""  # the container the session must be on; "": whichever it is
    trace: InputTrace = DEFAULT_TRACE
    width: int = 1280
    height: int = 720
    fps: int = 60
    warmup_s: float = 1.0  # the stream settles (first keyframe, rate control) before play

    @property
    def player_url(self) -> str:
        return self.server_url.replace("http", "ws", 1).rstrip("/") + "/ws/player"

    def check_seat(self, container: str) -> None:
        """Refuse to judge a session the indexer seated on another container than asked."""
        if self.container and container != self.container:
            raise BotError(
                f"the indexer seated the bot on container {container or '(unknown)'}, not "
                f"{self.container}: a bot check needs its ticket to reach a given container"
            )


async def play_trace(
    trace: InputTrace, send: Callable[[TraceEvent], Awaitable[int]]
) -> dict[int, InputEvent]:
    """Send each event at its time on a monotonic schedule, then wait out the tail; returns
    the events as the container parses them, by the seq `send` gave each."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent: dict[int, InputEvent] = {}
    for event in trace.events:
        await asyncio.sleep(max(0.0, start + event.at_ms / 1000 - loop.time()))
        seq = await send(event)
        sent[seq] = event.numbered(seq)
    await asyncio.sleep(max(0.0, start + trace.duration_ms / 1000 - loop.time()))
    return sent


async def observe_aiortc(request: SessionRequest) -> BotObservation:
    """Play `request` with the aiortc bot."""
    markers: list[FrameMarker] = []
    samples: list[SampledFrame] = []
    sampler = ReactionSampler()

    def keep(marker: FrameMarker | None, frame: Any) -> None:
        if marker is not None:
            markers.append(marker)
            if sampler.wants(marker):
                samples.append(SampledFrame(marker, frame.to_ndarray(format="yuv420p")))

    async def send(event: TraceEvent) -> int:
        return bot.send_input(dict(event.message))

    bot = BotPlayer(request.player_url, observe=keep)
    shape = request.width, request.height, request.fps
    async with (
        aiohttp.ClientSession() as http,
        bot.play(http, "reference", *shape, ticket=request.ticket),
    ):
        request.check_seat(bot.container or "")
        await bot.wait_channel_open()
        await asyncio.sleep(request.warmup_s)
        bot.log = log = FrameLog()
        events = await play_trace(request.trace, send)
    return BotObservation(
        bot.container or "", request.width, request.height, request.fps, log.summary(),
        log.frames + log.unreadable, log.unreadable, tuple(markers), tuple(samples), events,
    )  # fmt: skip


# Beside the page: keeps every frame's marker and, by ReactionSampler's rule (the same lines
# as verifier/reaction.py), the pictures the reactions are judged on, packed as I420.
_SAMPLER = """async reactionFrames => {
  const { MarkerReader } = await import("/static/marker.js");
  const video = document.getElementById("video");
  const reader = new MarkerReader(video);
  const kept = { markers: [], samples: [], lastInput: 0, due: [] };
  window.gamecastBot = kept;
  const i420 = async (frame) => {
    if (frame.format !== "I420") throw new Error(`decoded frames are ${frame.format}, not I420`);
    const { width, height } = frame.visibleRect;
    const buffer = new Uint8Array(frame.allocationSize());
    const planes = await frame.copyTo(buffer);
    const rows = new Uint8Array((width * height * 3) / 2);
    let at = 0;
    planes.forEach(({ offset, stride }, index) => {
      const [w, h] = index ? [width / 2, height / 2] : [width, height];
      for (let y = 0, start = offset; y < h; y++, at += w, start += stride)
        rows.set(buffer.subarray(start, start + w), at);
    });
    return { width, height, rows };
  };
  const onFrame = async () => {
    video.requestVideoFrameCallback(onFrame);
    const frame = new VideoFrame(video);  // the same picture reader.read() takes
    try {
      const marker = await reader.read();
      if (!marker) return;
      const fields = [marker.frameSequence, marker.captureTimeMs, marker.inputSequence];
      kept.markers.push(fields);
      if (marker.inputSequence > kept.lastInput) {
        kept.lastInput = marker.inputSequence;
        kept.due.push(marker.frameSequence + reactionFrames);
      }
      let wanted = false;
      while (kept.due.length && marker.frameSequence >= kept.due[0]) {
        kept.due.shift();
        wanted = true;
      }
      if (wanted) kept.samples.push({ fields, ...(await i420(frame)) });
    } finally {
      frame.close();
    }
  };
  video.requestVideoFrameCallback(onFrame);
}"""
_RESET = """(s => { s.markersUnreadable = 0;
  for (const k of ["g2gSamples", "i2pSamples", "presentedTimes"]) s[k].length = 0;
})(window.gamecast)"""
_COLLECT = """(s => {
  const text = bytes => { let out = "";
    for (let i = 0; i < bytes.length; i += 32768)
      out += String.fromCharCode.apply(null, bytes.subarray(i, i + 32768));
    return btoa(out); };
  const kept = window.gamecastBot;
  return { times: s.presentedTimes, g2g: s.g2gSamples, i2p: s.i2pSamples,
    unreadable: s.markersUnreadable, markers: kept.markers,
    samples: kept.samples.map(k => ({ fields: k.fields, width: k.width, height: k.height,
      i420: text(k.rows) })) };
})(window.gamecast)"""


async def observe_chromium(request: SessionRequest) -> BotObservation:
    """Play `request` with the web client in headless Chromium."""
    query = urllib.parse.urlencode(
        {"width": request.width, "height": request.height, "fps": request.fps,
         "ticket": request.ticket}
    )  # fmt: skip
    from playwright.async_api import TimeoutError as PageTimeout  # noqa: PLC0415  (optional)

    async with launch_chromium() as browser:
        page = await browser.new_page()
        await page.goto(f"{request.server_url.rstrip('/')}/?{query}")
        await page.click("#play")
        try:
            await page.wait_for_function("window.gamecast.status === 'playing'", timeout=30_000)
        except PageTimeout:
            status = await page.evaluate("window.gamecast.status")
            raise BotError(f"the page did not start playing within 30 s: {status}") from None
        container: str = await page.evaluate("window.gamecast.container") or ""
        request.check_seat(container)
        await page.evaluate(_SAMPLER, REACTION_FRAMES)
        await asyncio.sleep(request.warmup_s)
        await page.evaluate(_RESET)

        async def send(event: TraceEvent) -> int:
            seq: int = await page.evaluate("m => window.gamecast.sendInput(m)", dict(event.message))
            if not seq:
                raise BotError("the page's input channel is not open: the session ended early")
            return seq

        events = await play_trace(request.trace, send)
        data = await page.evaluate(_COLLECT)
        await page.click("#end")
    markers = tuple(FrameMarker(*fields) for fields in data["markers"])
    samples = tuple(
        SampledFrame(
            FrameMarker(*kept["fields"]),
            np.frombuffer(base64.b64decode(kept["i420"]), np.uint8).reshape(
                kept["height"] * 3 // 2, kept["width"]
            ),
        )
        for kept in data["samples"]
    )
    figures = series_summary(data["times"], data["g2g"], data["i2p"])
    return BotObservation(
        container, request.width, request.height, request.fps, figures,
        len(data["times"]), data["unreadable"], markers, samples, events,
    )  # fmt: skip


OBSERVERS: dict[str, Callable[[SessionRequest], Awaitable[BotObservation]]] = {
    "aiortc": observe_aiortc,
    "chromium": observe_chromium,
}
MODES = tuple(OBSERVERS)


async def run_bot_session(
    request: SessionRequest,
    *,
    verifier_id: str,
    mode: str = "aiortc",
    limits: BotLimits = DEFAULT_LIMITS,
) -> tuple[Verdict, BotObservation]:
    """Play one bot session with the client `mode` (one of MODES) and judge it."""
    if mode not in OBSERVERS:
        raise ValueError(f"unknown bot mode {mode!r}; expected one of {', '.join(MODES)}")
    seen = await OBSERVERS[mode](request)
    # Judging replays the game for every checked input: off the event loop, where other
    # sessions' frames are timed.
    at = time.time()
    verdict = await asyncio.to_thread(judge_session, seen, limits, verifier_id=verifier_id, at=at)
    return verdict, seen
