"""`gamecast bench builds`: Play to the first decoded frame of a studio's build, cold and warm.

One run, on loopback: an indexer with a build catalog, the example build (examples/arcade)
uploaded with a studio key and deployed by a container agent from it, as studios and hosts do;
headless Chromium (Debian's) presses Play, waits for the first decoded frame (the page's own
`timeToFirstFrameMs`, presses to `requestVideoFrameCallback`), presses End, `--presses` times:

- the reference game (the agent's own, nothing to start): the baseline;
- the build cold (`warm_standby` off: Xvfb, sandbox and game started on Play);
- the build warm (a standby run waiting, taken by the session: checked by its game's pid).

Then what a start costs, step by step (`BuildRun.start_ms`: Xvfb up, the session's sandbox
set up, the game spawned in it, XTEST connected) over `--starts` runs, and what a waiting run
costs its host: resident memory and CPU (psutil) of its Xvfb and every process of its
sandbox over `--idle-seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from benchmarks.errors import BenchmarkError
from benchmarks.report import limit, machine, print_end, print_limits
from builds.manifest import MANIFEST_NAME
from builds.studio_keys import STUDIO_KEYS_FILE, StudioKeys
from builds.upload import upload_build
from node.console import Column, table
from node.runtime import RunningServer, run_agent, serve
from signaling.config import ServerConfig
from streamer.agent import AgentConfig, ContainerAgent
from streamer.build_run import BuildRun
from streamer.deploy import DeployedBuild
from streamer.warm_pool import WarmPool
from verifier.browser import launch_chromium
from verifier.frame_stats import percentile

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "arcade"
BUILD = "arcade"
WARM_TARGET_MS = 400.0  # issue 14: a warm build's Play about as fast as the reference game's
SETTLE_S = 1.0  # between a session's end and the next Play: what a player's pause would be
READY_LIMIT_S = 30.0
STEPS = ("display", "sandbox", "game", "input")
PLAY_COLUMNS: tuple[Column, ...] = (
    ("game", "Play -> first frame", "{}"), ("presses", "presses", "{}"),
    ("p50_ms", "p50 ms", "{:.0f}"), ("p95_ms", "p95 ms", "{:.0f}"),
    ("min_ms", "min ms", "{:.0f}"), ("picture_p50_ms", "own picture p50 ms", "{:.0f}"),
    ("note", "note", "{}"),
)  # fmt: skip
START_COLUMNS: tuple[Column, ...] = (
    ("step", "start of a run (sandboxed)", "{}"), ("runs", "runs", "{}"),
    ("p50_ms", "p50 ms", "{:.1f}"), ("p95_ms", "p95 ms", "{:.1f}"),
)  # fmt: skip
COST_COLUMNS: tuple[Column, ...] = (
    ("state", "a waiting run", "{}"), ("process", "process", "{}"), ("count", "processes", "{}"),
    ("rss_mib", "RSS MiB", "{:.1f}"), ("cpu_pct", "CPU % of a core", "{:.1f}"),
)  # fmt: skip


class BuildBenchError(BenchmarkError, RuntimeError):
    """The build benchmark could not measure what it should (a run not taken, none ready)."""


def example_archive(folder: Path) -> Path:
    """examples/arcade zipped as a studio uploads it."""
    path = folder / f"{BUILD}.zip"
    with zipfile.ZipFile(path, "w") as zipped:
        zipped.write(EXAMPLE / "game.py", "game.py")
        zipped.write(EXAMPLE / MANIFEST_NAME, MANIFEST_NAME)
    return path


@contextlib.asynccontextmanager
async def catalog(folder: Path) -> AsyncIterator[RunningServer]:
    """An indexer keeping builds under `folder`, with the example build uploaded to it."""
    data = folder / "indexer"
    data.mkdir()
    _, key = StudioKeys(data / STUDIO_KEYS_FILE).issue("bench", datetime.now(UTC).isoformat())
    async with serve("127.0.0.1", 0, ServerConfig(builds_dir=data)) as server:
        async with aiohttp.ClientSession() as http:
            await upload_build(http, server.url, key, example_archive(folder))
        yield server


def hosting(server: RunningServer, folder: Path, *, warm: bool) -> Any:
    config = AgentConfig(
        server.container_url, f"bench-{'warm' if warm else 'cold'}", encoder="x264",
        max_width=1280, max_height=720, max_fps=60, builds_dir=folder / f"container-{warm}",
        deploy=(BUILD,), warm_standby=warm,
    )  # fmt: skip
    return run_agent(config, sessions=1)


async def _standing_by(server: RunningServer, container: str) -> None:
    """Until `container` is free again (its last session fully ended)."""
    async with aiohttp.ClientSession() as http, asyncio.timeout(15):
        while True:
            async with http.get(server.url + "/api/containers") as response:
                rows = (await response.json())["containers"]
            if any(r["container"] == container and r["availability"] == "standby" for r in rows):
                return
            await asyncio.sleep(0.05)


# The first presented frame that shows the example build's own picture: its background colour
# at a pixel clear of its grid, its square and the marker strip (not Xvfb's empty root window,
# which a capture shows before the game has drawn).
WATCH_PICTURE = """(() => {
  const video = document.getElementById('video');
  const context = new OffscreenCanvas(1, 1).getContext('2d', {willReadFrequently: true});
  window.benchFirstPicture = null;
  const check = (now, metadata) => {
    if (video.videoWidth) {
      context.drawImage(video, 41, 201, 1, 1, 0, 0, 1, 1);
      const [r, g, b] = context.getImageData(0, 0, 1, 1).data;
      if (Math.abs(r - 16) < 24 && Math.abs(g - 24) < 24 && Math.abs(b - 48) < 24) {
        window.benchFirstPicture = performance.timeOrigin + (metadata.presentationTime ?? now)
          - window.gamecast.playPressedAt;
        return;
      }
    }
    video.requestVideoFrameCallback(check);
  };
  video.requestVideoFrameCallback(check);
})()"""


@dataclass
class Plays:
    """Timed Plays of one game: to the first frame, to its own picture; runs taken waiting."""

    first_frame_ms: list[float] = field(default_factory=list)
    picture_ms: list[float] = field(default_factory=list)
    taken: int = 0

    def row(self, game: str, note: str) -> dict[str, Any]:
        times, pictures = self.first_frame_ms, self.picture_ms
        return {
            "game": game,
            "presses": len(times),
            "p50_ms": round(percentile(times, 0.5), 1),
            "p95_ms": round(percentile(times, 0.95), 1),
            "min_ms": round(min(times), 1),
            "picture_p50_ms": round(percentile(pictures, 0.5), 1) if pictures else None,
            "samples_ms": [round(ms, 1) for ms in times],
            "picture_samples_ms": [round(ms, 1) for ms in pictures],
            "note": note,
        }


async def _press(page: Any, agent: ContainerAgent, plays: Plays, build: bool) -> int | None:
    """Play, time the first decoded frame (and, for the build, the first showing its own
    picture), End; returns the pid of the build's game the session played."""
    if build:
        await page.evaluate(WATCH_PICTURE)
    await page.click("#play")
    await page.wait_for_function("window.gamecast.timeToFirstFrameMs !== null", timeout=30_000)
    plays.first_frame_ms.append(await page.evaluate("window.gamecast.timeToFirstFrameMs"))
    runs = [agent.build_run(session) for session in agent.sessions]
    pid = next((run.pid for run in runs if run is not None), None)
    if build:
        await page.wait_for_function("window.benchFirstPicture !== null", timeout=30_000)
        plays.picture_ms.append(await page.evaluate("window.benchFirstPicture"))
    await page.click("#end")
    return pid


