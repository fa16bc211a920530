"""Warm standby: a started, waiting run of each build the container hosts, for the next player.

A `BuildRun` (streamer/build_run.py: Xvfb with its cookie, the game in its sandbox on it,
XTEST input connected, the capture prepared) is started while the container stands by, so a
player's Play skips the display, the sandbox and the game's own start: the session takes the
waiting run (`take`) and only its capture thread starts. The rules of when to start, replace,
hand over and back off are pure (streamer/standby_rules.py); this is their edge: one keeper
task, owned by the agent through `async with`, runs every start in its own TaskGroup, and
leaving the block cancels the starts and stops every run, waiting or starting.

A waiting game that exits on its own is recorded (`on_exit`, as the agent records any game's
exit) and replaced after the rules' backoff; its build's tree is verified (the agent's
`verify`, streamer/deploy.py) before each start, as before each session.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any

from streamer.build_run import BuildRun, BuildRunError
from streamer.deploy import DeployedBuild
from streamer.game_process import GameExit
from streamer.sandbox_host import SandboxHost
from streamer.standby_rules import SlotState, StandbyRules

log = logging.getLogger(__name__)

Verify = Callable[[DeployedBuild], str | None]  # blocking: None, or why the build must not run
RecordExit = Callable[[str, GameExit], None]  # (build name, how its waiting game ended)


class WarmPool:
    """Waiting runs of `builds`, one each; enter it (`async with`) to keep them.

    `launch` makes a run (default: `BuildRun` in `sandbox`); `clock` is monotonic seconds.
    """

    def __init__(
        self,
        builds: Mapping[str, DeployedBuild],
        *,
        sandbox: SandboxHost | None,
        verify: Verify,
        on_exit: RecordExit,
        launch: Callable[[DeployedBuild], BuildRun] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.builds = dict(builds)
        self.rules = StandbyRules(self.builds)
        self._verify = verify
        self._on_exit = on_exit
        self._launch = launch or functools.partial(_launch, sandbox=sandbox)
        self._clock = clock
        self._waiting: dict[str, BuildRun] = {}
        self._starting: dict[str, asyncio.Task[None]] = {}
        self._changed = asyncio.Event()  # wakes the keeper: a rule's input changed
        self._ready = asyncio.Condition()  # notified whenever a run starts waiting
        self._keeper: asyncio.Task[None] | None = None
        # Runs being paused or stopped, outside the keeper's TaskGroup: neither is cancelled
        # halfway (a game left running, or stopped after its resume), and the keeper awaits
        # every one before it stops the runs it still holds.
        self._chores: set[asyncio.Task[None]] = set()

    def waiting(self, name: str) -> BuildRun | None:
        """The run of `name` waiting for a player, if one is."""
        return self._waiting.get(name)

    async def wait_ready(self, name: str) -> BuildRun:
        """The next waiting run of `name` (now, if one waits); for tests and benchmarks."""
        async with self._ready:
            await self._ready.wait_for(lambda: name in self._waiting)
        return self._waiting[name]

    async def settled(self, name: str) -> None:
        """Once no start of `name` is in flight (its verification among it: a session's own
        verification must not repair the tree at the same time)."""
        starting = self._starting.get(name)
        if starting is not None:
            await asyncio.wait({starting})  # our cancellation does not cancel the pool's start

    async def take(self, name: str) -> BuildRun | None:
        """The waiting run of `name` for a session, or None (a cold start is the caller's).

        One still starting is awaited: it is the start the player would wait for anyway,
        begun earlier. The caller owns the run from here: it sets `on_exit` and stops it.
        """
        await self.settled(name)
        if not self.rules.take(name):
            return None
        run = self._waiting.pop(name)
        run.on_exit = None
        run.resume()
        return run

    def discard(self, name: str) -> None:
        """Stop `name`'s waiting or starting run: its build's tree changed on disk."""
        run = self._waiting.pop(name, None)
        if run is not None:
            self.rules.discarded(name)
            log.warning("standby run of %s discarded: its build changed on disk", name)
            self._stop_later(run)
        elif (starting := self._starting.get(name)) is not None:
            starting.cancel()
        self._changed.set()

    def session_started(self, session: str) -> None:
        """A session began on the container: no run is started until it stands by again."""
        self.rules.session_started(session)

    def session_ended(self, session: str) -> None:
        """A session and its run are finished: a fresh run follows when none is left."""
        self.rules.session_ended(session)
        self._changed.set()

    async def __aenter__(self) -> WarmPool:
        self._keeper = asyncio.create_task(self._keep(), name="gamecast-warm-pool")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _keep(self) -> None:
        """Start what the rules say is due, sleep until the next is due or something changed;
        on the way out, every run left is stopped (their starts first cancelled)."""
        try:
            async with asyncio.TaskGroup() as tasks:
                while True:
                    self._changed.clear()
                    now = self._clock()
                    for name in self.rules.due(now):
                        self._starting[name] = tasks.create_task(self._start(name))
                    for name in self.rules.to_pause(now):
                        self._chore(self._pause(name))
                    due = self.rules.next_due(now)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(None if due is None else due - now):
                            await self._changed.wait()
        finally:
            await asyncio.gather(*self._chores, return_exceptions=True)
            runs, self._waiting = list(self._waiting.values()), {}
            await asyncio.gather(*(run.stop() for run in runs), return_exceptions=True)

    async def _start(self, name: str) -> None:
        build = self.builds[name]
        run = self._launch(build)
        run.on_exit = functools.partial(self._exited, name, run)
        try:
            refused = await asyncio.to_thread(self._verify, build)
            if refused is not None:
                raise BuildRunError(refused)
            await run.start()
        except asyncio.CancelledError:
            self.rules.cancelled(name)
            raise
        except Exception as exc:  # no display, a game that will not start, a refused build
            retry = self.rules.start_failed(name, self._clock()) - self._clock()
            log.warning("standby run of %s not started (%s); next try in %.0f s", name, exc, retry)
            return
        finally:
            self._starting.pop(name, None)
            self._changed.set()
        self.rules.started(name, self._clock())
        self._waiting[name] = run
        log.info("standby run of %s waiting (game pid %s, started in %s ms)", name, run.pid,
                 run.start_ms)  # fmt: skip
        async with self._ready:
            self._ready.notify_all()

    async def _pause(self, name: str) -> None:
        run = self._waiting.get(name)
        if run is None:
            return
        stopped = await run.pause()
        if self._waiting.get(name) is not run:  # taken while we paused it: continue it again
            run.resume()
        log.info("standby run of %s paused (%d processes stopped)", name, stopped)

    async def _exited(self, name: str, run: BuildRun, how: GameExit) -> None:
        """A waiting game ended on its own (called from its watcher: the stop is a task)."""
        if self._waiting.get(name) is not run:
            return  # handed over, or discarded, meanwhile
        del self._waiting[name]
        self._on_exit(name, how)
        retry = self.rules.exited(name, self._clock()) - self._clock()
        log.warning("standby run of %s: %s; replaced in %.0f s", name, how.describe(), retry)
        self._stop_later(run)
        self._changed.set()

    def _stop_later(self, run: BuildRun) -> None:
        self._chore(run.stop())

    def _chore(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in a task the keeper awaits before it ends."""
        task = asyncio.ensure_future(work)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    @property
    def states(self) -> dict[str, SlotState]:
        return {name: slot.state for name, slot in self.rules.slots.items()}


def _launch(build: DeployedBuild, *, sandbox: SandboxHost | None) -> BuildRun:
    return BuildRun(build, sandbox=sandbox)
