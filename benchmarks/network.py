"""`gamecast bench network`: a 720p60 session through a lossy, narrow link, before and after.

The bot plays through testbed/relay.py (the kernel here has no netem). Three phases: a clean
link, then the impairment (by default 2 % random loss and a 4 Mb/s bottleneck with a 100 ms
queue on the downstream), then a clean link again to see recovery. Per phase: received fps,
glass-to-glass, freezes and unreadable frames; every half second a trace point with the
encoder's target bitrate and what the link delivered. aiortc's stock H.264 sender is measured
in the same run, through the same link with the same loss pattern, as the baseline. The whole
network runs in this process so the sender's bitrate decisions can be read directly.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from benchmarks.report import machine, write_json
from node.console import Column, table
from node.runtime import embedded_network
from streamer.agent import ContainerAgent
from streamer.encoder import encoder_in_use
from testbed.relay import LinkConfig, LinkModel, UdpRelay
from verifier.bot import BotPlayer
from verifier.frame_stats import FrameLog

CONFIGURATIONS = {"gamecast": "x264", "aiortc stock H.264": "aiortc"}
TRACE_PERIOD = 0.5
STATUS_PERIOD = 5.0


def _target_bitrate(agent: ContainerAgent, session_id: str) -> int | None:
    """The rate the sender's encoder aims at now: ours from its controller, aiortc's stock."""
    session = agent.sessions.get(session_id)
    if session is None:
        return None
    pipeline = session.track.pipeline
    if pipeline is not None and pipeline.bitrate is not None:
        return pipeline.bitrate.target
    encoder = encoder_in_use(session.video_sender)
    return getattr(encoder, "target_bitrate", None)


@dataclass
class _Run:
    """One bot session through the relay, measured phase by phase."""

    bot: BotPlayer
    relay: UdpRelay
    target_bitrate: Callable[[], int | None]
    started: float = field(default_factory=time.monotonic)
    trace: list[dict[str, Any]] = field(default_factory=list)

    async def phase(self, name: str, link: LinkConfig, seconds: float) -> dict[str, Any]:
        self.relay.downstream.config = link
        self.bot.log = log = FrameLog()
        counters = self.relay.downstream.counters
        phase_start = time.monotonic()
        delivered, frames = counters.delivered_bytes, 0
        next_status = phase_start + STATUS_PERIOD
        while time.monotonic() - phase_start < seconds:
            await asyncio.sleep(TRACE_PERIOD)
            now, target = time.monotonic(), self.target_bitrate()
            point = {
                "t_s": round(now - self.started, 2),
                "phase": name,
                "target_mbps": None if target is None else round(target / 1e6, 3),
                "delivered_mbps": round(
                    (counters.delivered_bytes - delivered) * 8 / TRACE_PERIOD / 1e6, 3
                ),
                "fps": round((log.frames - frames) / TRACE_PERIOD, 1),
            }
            self.trace.append(point)
            delivered, frames = counters.delivered_bytes, log.frames
            if now >= next_status:
                print(f"    {name}: {now - phase_start:4.0f}/{seconds:.0f} s, {point}", flush=True)
                next_status += STATUS_PERIOD
        summary = log.summary()
        points = [p for p in self.trace if p["phase"] == name]
        return {
            "phase": name,
            "received_fps": summary["fps"],
            "g2g_p50_ms": summary["g2g_p50_ms"],
            "g2g_p95_ms": summary["g2g_p95_ms"],
            "freezes": summary["freezes"],
            "unreadable": summary["unreadable"],
            "sequence_gaps": summary["sequence_gaps"],
            "delivered_mbps": round(
                sum(p["delivered_mbps"] for p in points) / max(1, len(points)), 2
            ),
            "target_mbps_at_end": points[-1]["target_mbps"] if points else None,
        }


async def measure(encoder: str, phases: list[tuple[str, LinkConfig, float]]) -> dict[str, Any]:
    async with (
        embedded_network(encoder=encoder) as (server, agent),
        aiohttp.ClientSession() as http,
        UdpRelay(LinkModel(seed=1), LinkModel(seed=2)) as relay,
    ):
        bot = BotPlayer(server.player_url, route=relay)
        async with bot.play(http):
            await bot.wait_frames(60)
            session_id = bot.session_id or ""
            run = _Run(bot, relay, lambda: _target_bitrate(agent, session_id))
            rows = [await run.phase(name, link, seconds) for name, link, seconds in phases]
            pipeline = agent.sessions[session_id].track.pipeline
            keyframes = None
            if pipeline is not None and pipeline.encoding:
                keyframes = {
                    "requested": pipeline.keyframes.requested,
                    "granted": pipeline.keyframes.granted,
                }
    return {
        "phases": rows,
        "trace": run.trace,
        "keyframes": keyframes,
        "link": asdict(relay.downstream.counters),
    }


COLUMNS: tuple[Column, ...] = (
    ("config", "config", "{}"), ("phase", "phase", "{}"), ("received_fps", "fps", "{:.1f}"),
    ("g2g_p50_ms", "g2g p50", "{:.1f}"), ("g2g_p95_ms", "g2g p95", "{:.1f}"),
    ("freezes", "freezes", "{}"), ("unreadable", "unread", "{}"),
    ("delivered_mbps", "link Mb/s", "{:.2f}"), ("target_mbps_at_end", "target Mb/s", "{:.2f}"),
)  # fmt: skip


def phase_rows(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One table row per configuration and phase."""
    return [{"config": config, **row} for config, r in results.items() for row in r["phases"]]


def main(args: argparse.Namespace) -> None:
    impaired = LinkConfig(loss=args.loss, rate_bps=args.rate_mbps * 1e6, queue_ms=args.queue_ms)
    phases = [
        ("before", LinkConfig(), args.before),
        ("impaired", impaired, args.impaired),
        ("after", LinkConfig(), args.after),
    ]
    print(
        f"gamecast bench network: 720p60 bot session, {args.loss:.0%} loss and a "
        f"{args.rate_mbps:g} Mb/s cap ({args.queue_ms:g} ms queue) for {args.impaired:g} s, "
        f"{args.before:g} s clean before, {args.after:g} s after"
    )
    results = {}
    for label, encoder in CONFIGURATIONS.items():
        print(f"  {label}", flush=True)
        results[label] = asyncio.run(measure(encoder, phases))
    print()
    print(table(phase_rows(results), COLUMNS))
    for label, result in results.items():
        if result["keyframes"] is not None:
            print(f"\n{label}: keyframes requested {result['keyframes']['requested']}, "
                  f"sent {result['keyframes']['granted']}")  # fmt: skip
    report = {
        "benchmark": "network",
        "machine": machine(),
        "link": asdict(impaired),
        "phases_s": {name: seconds for name, _, seconds in phases},
        "results": results,
    }
    print(f"\nJSON (with the bitrate trace) written to {write_json(args.out, report)}")