async def _plays(
    browser: Any, server: RunningServer, agent: ContainerAgent, game: str, presses: int
) -> Plays:
    """`presses` timed Plays of `game`; with a warm pool, each once a run waits (paused)."""
    page = await browser.new_page()
    await page.goto(f"{server.url}/?game={game}")
    await page.wait_for_function("window.gamecast.gamesListed")
    pool = agent.standby if game == BUILD else None
    plays = Plays()
    for _ in range(presses):
        await _standing_by(server, agent.config.container_id)
        waiting = None
        if pool is not None:
            waiting = await asyncio.wait_for(pool.wait_ready(BUILD), READY_LIMIT_S)
            async with asyncio.timeout(READY_LIMIT_S):
                while not waiting.paused:  # noqa: ASYNC110  (the pool's state: no event)
                    await asyncio.sleep(0.05)
        await asyncio.sleep(SETTLE_S)
        pid = await _press(page, agent, plays, game == BUILD)
        plays.taken += waiting is not None and pid == waiting.pid
        print(f"    {game}: {plays.first_frame_ms[-1]:.0f} ms", flush=True)
    await _standing_by(server, agent.config.container_id)
    await page.close()
    return plays


async def _start_steps(
    build: DeployedBuild, agent: ContainerAgent, runs: int
) -> list[dict[str, Any]]:
    """Each step of a sandboxed run's start, timed over `runs` starts (each stopped after)."""
    laps: dict[str, list[float]] = {step: [] for step in (*STEPS, "total")}
    for _ in range(runs):
        async with BuildRun(build, sandbox=agent.sandbox) as run:
            for step in STEPS:
                laps[step].append(run.start_ms[step])
            laps["total"].append(sum(run.start_ms.values()))
    names = {
        "display": "Xvfb up (its cookie)", "sandbox": "sandbox set up (cgroups, seccomp)",
        "game": "game spawned in bwrap", "input": "XTEST connected", "total": "total",
    }  # fmt: skip
    return [
        {
            "step": names[step],
            "runs": runs,
            "p50_ms": round(percentile(times, 0.5), 2),
            "p95_ms": round(percentile(times, 0.95), 2),
        }
        for step, times in laps.items()
    ]


