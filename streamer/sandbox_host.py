"""Running a build's game in its sandbox: the probe at start, and each session's cgroups.

`probe_sandbox()` runs once when a container that hosts builds starts: it finds bwrap, the
runtime a `python3` entry needs, the cgroup v1 folders this process may create groups under
(pids, memory, cpu) and the seccomp program, then runs `bwrap ... /usr/bin/true` with all of
it; a host where that fails gets `SandboxUnavailable` with bwrap's own words, and the agent
refuses build sessions unless its operator said `--unsafe-no-sandbox`. Which limits a cgroup
holds and which fall back to rlimits is logged, with the reason.

`GameSandbox` is one session's: an async context manager that creates the session's cgroups
and hands its seccomp program over a memfd, gives the command (streamer/sandbox.py) and the
descriptors to pass, and on leaving kills whatever is still in its cgroups and removes them.
The PID namespace already ends every process when the game's bwrap goes (its PID 1 dies,
`--die-with-parent`); the cgroups make the sweep checkable and hold the fork bomb.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from streamer.errors import StreamerError
from streamer.sandbox import (
    LIMIT_COUNTERS,
    HostRuntime,
    SandboxLimits,
    SessionSandbox,
    cgroup_plan,
    cgroup_settings,
    counter,
    gpu_device_binds,
    python_runtime,
    sandbox_command,
)
from streamer.seccomp_filter import SeccompError, program_descriptor, seccomp_program
from streamer.started import Started

log = logging.getLogger(__name__)

BWRAP_NAMES = ("/usr/bin/bwrap", "/bin/bwrap")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_CONTROLLERS = ("pids", "memory", "cpu")
# Files of /etc a game may need to read: the loader's cache, fonts, time zone; nothing else.
ETC_FILES = ("/etc/ld.so.cache", "/etc/fonts", "/etc/localtime", "/etc/alternatives")
PROBE_LIMIT_S = 10.0
SWEEP_LIMIT_S = 5.0
_SWEEP_POLL_S = 0.02


class SandboxUnavailable(StreamerError, RuntimeError):
    """bwrap is missing or does not work on this host; the message says what it answered."""


@dataclass(frozen=True)
class SandboxHost:
    """What this host gives every session's sandbox, found once by `probe_sandbox`."""

    bwrap: str
    runtime: HostRuntime
    cgroup_parents: dict[str, Path | None] = field(default_factory=dict)
    devices: tuple[Path, ...] = ()

    def describe(self) -> str:
        """Which limits cgroups hold here and which are rlimits, for the log."""
        held = [c for c in CGROUP_CONTROLLERS if self.cgroup_parents.get(c) is not None]
        nproc = (
            "processes by the pids cgroup"
            if "pids" in held
            else "processes by RLIMIT_NPROC (not enforced when the agent runs as root)"
        )
        groups = ", ".join(f"{c} under {self.cgroup_parents[c]}" for c in held) or "none"
        return (
            f"bwrap {self.bwrap}; cgroups: {groups}; {nproc}; memory by "
            + ("the memory cgroup and " if "memory" in held else "")
            + "RLIMIT_AS; open files RLIMIT_NOFILE; CPU by "
            + ("the cpu cgroup's quota and " if "cpu" in held else "")
            + f"RLIMIT_CPU; GPU devices: {', '.join(map(str, self.devices)) or 'none'}"
        )


def host_runtime() -> HostRuntime:
    """/usr, this interpreter's prefixes, a few files of /etc; links for a merged /usr."""
    read_only = [Path("/usr"), *python_runtime(sys.prefix, sys.base_prefix, sys.executable)]
    real = Path(os.path.realpath(sys.executable)).parent
    if not real.is_relative_to("/usr") and not any(real.is_relative_to(p) for p in read_only):
        read_only.append(real)
    read_only += [Path(f) for f in ETC_FILES if Path(f).exists()]
    links = []
    for name in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            links.append((path, os.readlink(path)))
        elif path.is_dir():
            read_only.append(path)
    return HostRuntime(tuple(read_only), tuple(links))


def cgroup_parents(
    root: Path = CGROUP_ROOT, own: Path = Path("/proc/self/cgroup")
) -> dict[str, Path | None]:
    """For each cgroup v1 controller, the folder under this process's own group in which it
    may create session groups (`.../gamecast-sessions`), or None where it may not."""
    mine: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in own.read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(","):
                mine[controller] = path
    parents: dict[str, Path | None] = {}
    for controller in CGROUP_CONTROLLERS:
        parents[controller] = None
        mount = root / controller
        if controller not in mine or not (mount / "cgroup.procs").exists():
            continue
        parent = mount / mine[controller].lstrip("/") / "gamecast-sessions"
        try:
            parent.mkdir(exist_ok=True)
        except OSError as exc:
            log.info("no %s cgroup for sessions: cannot create %s: %s", controller, parent, exc)
            continue
        parents[controller] = parent
    return parents


def host_devices(dev: Path = Path("/dev")) -> tuple[Path, ...]:
    """The GPU devices this host has for GPU builds (none on a host without a GPU)."""
    try:
        names = [p.name for p in dev.iterdir()]
        dri = [p.name for p in (dev / "dri").iterdir()] if (dev / "dri").is_dir() else []
    except OSError:
        return ()
    return gpu_device_binds(names, dri)


