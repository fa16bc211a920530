"""streamer/sandbox.py and streamer/xauthority.py: the sandbox's command line and the cookie
file, decided without running anything (tests/test_sandbox_hostile.py runs them for real)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from streamer.sandbox import (
    DENIED_SYSCALLS,
    HostRuntime,
    SandboxLimits,
    SandboxSpecError,
    SessionSandbox,
    bwrap_argv,
    cgroup_plan,
    cgroup_settings,
    exit_status,
    gpu_device_binds,
    join_cgroups_argv,
    python_runtime,
    sandbox_command,
)
from streamer.xauthority import FAMILY_LOCAL, FAMILY_WILD, cookie_file, entries, entry

HOST = HostRuntime(
    (Path("/usr"), Path("/opt/venv"), Path("/etc/ld.so.cache")), ((Path("/bin"), "usr/bin"),)
)
COOKIE = bytes(range(16))


def spec(**changes: object) -> SessionSandbox:
    fields: dict[str, object] = {
        "argv": ("/opt/venv/bin/python3", "game.py"),
        "build_dir": Path("/srv/builds/arcade"),
        "display": 7,
        "xauthority": Path("/tmp/gamecast-display-x/Xauthority"),
        "seccomp_fd": 5,
    }
    return SessionSandbox(**(fields | changes))  # type: ignore[arg-type]


def pairs(argv: list[str], flag: str, width: int = 2) -> list[tuple[str, ...]]:
    return [tuple(argv[i + 1 : i + 1 + width]) for i, a in enumerate(argv) if a == flag]


def test_bwrap_runs_after_env_i_with_every_namespace_and_no_capability() -> None:
    argv = bwrap_argv(HOST, spec())
    assert argv[:3] == ["/usr/bin/env", "-i", "/usr/bin/bwrap"]
    for flag in ("--unshare-all", "--die-with-parent", "--new-session", "--clearenv"):
        assert flag in argv
    assert "--share-net" not in argv
    assert pairs(argv, "--cap-drop", 1) == [("ALL",)]
    assert pairs(argv, "--uid", 1) == pairs(argv, "--gid", 1) == [("1000",)]
    assert pairs(argv, "--seccomp", 1) == [("5",)]
    assert argv[argv.index("--") + 1 :] == ["/opt/venv/bin/python3", "game.py"]


def test_only_the_runtime_the_build_its_display_and_cookie_are_bound() -> None:
    argv = bwrap_argv(HOST, spec())
    assert pairs(argv, "--ro-bind") == [
        ("/usr", "/usr"), ("/opt/venv", "/opt/venv"), ("/etc/ld.so.cache", "/etc/ld.so.cache"),
        ("/tmp/.X11-unix/X7", "/tmp/.X11-unix/X7"),
        ("/tmp/gamecast-display-x/Xauthority", "/run/gamecast/Xauthority"),
        ("/srv/builds/arcade", "/build"),
    ]  # fmt: skip
    assert "--bind" not in argv and "--dev-bind" not in argv  # nothing writable of the host
    assert pairs(argv, "--tmpfs", 1) == [("/tmp",), ("/run",), ("/home/game",)]
    assert pairs(argv, "--symlink") == [("usr/bin", "/bin")]
    assert pairs(argv, "--chdir", 1) == [("/build",)]
    assert dict(pairs(argv, "--setenv")) == {
        "DISPLAY": ":7", "XAUTHORITY": "/run/gamecast/Xauthority", "HOME": "/home/game",
        "TMPDIR": "/tmp", "LANG": "C.UTF-8", "PATH": "/usr/local/bin:/usr/bin:/bin",
        "SDL_VIDEODRIVER": "x11", "SDL_AUDIODRIVER": "dummy",
    }  # fmt: skip


def test_gpu_devices_are_bound_from_what_dev_lists() -> None:
    listing = ["null", "nvidia1", "nvidia0", "nvidia10", "nvidiactl", "nvidia-uvm",
               "nvidia-uvm-tools", "nvidia-caps", "dri", "tty0"]  # fmt: skip
    binds = gpu_device_binds(listing, ["card0", "renderD129", "renderD128", "by-path"])
    assert [str(b) for b in binds] == [
        "/dev/nvidia0", "/dev/nvidia1", "/dev/nvidia10", "/dev/nvidiactl", "/dev/nvidia-uvm",
        "/dev/nvidia-uvm-tools", "/dev/dri/renderD128", "/dev/dri/renderD129",
    ]  # fmt: skip
    assert gpu_device_binds(["null", "zero", "tty"]) == ()  # this host
    argv = bwrap_argv(HOST, spec(devices=binds[:1]))
    assert pairs(argv, "--dev-bind") == [("/dev/nvidia0", "/dev/nvidia0")]


def test_limits_follow_the_manifest_and_nproc_only_without_a_pids_cgroup() -> None:
    limits = SandboxLimits.for_needs(ram_mib=256, cpu_cores=2)
    assert (limits.memory_bytes, limits.address_space_bytes) == (512 << 20, 3072 << 20)
    assert SandboxLimits.for_needs(4096, 1).memory_bytes == 4096 << 20
    bare = sandbox_command(HOST, spec(limits=limits))
    assert bare[: bare.index("--") + 1] == [
        "/usr/bin/prlimit", f"--as={3072 << 20}", "--nofile=256", "--cpu=21600", "--core=0",
        "--nproc=64", "--",
    ]  # fmt: skip
    groups = (("pids", Path("/cg/pids/s")), ("memory", Path("/cg/memory/s")))
    held = sandbox_command(HOST, spec(limits=limits, cgroups=groups))
    assert held[:4] == ["/bin/sh", "-c", held[2], "sh"]
    assert held[4:7] == ["/cg/pids/s", "/cg/memory/s", "--"]
    assert held[7] == "/usr/bin/prlimit" and not any(a.startswith("--nproc") for a in held)
    assert join_cgroups_argv([]) == []
    with pytest.raises(SandboxSpecError):
        SandboxLimits(processes=0)


def test_cgroups_are_planned_where_writable_and_set_from_the_limits() -> None:
    plan = cgroup_plan({"pids": Path("/cg/pids/g"), "memory": None, "cpu": Path("/cg/cpu/g")}, "s")
    assert plan == (("pids", Path("/cg/pids/g/s")), ("cpu", Path("/cg/cpu/g/s")))
    limits = SandboxLimits(memory_bytes=1 << 30, processes=32, cpu_cores=2)
    assert cgroup_settings("pids", limits) == {"pids.max": "32"}
    assert cgroup_settings("memory", limits)["memory.limit_in_bytes"] == str(1 << 30)
    assert cgroup_settings("cpu", limits) == {"cpu.cfs_period_us": "100000",
                                              "cpu.cfs_quota_us": "200000"}  # fmt: skip
    with pytest.raises(SandboxSpecError):
        cgroup_settings("blkio", limits)


def test_the_venv_and_its_base_are_bound_once_each() -> None:
    assert python_runtime("/work/.venv", "/root/.pyenv/3.11", "/work/.venv/bin/python3") == (
        Path("/work/.venv"), Path("/root/.pyenv/3.11"),
    )  # fmt: skip
    assert python_runtime("/usr", "/usr", "/usr/bin/python3") == ()


def test_bwraps_signal_exit_reads_as_a_signal() -> None:
    assert [exit_status(c) for c in (0, 1, 137, 139, 128, 200)] == [0, 1, -9, -11, 128, 200]


def test_a_relative_path_or_an_empty_argv_is_refused() -> None:
    with pytest.raises(SandboxSpecError, match="absolute: build"):
        spec(build_dir=Path("build"))
    with pytest.raises(SandboxSpecError, match="argv is empty"):
        spec(argv=())


def test_the_filter_denies_at_least_what_the_issue_names() -> None:
    named = {"ptrace", "mount", "umount2", "pivot_root", "keyctl", "add_key", "request_key",
             "bpf", "io_uring_setup", "io_uring_enter", "io_uring_register", "unshare", "setns",
             "perf_event_open", "kexec_load", "init_module", "finit_module",
             "process_vm_readv", "process_vm_writev"}  # fmt: skip
    assert named <= set(DENIED_SYSCALLS)


def test_the_seccomp_program_compiles() -> None:
    from streamer.seccomp_filter import seccomp_program  # noqa: PLC0415  (needs libseccomp)

    program = seccomp_program()
    assert len(program) % 8 == 0 and len(program) > 8 * len(DENIED_SYSCALLS)  # sock_filter


def test_a_cookie_file_round_trips_with_entries_for_libxau_and_python_xlib() -> None:
    data = cookie_file({"3": COOKIE}, "host")
    assert entries(data) == [
        (FAMILY_WILD, b"", "3", b"MIT-MAGIC-COOKIE-1", COOKIE),
        (FAMILY_LOCAL, b"host", "3", b"MIT-MAGIC-COOKIE-1", COOKIE),
    ]
    assert entry(FAMILY_WILD, b"", "", COOKIE)[:6] == b"\xff\xff\x00\x00\x00\x00"
    with pytest.raises(ValueError, match="truncated"):
        entries(data[:-1])
    with pytest.raises(ValueError, match="16 bytes"):
        entry(FAMILY_WILD, b"", "", b"short")


async def test_an_agent_where_bwrap_fails_refuses_builds_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from streamer import agent as agent_module  # noqa: PLC0415
    from streamer.agent import AgentConfig, ContainerAgent  # noqa: PLC0415
    from streamer.sandbox_host import SandboxUnavailable  # noqa: PLC0415

    async def broken() -> None:
        raise SandboxUnavailable("bwrap exited with code 1: No permissions to create new namespace")

    monkeypatch.setattr(agent_module, "probe_sandbox", broken)
    safe = ContainerAgent(AgentConfig("ws://127.0.0.1:1/ws/container", "c1", builds_dir=Path("/x")))
    await safe._probe_sandbox()
    assert safe.sandbox is None
    assert safe.sandbox_refusal == (
        "builds run only in a sandbox and none works here: "
        "bwrap exited with code 1: No permissions to create new namespace"
    )
    assert "builds run only in a sandbox" in caplog.text
    unsafe_config = AgentConfig("ws://127.0.0.1:1/ws/container", "c2", unsafe_no_sandbox=True)
    unsafe = ContainerAgent(unsafe_config)
    await unsafe._probe_sandbox()
    assert unsafe.sandbox is None
    assert "builds run UNSANDBOXED (--unsafe-no-sandbox)" in caplog.text


def test_a_runtime_installed_under_tmp_is_bound_over_the_private_tmp_not_hidden_by_it() -> None:
    """A CI checkout or a venv may live under /tmp: its bind must come after the tmpfs."""
    host = dataclasses.replace(HOST, read_only=(Path("/usr"), Path("/tmp/ci/.venv")))
    argv = bwrap_argv(host, spec())
    private_tmp = argv.index("--tmpfs")
    assert argv[private_tmp + 1] == "/tmp"
    venv = argv.index("/tmp/ci/.venv")
    assert argv[venv - 1] == "--ro-bind" and venv > private_tmp
