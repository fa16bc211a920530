"""`gamecast bench verifier`: does the bot measure what a container really adds? (issue 6)

For each extra delay (0, 20, 50 and 100 ms by default) a container process is started with
that impairment (streamer/impairment.py: each encoded frame is held that long before it is
sent, the frame rate and the marker's capture time untouched), and the aiortc bot plays one
bot session against it, the default trace at 720p60. The bot's glass-to-glass p50 must rise
over the 0 ms baseline by the delay, within +-3 ms. The container runs in its own process,
so the CPU time this process spends during the session is the bot's (the signaling server
beside it idles): a bot session at 720p60 must cost at most one core.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.latency import container_process
from benchmarks.report import limit, machine, print_end, print_limits
from node.console import Column, table
from node.runtime import serve
from verifier.bot_session import SessionRequest, observe_aiortc
from verifier.bot_verdict import BotLimits, judge_session
from verifier.trace import DEFAULT_TRACE, InputTrace, load_trace

DELAYS_MS = (0, 20, 50, 100)
RISE_TOLERANCE_MS = 3.0
BOT_CORES_TARGET = 1.0


async def measure(
    delay_ms: int, request: SessionRequest, container_options: list[str], log_dir: Path
) -> dict[str, Any]:
    """One bot session against a container holding frames `delay_ms`, with an indexer of its
    own (no container of an earlier delay lingers in its registry); the bot's figures."""
    options = [*container_options]
    if delay_ms:
        options += ["--impair-delay-ms", str(delay_ms)]
    async with serve("127.0.0.1", 0) as server:
        started = container_process(server, f"delay-{delay_ms}", options, log_dir)
        async with started:
            bot = psutil.Process()
            before, wall = bot.cpu_times(), time.monotonic()
            observed = await observe_aiortc(dataclasses.replace(request, server_url=server.url))
            after, elapsed = bot.cpu_times(), time.monotonic() - wall
    busy = (after.user - before.user) + (after.system - before.system)
    verdict = judge_session(observed, BotLimits(), verifier_id="bench", at=time.time())
    figures = observed.figures
    return {
        "delay_ms": delay_ms,
        "frames": observed.frames,
        "fps": figures["fps"],
        "g2g_p50_ms": figures["g2g_p50_ms"],
        "g2g_p95_ms": figures["g2g_p95_ms"],
        "i2p_p50_ms": figures["i2p_p50_ms"],
        "reactions": f"{verdict.metrics['reactions_seen']:.0f}/"
        f"{verdict.metrics['reactions_expected']:.0f}",
        "bot_cores": round(busy / elapsed, 3),
        "verdict": "passed" if verdict.passed else "failed: " + ", ".join(
            finding.name for finding in verdict.failures
        ),
    }  # fmt: skip


async def run(
    delays: tuple[int, ...], request: SessionRequest, encoder: str, log_dir: Path
) -> dict[str, Any]:
    """Measure every delay, one container at a time; the report as a dict."""
    container_options = [
        "--encoder", encoder, "--capacity", "1", "--max-size",
        f"{request.width}x{request.height}", "--max-fps", str(request.fps),
    ]  # fmt: skip
    rows = []
    for delay_ms in delays:
        print(f"  extra delay {delay_ms} ms: {request.trace.duration_ms / 1000:.1f} s of trace",
              flush=True)  # fmt: skip
        rows.append(await measure(delay_ms, request, container_options, log_dir))
    baseline = rows[0]["g2g_p50_ms"]
    for row in rows:
        row["rise_ms"] = round(row["g2g_p50_ms"] - baseline, 1)
        row["rise_error_ms"] = round(row["rise_ms"] - row["delay_ms"], 1)
    targets = {
        f"rise at {row['delay_ms']} ms within +-{RISE_TOLERANCE_MS:g} ms": limit(
            abs(row["rise_error_ms"]), RISE_TOLERANCE_MS, at_most=True
        )
        for row in rows[1:]
    }
    most_cores = max(row["bot_cores"] for row in rows)
    targets["bot cores per session"] = limit(most_cores, BOT_CORES_TARGET, at_most=True)
    shape = f"{request.width}x{request.height}@{request.fps}"
    return {"benchmark": "verifier", "machine": machine(),
            "config": {"stream": shape, "encoder": encoder, "trace": request.trace.name,
                       "delays_ms": list(delays)},
            "results": rows, "targets": targets}  # fmt: skip


COLUMNS: tuple[Column, ...] = (
    ("delay_ms", "delay ms", "{}"), ("fps", "fps", "{:.1f}"),
    ("g2g_p50_ms", "g2g p50", "{:.1f}"), ("g2g_p95_ms", "g2g p95", "{:.1f}"),
    ("rise_ms", "rise ms", "{:.1f}"), ("rise_error_ms", "rise error", "{:+.1f}"),
    ("i2p_p50_ms", "i2p p50", "{:.1f}"), ("reactions", "reactions", "{}"),
    ("bot_cores", "bot cores", "{:.2f}"), ("verdict", "verdict", "{}"),
)  # fmt: skip


def _delays(text: str) -> tuple[int, ...]:
    try:
        delays = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected delays in ms like 0,20,50; got {text!r}"
        ) from None
    if len(delays) < 2 or delays[0] != 0 or any(d < 0 for d in delays):
        raise argparse.ArgumentTypeError("give 0 (the baseline) first, then at least one delay")
    return delays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gamecast bench verifier", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument(
        "--delays",
        type=_delays,
        default=DELAYS_MS,
        metavar="MS,MS,...",
        help="extra delays, the 0 ms baseline first (default: 0,20,50,100)",
    )
    parser.add_argument("--trace", help="an input trace file (default: the built-in tour)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=60)
    parser.add_argument("--encoder", default="x264", help="the containers' encoder")
    parser.add_argument("--json", metavar="PATH", help="also write the JSON report there")
    args = parser.parse_args(argv)  # fmt: skip
    trace: InputTrace = DEFAULT_TRACE if args.trace is None else load_trace(args.trace)
    # Each measurement has an indexer of its own, with one container: no ticket needed.
    request = SessionRequest("", trace=trace, width=args.width, height=args.height, fps=args.fps)
    log_dir = Path(args.json or "bench-results/verifier.json").parent / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    delays = ", ".join(map(str, args.delays))
    print(f"gamecast bench verifier: {args.width}x{args.height}@{args.fps}, delays {delays} ms; "
          f"container logs in {log_dir}/")  # fmt: skip
    report = asyncio.run(run(args.delays, request, args.encoder, log_dir))
    print()
    print(table(report["results"], COLUMNS))
    print_limits(6, report["targets"], form="{:.2f}")
    print_end(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
