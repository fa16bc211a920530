"""A hostile build in the real sandbox: real bwrap, real Xvfb, each attack refused or held.

tests/hostile_build/hostile.py tries one attack per run and prints what it observed as JSON;
these tests assert that observation (the errno, the exception, the X server's refusal), and
that the other session's game, the container (this process) and the host are unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from builds.manifest import MANIFEST_NAME, parse_manifest
from streamer.game_process import GameProcess
from streamer.sandbox import BUILD_MOUNT, SandboxLimits, exit_status, game_environment, limit_of
from streamer.sandbox_host import GameSandbox, SandboxHost, cgroup_members, probe_sandbox
from streamer.xdisplay import XvfbDisplay, xvfb_unavailable_reason
from tests.conftest import eventually

HOSTILE = Path(__file__).resolve().parent / "hostile_build"
MANIFEST = parse_manifest((HOSTILE / MANIFEST_NAME).read_bytes())
LIMITS = SandboxLimits.for_needs(MANIFEST.requires.ram_mib, MANIFEST.requires.cpu_cores)

pytestmark = [
    pytest.mark.skipif(xvfb_unavailable_reason() is not None, reason="no Xvfb"),
    pytest.mark.skipif(
        shutil.which("bwrap") is None, reason="no bwrap (apt-get install bubblewrap)"
    ),
]


async def exists(path: str | Path) -> bool:
    return await asyncio.to_thread(Path(path).exists)


@pytest.fixture
async def host() -> SandboxHost:
    return await probe_sandbox()


class Session:
    """A sandboxed run of the hostile build on a display of its own."""

    def __init__(self, display: XvfbDisplay, jail: GameSandbox, game: GameProcess) -> None:
        self.display, self.jail, self.game = display, jail, game

    def reports(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.game.stdout.lines() if line.startswith("{")]


@contextlib.asynccontextmanager
async def session(host: SandboxHost, *args: str) -> AsyncIterator[Session]:
    async with XvfbDisplay(MANIFEST.width, MANIFEST.height) as display:
        jail = GameSandbox(
            host, [*MANIFEST.command(str(BUILD_MOUNT), sys.executable), *args], build_dir=HOSTILE,
            display=display.number, xauthority=display.xauthority, session_name="hostile",
            limits=LIMITS,
        )  # fmt: skip
        async with jail:
            game = GameProcess(jail.command, cwd=HOSTILE, display=display.name, env={},
                               pass_fds=jail.pass_fds, exit_status=exit_status)  # fmt: skip
            async with game:
                yield Session(display, jail, game)


async def attack(host: SandboxHost, *args: str) -> dict[str, Any]:
    """Run one attack to its end; what it reported."""
    async with session(host, *args) as run:
        ended = await asyncio.wait_for(run.game.wait(), 30)
        reports = run.reports()
    assert reports, f"the hostile build reported nothing: {ended.describe()}"
    return reports[-1]


def refused(report: dict[str, Any]) -> str:
    assert report["ok"] is False, report
    return str(report.get("errno") or report.get("error"))


@pytest.mark.parametrize("target", ["/etc/shadow", "own test file", "host key", "agent cmdline"])
async def test_the_hosts_files_and_the_agents_proc_are_not_there(
    host: SandboxHost, tmp_path: Path, target: str
) -> None:
    key = tmp_path / "host.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\nsecret\n")
    path = {
        "/etc/shadow": "/etc/shadow",
        "own test file": __file__,
        "host key": str(key),
        "agent cmdline": f"/proc/{os.getpid()}/cmdline",
    }[target]
    assert await exists(path)  # on the host it is
    assert refused(await attack(host, "read", path)) == "ENOENT"


async def test_the_game_sees_only_its_own_environment_and_bwrap_none(
    host: SandboxHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GAMECAST_HOST_KEY", "/secret/host.key")  # the agent's environment
    report = await attack(host, "environment")
    async with XvfbDisplay(320, 240) as display:  # what the game's environment is made of
        expected = set(game_environment(GameSandbox(
            host, ["x"], build_dir=HOSTILE, display=display.number,
            xauthority=display.xauthority, session_name="x",
        ).spec))  # fmt: skip
    assert set(report["own"]) - {"PWD", "LC_CTYPE"} == expected  # PWD, LC_CTYPE: Python's own
    assert report["pid1"] == []  # env -i before bwrap: its /proc/1/environ is empty
    assert "secret" not in json.dumps(report)


async def test_another_sessions_display_is_unreachable_and_its_own_needs_the_cookie(
    host: SandboxHost,
) -> None:
    async with session(host, "play", "60") as victim:
        await eventually(lambda: victim.reports() == [{"attack": "play", "ok": True}])
        other = f"/tmp/.X11-unix/X{victim.display.number}"
        by_path = await attack(host, "x_connect", other, "file", "cookie")
        by_name = await attack(host, "x_connect", other, "abstract", "cookie")
        without = await attack(host, "x_connect", "own", "file", "none")
        with_cookie = await attack(host, "x_connect", "own", "file", "cookie")
        # A client on the host that reaches the socket but has no cookie: refused too.
        plain = await asyncio.create_subprocess_exec(
            sys.executable, str(HOSTILE / "hostile.py"), "x_connect", other, "file", "none",
            stdout=subprocess.PIPE, env={"PATH": "/usr/bin"},
        )  # fmt: skip
        plain_out, _ = await plain.communicate()
        assert victim.game.running  # the other session's game is unaffected
    assert refused(by_path) == "ENOENT"  # only the session's own socket is bound in
    assert refused(by_name) == "ECONNREFUSED"  # the abstract socket is in the host's netns
    assert refused(without) == "XConnectionRefused"
    assert "Authorization required" in without["detail"]
    assert with_cookie["ok"] is True, with_cookie
    host_side = json.loads(plain_out)
    assert refused(host_side) == "XConnectionRefused"


async def test_no_network_at_all(host: SandboxHost) -> None:
    connected = asyncio.Event()
    server = await asyncio.start_server(lambda r, w: connected.set(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        tcp = await attack(host, "tcp", "127.0.0.1", str(port))
        udp = await attack(host, "udp", "192.0.2.1", "9")  # TEST-NET-1: never routed
        netlink = await attack(host, "netlink")
    assert refused(tcp) == "EPERM"  # seccomp: socket() of a family other than AF_UNIX
    assert refused(udp) == "EPERM"
    assert refused(netlink) == "EPERM"
    assert not connected.is_set()


async def test_a_fork_bomb_is_held_by_the_pids_cgroup_and_the_host_stays_responsive(
    host: SandboxHost,
) -> None:
    if host.cgroup_parents.get("pids") is None:
        pytest.skip("no writable pids cgroup here: RLIMIT_NPROC does not hold uid 0")
    async with session(host, "fork_bomb", "3") as bomb:
        await eventually(lambda: bomb.reports() != [], seconds=20)
        started = time.perf_counter()
        spawned = await asyncio.create_subprocess_exec("/bin/true")
        assert await spawned.wait() == 0
        spawn_s = time.perf_counter() - started
        pids_group = next(g for g in bomb.jail.cgroups if "pids" in g.parts)
        held = len(cgroup_members(pids_group))
        report = bomb.reports()[0]
        reached = await asyncio.to_thread(bomb.jail.limits_reached)  # what a report would name
    assert refused(report) == "EAGAIN"
    assert "pids" in reached and limit_of(None, reached) == "processes"
    assert report["forks"] < LIMITS.processes
    assert held <= LIMITS.processes
    assert spawn_s < 10.0  # generous: a host whose process table the bomb filled would hang
    assert not await exists(pids_group)  # emptied and removed with the session
    assert not [p for p in psutil.process_iter(["cmdline"])
                if "fork_bomb" in (p.info["cmdline"] or [])]  # fmt: skip


async def test_allocating_8_gib_fails_with_memory_error(host: SandboxHost) -> None:
    assert refused(await attack(host, "allocate", "8")) == "MemoryError"


@pytest.mark.parametrize("path", ["/build/pwned", "/usr/pwned"])
async def test_the_build_and_the_system_are_read_only(host: SandboxHost, path: str) -> None:
    assert refused(await attack(host, "write", path)) == "EROFS"
    assert not await exists(HOSTILE / "pwned")
    assert not await exists("/usr/pwned")


async def test_its_tmp_is_its_own(host: SandboxHost) -> None:
    name = f"/tmp/gamecast-hostile-{secrets.token_hex(4)}"
    assert (await attack(host, "write", name))["ok"] is True
    assert not await exists(name)


async def test_it_cannot_trace_its_parent(host: SandboxHost) -> None:
    assert refused(await attack(host, "ptrace_parent")) == "EPERM"


async def test_it_cannot_signal_the_agent_or_the_other_session(host: SandboxHost) -> None:
    async with session(host, "play", "60") as victim:
        await eventually(lambda: victim.reports() != [])
        agent = await attack(host, "kill", str(os.getpid()))
        victim_pid = victim.game.pid
        assert victim_pid is not None
        other = await attack(host, "kill", str(victim_pid))
        everyone = await attack(host, "kill_everyone")
        assert victim.game.running
    assert refused(agent) == "ESRCH"  # not in its PID namespace
    assert refused(other) == "ESRCH"
    assert refused(everyone) == "ESRCH"  # kill(-1): nobody it may signal but its own PID 1


async def test_a_detached_daemon_does_not_outlive_its_session(host: SandboxHost) -> None:
    token = f"gamecast-hostile-daemon-{secrets.token_hex(4)}"

    def daemons() -> list[psutil.Process]:
        return [p for p in psutil.process_iter(["cmdline"]) if token in (p.info["cmdline"] or [])]

    async with session(host, "daemon", token) as run:
        await eventually(lambda: daemons() != [])  # it did start, outside the game's group
        groups = list(run.jail.cgroups)
    assert groups
    assert not [g for g in groups if await exists(g)]
    assert daemons() == []