def _cost(run: BuildRun, state: str, seconds: float) -> list[dict[str, Any]]:
    """RSS now and CPU over `seconds` of the run's Xvfb and its sandbox (blocking)."""
    game = psutil.Process(run.game.pid)
    groups = {"Xvfb": [psutil.Process(run.display.pid)], "game (bwrap and all in it)":
              [game, *game.children(recursive=True)]}  # fmt: skip
    before = {name: [p.cpu_times() for p in procs] for name, procs in groups.items()}
    began = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - began
    rows: list[dict[str, Any]] = []
    for name, procs in groups.items():
        busy = sum(
            (after.user - was.user) + (after.system - was.system)
            for was, after in zip(before[name], (p.cpu_times() for p in procs), strict=True)
        )
        rss = sum(p.memory_info().rss for p in procs) / 2**20
        cpu = round(100 * busy / elapsed, 1)
        rows.append({"state": state, "process": name, "count": len(procs),
                     "rss_mib": round(rss, 1), "cpu_pct": cpu})  # fmt: skip
    total = {key: sum(row[key] for row in rows) for key in ("count", "rss_mib", "cpu_pct")}
    rows.append({"state": state, "process": "total", "count": total["count"],
                 "rss_mib": round(total["rss_mib"], 1),
                 "cpu_pct": round(total["cpu_pct"], 1)})  # fmt: skip
    return rows


async def _waiting_cost(pool: WarmPool, seconds: float) -> list[dict[str, Any]]:
    """What a waiting run costs paused (as it waits) and, for comparison, running."""
    waiting = await asyncio.wait_for(pool.wait_ready(BUILD), READY_LIMIT_S)
    async with asyncio.timeout(READY_LIMIT_S):
        while not waiting.paused:  # noqa: ASYNC110  (the pool's state: no event)
            await asyncio.sleep(0.05)
    await asyncio.sleep(SETTLE_S)  # the pause's signals delivered
    paused = await asyncio.to_thread(_cost, waiting, "paused (standby)", seconds)
    waiting.resume()
    try:
        running = await asyncio.to_thread(_cost, waiting, "running (not paused)", seconds)
    finally:
        await waiting.pause()
    return paused + running


async def run(presses: int, starts: int, idle_seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gamecast-bench-builds-") as tmp:
        folder = Path(tmp)
        async with catalog(folder) as server, launch_chromium() as browser:
            async with hosting(server, folder, warm=False) as cold:
                if cold.sandbox is None:
                    raise BuildBenchError(f"no sandbox on this host: {cold.sandbox_refusal}")
                sandbox = cold.sandbox.describe()
                print("  reference game, then the build cold", flush=True)
                reference = await _plays(browser, server, cold, "reference", presses)
                cold_plays = await _plays(browser, server, cold, BUILD, presses)
                print(f"  {starts} sandboxed starts of the build", flush=True)
                steps = await _start_steps(cold.builds[BUILD], cold, starts)
            async with hosting(server, folder, warm=True) as warm:
                pool = warm.standby
                if not isinstance(pool, WarmPool):
                    raise BuildBenchError("the warm container keeps no standby runs")
                print(f"  a waiting run, {idle_seconds:g} s paused and running", flush=True)
                cost = await _waiting_cost(pool, idle_seconds)
                print("  the build warm", flush=True)
                warm_plays = await _plays(browser, server, warm, BUILD, presses)
    if warm_plays.taken != presses:
        raise BuildBenchError(
            f"only {warm_plays.taken} of {presses} warm sessions took the waiting run"
        )
    plays = [
        reference.row("reference game", "the baseline: nothing to start"),
        cold_plays.row(f"{BUILD}, cold", "Xvfb, sandbox and game started on Play"),
        warm_plays.row(f"{BUILD}, warm", f"the waiting run taken: {warm_plays.taken}/{presses}"),
    ]
    return {
        "benchmark": "builds",
        "machine": machine(),
        "config": {
            "presses": presses,
            "starts": starts,
            "idle_seconds": idle_seconds,
            "settle_s": SETTLE_S,
            "sandbox": sandbox,
        },
        "plays": plays,
        "start_steps": steps,
        "waiting_cost": cost,
        "targets": {
            "warm_play_to_first_frame_p50_ms": limit(
                plays[2]["p50_ms"], WARM_TARGET_MS, at_most=True
            ),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gamecast bench builds", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument("--presses", type=int, default=8, help="timed Plays per game and mode")
    parser.add_argument("--starts", type=int, default=10, help="timed starts of a run")
    parser.add_argument("--idle-seconds", type=float, default=10.0,
                        help="how long a waiting run's CPU is measured")  # fmt: skip
    parser.add_argument("--json", metavar="PATH", help="also write the JSON report there")
    args = parser.parse_args(argv)
    print(f"gamecast bench builds: {args.presses} presses each in Chromium, {args.starts} starts")
    report = asyncio.run(run(args.presses, args.starts, args.idle_seconds))
    print()
    print(table(report["plays"], PLAY_COLUMNS))
    print()
    print(table(report["start_steps"], START_COLUMNS))
    print()
    print(table(report["waiting_cost"], COST_COLUMNS))
    print_limits(14, report["targets"], form="{:,.0f}")
    print_end(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
