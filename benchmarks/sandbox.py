"""`gamecast bench sandbox`: what a build's sandbox costs, at its start and while it plays.

Start: a session's sandbox set up and torn down around a program that does nothing
(`/usr/bin/true`): cgroups created and removed, the seccomp program on a memfd, `sh` joining
the cgroups, prlimit, `env -i`, bwrap with every namespace; p50/p95 over `--starts` runs,
against the same program started plainly (asyncio's subprocess), in the same run. Play: the
example build (examples/arcade, 1280x720 at 60 fps) captured as the streamer captures it
(benchmarks/capture.py's gamecast method), its game once sandboxed and once not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from benchmarks.capture import EXAMPLE, FPS_TARGET, gamecast_sampler, measure
from benchmarks.report import limit, machine, print_end, print_limits
from builds.manifest import MANIFEST_NAME, parse_manifest
from node.console import Column, table
from streamer.game_process import GameProcess
from streamer.sandbox import BUILD_MOUNT, SandboxLimits, exit_status
from streamer.sandbox_host import GameSandbox, SandboxHost, probe_sandbox
from streamer.xdisplay import XvfbDisplay
from verifier.frame_stats import percentile

START_TARGET_MS = 50.0  # ours: a sandbox must not add more than this to Play
START_COLUMNS: tuple[Column, ...] = (
    ("method", "start of /usr/bin/true", "{}"), ("runs", "runs", "{}"),
    ("p50_ms", "p50 ms", "{:.2f}"), ("p95_ms", "p95 ms", "{:.2f}"),
)  # fmt: skip
CAPTURE_COLUMNS: tuple[Column, ...] = (
    ("method", "capture at 720p60", "{}"), ("frames", "frames", "{}"), ("fps", "fps", "{:.1f}"),
    ("p50_ms", "p50 ms", "{:.2f}"), ("p95_ms", "p95 ms", "{:.2f}"), ("cpu_pct", "CPU %", "{:.0f}"),
)  # fmt: skip


async def _plain_start() -> None:
    process = await asyncio.create_subprocess_exec("/usr/bin/true")
    await process.wait()


async def _sandboxed_start(host: SandboxHost, display: XvfbDisplay) -> None:
    async with GameSandbox(
        host, ["/usr/bin/true"], build_dir=EXAMPLE, display=display.number,
        xauthority=display.xauthority, session_name="bench",
    ) as jail:  # fmt: skip
        process = await asyncio.create_subprocess_exec(*jail.command, env={},
                                                       pass_fds=jail.pass_fds)  # fmt: skip
        if await process.wait() != 0:
            raise RuntimeError("the sandboxed /usr/bin/true failed")


async def _starts(host: SandboxHost, runs: int) -> list[dict[str, Any]]:
    rows = []
    async with XvfbDisplay(320, 240) as display:
        for method, start in (
            ("plain (asyncio subprocess)", _plain_start),
            ("sandboxed (cgroups, seccomp, bwrap)", lambda: _sandboxed_start(host, display)),
        ):
            await start()  # warm: page cache, the seccomp program compiled once
            times = []
            for _ in range(runs):
                began = time.perf_counter()
                await start()
                times.append((time.perf_counter() - began) * 1000)
            rows.append({"method": method, "runs": runs, "p50_ms": round(percentile(times, 0.5), 3),
                         "p95_ms": round(percentile(times, 0.95), 3)})  # fmt: skip
    return rows


@contextlib.asynccontextmanager
async def _example(host: SandboxHost | None) -> AsyncIterator[tuple[XvfbDisplay, GameProcess]]:
    manifest = parse_manifest((EXAMPLE / MANIFEST_NAME).read_bytes())
    async with contextlib.AsyncExitStack() as stack:
        display = await stack.enter_async_context(XvfbDisplay(manifest.width, manifest.height))
        if host is None:
            argv = manifest.command(str(EXAMPLE), sys.executable)
            game = GameProcess(argv, cwd=EXAMPLE, display=display.name)
        else:
            limits = SandboxLimits.for_needs(manifest.requires.ram_mib, manifest.requires.cpu_cores)
            jail = await stack.enter_async_context(GameSandbox(
                host, manifest.command(str(BUILD_MOUNT), sys.executable), build_dir=EXAMPLE,
                display=display.number,
                xauthority=display.xauthority, session_name="bench", limits=limits,
            ))  # fmt: skip
            game = GameProcess(jail.command, cwd=EXAMPLE, display=display.name, env={},
                               pass_fds=jail.pass_fds, exit_status=exit_status)  # fmt: skip
        await stack.enter_async_context(game)
        yield display, game


async def _captures(host: SandboxHost, seconds: float) -> list[dict[str, Any]]:
    rows = []
    for method, sandbox in (("example build, sandboxed", host), ("example build, plain", None)):
        async with _example(sandbox) as (display, game):
            sample = gamecast_sampler(display.name, 1280, 720, 60, seconds)
            rows.append(await asyncio.to_thread(measure, method, sample))
            if not game.running:
                raise RuntimeError(f"during the run, {(await game.wait()).describe()}")
        rows[-1].pop("note")
    return rows


async def run(starts: int, seconds: float) -> dict[str, Any]:
    host = await probe_sandbox()
    start_rows = await _starts(host, starts)
    capture_rows = await _captures(host, seconds)
    return {
        "benchmark": "sandbox",
        "machine": machine(),
        "config": {"starts": starts, "seconds": seconds, "sandbox": host.describe()},
        "starts": start_rows,
        "captures": capture_rows,
        "targets": {
            "sandbox_start_p50_ms": limit(start_rows[1]["p50_ms"], START_TARGET_MS, at_most=True),
            "sandboxed_captured_fps": limit(capture_rows[0]["fps"], FPS_TARGET, at_most=False),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gamecast bench sandbox", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument("--starts", type=int, default=30, help="timed starts per method")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed capture per method")
    parser.add_argument("--json", metavar="PATH", help="also write the JSON report there")
    args = parser.parse_args(argv)
    print(f"gamecast bench sandbox: {args.starts} starts, {args.seconds:g} s of capture each")
    report = asyncio.run(run(args.starts, args.seconds))
    print()
    print(table(report["starts"], START_COLUMNS))
    print()
    print(table(report["captures"], CAPTURE_COLUMNS))
    print_limits(14, report["targets"], form="{:,.2f}")
    print_end(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