async def probe_sandbox() -> SandboxHost:
    """Find what a sandbox needs here and run one (`true`) with all of it."""
    bwrap = next((b for b in BWRAP_NAMES if os.access(b, os.X_OK)), None)
    if bwrap is None:
        raise SandboxUnavailable("bwrap is not installed (Debian: apt-get install bubblewrap)")
    try:
        seccomp_program()
    except SeccompError as exc:
        raise SandboxUnavailable(str(exc)) from exc
    host = SandboxHost(bwrap, host_runtime(), cgroup_parents(), host_devices())
    with contextlib.ExitStack() as cleanup:
        scratch = Path(cleanup.enter_context(_scratch_folder()))
        (scratch / "X0").touch()
        (scratch / "Xauthority").touch()
        async with GameSandbox(
            host, ("/usr/bin/true",), build_dir=scratch, display=0,
            xauthority=scratch / "Xauthority", session_name="probe", x11_sockets=scratch,
        ) as sandbox:  # fmt: skip
            process = await asyncio.create_subprocess_exec(
                *sandbox.command,
                env={},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=sandbox.pass_fds,
            )
            try:
                async with asyncio.timeout(PROBE_LIMIT_S):
                    _, stderr = await process.communicate()
            except TimeoutError:
                process.kill()
                await process.wait()
                raise SandboxUnavailable(
                    f"bwrap did not finish within {PROBE_LIMIT_S:g} s"
                ) from None
    if process.returncode != 0:
        said = stderr.decode(errors="replace").strip()[-500:] or "(nothing on stderr)"
        raise SandboxUnavailable(f"bwrap exited with code {process.returncode}: {said}")
    return host


@contextlib.contextmanager
def _scratch_folder() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="gamecast-sandbox-probe-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class GameSandbox(Started):
    """One session's sandbox around `argv`: its cgroups and seccomp descriptor while entered.

    `command` is what to run (with `env={}` and `pass_fds`); `build_dir`, display `display`
    and its `xauthority` file are bound in, and the host's GPU devices when `gpu`. Leaving
    kills what is left in its cgroups and removes them.
    """

    def __init__(
        self,
        host: SandboxHost,
        argv: Sequence[str],
        *,
        build_dir: Path,
        display: int,
        xauthority: Path,
        session_name: str,
        limits: SandboxLimits | None = None,
        gpu: bool = False,
        x11_sockets: Path | None = None,
    ) -> None:
        self.host = host
        self._spec = SessionSandbox(
            tuple(argv), build_dir.resolve(), display, xauthority, None,
            limits or SandboxLimits(), host.devices if gpu else (),
        )  # fmt: skip
        if x11_sockets is not None:
            self._spec = dataclasses.replace(self._spec, x11_sockets=x11_sockets)
        self._name = f"gamecast-{session_name}-{os.getpid()}"
        self._fd: int | None = None
        self._created: list[Path] = []

    @property
    def spec(self) -> SessionSandbox:
        return self._spec

    @property
    def command(self) -> list[str]:
        if self._fd is None:
            raise SandboxUnavailable("the sandbox is not started (use `async with`)")
        return sandbox_command(self.host.runtime, self._spec, self.host.bwrap)

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return () if self._fd is None else (self._fd,)

    @property
    def cgroups(self) -> tuple[Path, ...]:
        return tuple(self._created)

    def limits_reached(self) -> frozenset[str]:
        """The controllers whose limit this session's cgroups recorded a hit of (sandbox.py
        LIMIT_COUNTERS), while the sandbox is entered. Blocking: from a thread."""
        reached = set()
        for controller, folder in self._spec.cgroups:
            file, name = LIMIT_COUNTERS.get(controller, ("", ""))
            with contextlib.suppress(OSError):
                if file and counter((folder / file).read_text(), name) > 0:
                    reached.add(controller)
        return frozenset(reached)

    async def start(self) -> None:
        plan = cgroup_plan(self.host.cgroup_parents, self._name)
        joined = []
        for controller, folder in plan:
            try:
                await asyncio.to_thread(
                    _create_cgroup, folder, cgroup_settings(controller, self._spec.limits)
                )
            except OSError as exc:
                log.warning("session cgroup %s not created (%s): rlimits only for it", folder, exc)
                continue
            self._created.append(folder)
            joined.append((controller, folder))
        self._fd = program_descriptor(seccomp_program())
        self._spec = dataclasses.replace(self._spec, seccomp_fd=self._fd, cgroups=tuple(joined))

    async def stop(self) -> None:
        """Kill every process still in the session's cgroups, wait for them, remove them."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for folder in self._created:
            await asyncio.to_thread(_empty_and_remove, folder)
        self._created.clear()


def _create_cgroup(folder: Path, settings: dict[str, str]) -> None:
    folder.mkdir()
    try:
        for name, value in settings.items():
            (folder / name).write_text(value)
    except OSError:
        folder.rmdir()
        raise


def cgroup_members(folder: Path) -> list[int]:
    """The pids in a cgroup (v1 `cgroup.procs`); none once it is gone."""
    try:
        return [int(line) for line in (folder / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _empty_and_remove(folder: Path) -> None:
    """SIGKILL what is in `folder` until it is empty (a fork bomb refills it), then rmdir."""
    deadline = time.monotonic() + SWEEP_LIMIT_S
    while True:
        members = cgroup_members(folder)
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        try:
            folder.rmdir()  # EBUSY while a process (or a zombie not yet reaped) is in it
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                log.error("session cgroup %s not removed: %s; in it: %s", folder, exc, members)
                return
        time.sleep(_SWEEP_POLL_S)
