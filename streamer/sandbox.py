"""A build session's sandbox, as a command line: what bubblewrap is told, decided in one place.

Builds are untrusted code (README, "Game builds"). Each session's game runs as

    [sh: join the session's cgroups] prlimit LIMITS -- env -i bwrap OPTIONS -- ENTRY...

and this module only *describes* that: from what the host has (`HostRuntime`: the interpreter
and libraries a build's entry needs, which of /bin, /lib... are links into /usr) and what the
session needs (`SessionSandbox`: the build folder, its display's socket and cookie, its device
binds, its limits) it returns the argv, so every flag is unit-tested without running anything.
streamer/sandbox_host.py probes bwrap, builds the seccomp filter, creates the cgroups and runs it.

What the game gets (bubblewrap(1)): every namespace new (`--unshare-all`: user, PID, IPC, UTS,
network, cgroup; never `--share-net`, so no network at all, not even the host's loopback or
Xvfb's abstract sockets), `--die-with-parent`, `--new-session` (no TIOCSTI into our terminal),
`--cap-drop ALL`, uid/gid `SANDBOX_ID` inside; /usr and the runtime read-only, the build
read-only at `BUILD_MOUNT`, a private tmpfs /tmp and HOME, its own /proc and a minimal /dev,
only its own X socket and its Xauthority file, the seccomp filter on `--seccomp FD`, and an
environment of only `game_environment`. `env -i` before bwrap: bwrap is PID 1 of the sandbox,
and its /proc/1/environ is readable inside.
"""

from __future__ import annotations

import errno
import signal
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from streamer.errors import StreamerError

SANDBOX_ID = 1000  # the game's uid and gid inside: not root, even in its own namespace
BUILD_MOUNT = Path("/build")
GAME_HOME = Path("/home/game")
XAUTHORITY_MOUNT = Path("/run/gamecast/Xauthority")
X11_SOCKETS = Path("/tmp/.X11-unix")
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
MIB = 1 << 20

# Syscalls the game is refused with EPERM (seccomp, default allow): ways out of the sandbox or
# into the kernel's rarely audited corners, and into other processes' memory.
DENIED_SYSCALLS: tuple[str, ...] = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsmount",
    "fsconfig", "fspick", "unshare", "setns",
    "keyctl", "add_key", "request_key",
    "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "syslog", "acct", "quotactl", "name_to_handle_at",
    "open_by_handle_at", "lookup_dcookie", "personality",
)  # fmt: skip
DENIED_ERRNO = errno.EPERM
# clone3 passes its flags in memory seccomp cannot read: answer ENOSYS and libc falls back to
# clone(2), whose namespace flags the filter can see and refuses.
ENOSYS_SYSCALLS: tuple[str, ...] = ("clone3",)
CLONE_NAMESPACE_FLAGS = 0x7E020000  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
AF_UNIX = 1  # socket(2): the one family allowed; any other is EPERM

# /dev entries a GPU build needs, by what exists on the host (NVIDIA's driver, DRM render nodes).
_NVIDIA_NAMES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")


class SandboxSpecError(StreamerError, ValueError):
    """A sandbox description that cannot be right (a relative path, an impossible limit)."""


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """What one session's game may use; the whole sandbox's, where a cgroup holds it.

    `memory_bytes`: the memory cgroup's limit (all its processes together);
    `address_space_bytes`: RLIMIT_AS per process (a huge allocation fails with ENOMEM at once
    rather than waiting for the OOM killer); `processes`: the pids cgroup's limit, or
    RLIMIT_NPROC without one (which the kernel does not enforce for uid 0 of the host);
    `open_files`: RLIMIT_NOFILE; `cpu_seconds`: RLIMIT_CPU per process, a runaway's cap, not a
    share; `cpu_cores`: the cpu cgroup's quota (CFS), where there is one.
    """

    memory_bytes: int = 1024 * MIB
    address_space_bytes: int = 4096 * MIB
    processes: int = 64
    open_files: int = 256
    cpu_seconds: int = 6 * 3600
    cpu_cores: int = 1

    def __post_init__(self) -> None:
        for name in ("memory_bytes", "address_space_bytes", "processes", "open_files",
                     "cpu_seconds", "cpu_cores"):  # fmt: skip
            if getattr(self, name) <= 0:
                raise SandboxSpecError(f"sandbox limit {name} must be positive")

    @classmethod
    def for_needs(cls, ram_mib: int, cpu_cores: int) -> SandboxLimits:
        """Limits for a manifest's `requires`: its RAM (at least 512 MiB: an interpreter and
        SDL weigh that much before the game does anything), twice that plus 2 GiB of address
        space (libraries and thread stacks reserve more than they use), its cores."""
        memory = max(ram_mib, 512) * MIB
        return cls(memory, 2 * memory + 2048 * MIB, cpu_cores=cpu_cores)


@dataclass(frozen=True, slots=True)
class HostRuntime:
    """What of the host a game's entry needs, bound read-only at the same paths.

    `read_only`: /usr, the interpreter's prefixes, the few files of /etc; `links`: (path,
    target) for a merged /usr (Debian: /bin -> usr/bin).
    """

    read_only: tuple[Path, ...]
    links: tuple[tuple[Path, str], ...] = ()

    def __post_init__(self) -> None:
        for path in (*self.read_only, *(link for link, _ in self.links)):
            if not path.is_absolute():
                raise SandboxSpecError(f"a host path to bind must be absolute: {path}")


def python_runtime(prefix: str, base_prefix: str, executable: str) -> tuple[Path, ...]:
    """The folders a `python3` entry needs, as sys reports them: the venv (its site-packages
    hold pygame), the installation it was made from, and the folder of the real executable.
    Those under /usr are covered by /usr already."""
    folders = [Path(prefix), Path(base_prefix), Path(executable).parent]
    kept: list[Path] = []
    for folder in folders:
        if folder == Path("/usr") or folder.is_relative_to("/usr"):
            continue
        if not any(folder.is_relative_to(other) for other in kept):
            kept = [k for k in kept if not k.is_relative_to(folder)] + [folder]
    return tuple(kept)


def gpu_device_binds(dev_names: Iterable[str], dri_names: Iterable[str] = ()) -> tuple[Path, ...]:
    """The /dev paths to bind into a GPU build's sandbox, from a listing of /dev (and of
    /dev/dri): every NVIDIA GPU (`nvidia0`, ...), its control, UVM and modeset devices, and the
    DRM render nodes (`renderD128`, ...; not the card nodes, which can set display modes)."""
    names = set(dev_names)
    gpus = sorted((n for n in names if n.startswith("nvidia") and n[6:].isdigit()),
                  key=lambda n: int(n[6:]))  # fmt: skip
    binds = [Path("/dev") / n for n in (*gpus, *(n for n in _NVIDIA_NAMES if n in names))]
    if "dri" in names:
        render = sorted(n for n in dri_names if n.startswith("renderD") and n[7:].isdigit())
        binds += [Path("/dev/dri") / n for n in render]
    return tuple(binds)


@dataclass(frozen=True, slots=True)
class SessionSandbox:
    """One session's sandbox: the entry's argv (as the manifest says it, `python3` already
    resolved to a host path), the build folder, display number N with its socket, the
    display's Xauthority file, GPU device binds, the seccomp program's descriptor (None: no
    filter, only for tests of the argv), limits, and the cgroup folders to join (empty: the
    limits are rlimits only)."""

    argv: tuple[str, ...]
    build_dir: Path
    display: int
    xauthority: Path
    seccomp_fd: int | None
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    devices: tuple[Path, ...] = ()
    cgroups: tuple[tuple[str, Path], ...] = ()  # (controller, folder), as cgroup_plan says
    x11_sockets: Path = X11_SOCKETS

    def __post_init__(self) -> None:
        if not self.argv:
            raise SandboxSpecError("no program to run in the sandbox: argv is empty")
        folders = (folder for _, folder in self.cgroups)
        for path in (self.build_dir, self.xauthority, *self.devices, *folders):
            if not path.is_absolute():
                raise SandboxSpecError(f"a sandbox path must be absolute: {path}")
        if self.display < 0:
            raise SandboxSpecError(f"no such X display: :{self.display}")

    @property
    def x_socket(self) -> Path:
        return self.x11_sockets / f"X{self.display}"


def game_environment(session: SessionSandbox) -> dict[str, str]:
    """All the game sees of an environment: its display and cookie, a home, a temp folder."""
    return {
        "DISPLAY": f":{session.display}",
        "XAUTHORITY": str(XAUTHORITY_MOUNT),
        "HOME": str(GAME_HOME),
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PATH": SANDBOX_PATH,
        "SDL_VIDEODRIVER": "x11",
        "SDL_AUDIODRIVER": "dummy",  # no audio server per session yet
    }


def bwrap_argv(
    host: HostRuntime, session: SessionSandbox, bwrap: str = "/usr/bin/bwrap"
) -> list[str]:
    """`env -i bwrap ... -- ENTRY`: the sandbox for `session`, without limits or cgroups."""
    args = ["/usr/bin/env", "-i", bwrap, "--unshare-all", "--die-with-parent", "--new-session",
            "--cap-drop", "ALL", "--uid", str(SANDBOX_ID), "--gid", str(SANDBOX_ID),
            "--hostname", "game"]  # fmt: skip
    # The private folders first, the runtime over them: gamecast may itself be installed under
    # /tmp or /run (a CI checkout, a venv there), and a tmpfs mounted later would hide it.
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run",
             "--tmpfs", str(GAME_HOME)]  # fmt: skip
    for path in host.read_only:
        args += ["--ro-bind", str(path), str(path)]
    for link, target in host.links:
        args += ["--symlink", target, str(link)]
    args += ["--dir", str(X11_SOCKETS),
             "--ro-bind", str(session.x_socket), str(X11_SOCKETS / f"X{session.display}"),
             "--ro-bind", str(session.xauthority), str(XAUTHORITY_MOUNT),
             "--ro-bind", str(session.build_dir), str(BUILD_MOUNT),
             "--chdir", str(BUILD_MOUNT)]  # fmt: skip
    for device in session.devices:
        args += ["--dev-bind", str(device), str(device)]
    args += ["--clearenv"]
    for name, value in game_environment(session).items():
        args += ["--setenv", name, value]
    if session.seccomp_fd is not None:
        args += ["--seccomp", str(session.seccomp_fd)]
    return [*args, "--", *session.argv]


def prlimit_argv(limits: SandboxLimits, *, with_nproc: bool) -> list[str]:
    """`prlimit ... --` setting the per-process limits (soft = hard) on what it runs."""
    args = ["/usr/bin/prlimit", f"--as={limits.address_space_bytes}",
            f"--nofile={limits.open_files}", f"--cpu={limits.cpu_seconds}", "--core=0"]  # fmt: skip
    if with_nproc:
        args.append(f"--nproc={limits.processes}")
    return [*args, "--"]


def join_cgroups_argv(cgroups: Sequence[Path]) -> list[str]:
    """A shell that moves itself into each cgroup (`cgroup.procs`) and then execs the rest,
    so bwrap and all it starts are counted from their first instruction."""
    if not cgroups:
        return []
    script = 'for g in "$@"; do [ "$g" = -- ] && break; echo $$ > "$g/cgroup.procs" || exit 125;' \
        ' shift; done; shift; exec "$@"'  # fmt: skip
    return ["/bin/sh", "-c", script, "sh", *(str(c) for c in cgroups), "--"]


def sandbox_command(
    host: HostRuntime, session: SessionSandbox, bwrap: str = "/usr/bin/bwrap"
) -> list[str]:
    """The whole command: cgroups joined, rlimits set (RLIMIT_NPROC where no pids cgroup
    holds the processes), then the sandbox."""
    with_nproc = "pids" not in {controller for controller, _ in session.cgroups}
    return [
        *join_cgroups_argv([folder for _, folder in session.cgroups]),
        *prlimit_argv(session.limits, with_nproc=with_nproc),
        *bwrap_argv(host, session, bwrap),
    ]


def exit_status(bwrap_returncode: int) -> int:
    """The game's exit as `subprocess` reports one: bwrap exits 128 + N when its child was
    killed by signal N (bwrap.c, monitor_child), which becomes -N again. A game that itself
    exits with 129-159 reads as a signal too: bwrap says nothing more."""
    if 128 < bwrap_returncode < 128 + 32:
        return -(bwrap_returncode - 128)
    return bwrap_returncode


# Where a session's cgroup v1 records that its limit was hit: the file and the counter in it
# (memory: each OOM kill, kernel >= 4.13; pids: each fork refused at pids.max).
LIMIT_COUNTERS: dict[str, tuple[str, str]] = {
    "memory": ("memory.oom_control", "oom_kill"),
    "pids": ("pids.events", "max"),
}


def counter(text: str, name: str) -> int:
    """The value of `name` in a cgroup file of "name value" lines (0 where it is absent)."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name and value.strip().isdigit():
            return int(value)
    return 0


def limit_of(signal_number: int | None, reached: Collection[str]) -> str:
    """Which limit ended a game that ended on its own (p.SANDBOX_LIMITS' names), or "" when
    none can be told: `signal_number` as GameExit.signal, `reached` the controllers whose
    cgroup recorded a hit (LIMIT_COUNTERS). A SIGKILL the memory cgroup's OOM killer counted is
    memory; any end after the pids cgroup refused a fork is processes (the game died of it);
    SIGXCPU is RLIMIT_CPU. Not told apart: RLIMIT_CPU sends SIGKILL where soft = hard (as
    prlimit_argv sets it), and RLIMIT_AS makes an allocation fail, which the game may survive
    or die of like any other error: both read as crashes, with the exit in their detail."""
    if "memory" in reached and signal_number == signal.SIGKILL:
        return "memory"
    if "pids" in reached:
        return "processes"
    if signal_number == signal.SIGXCPU:
        return "cpu_time"
    return ""


def cgroup_plan(
    writable: Mapping[str, Path | None], session_name: str
) -> tuple[tuple[str, Path], ...]:
    """(controller, folder to create) for each controller whose parent folder is writable:
    `writable` maps "pids", "memory", "cpu" to the folder under which this agent may create
    cgroups (None: not available here)."""
    plan = []
    for controller in ("pids", "memory", "cpu"):
        parent = writable.get(controller)
        if parent is not None:
            plan.append((controller, parent / session_name))
    return tuple(plan)


def cgroup_settings(controller: str, limits: SandboxLimits) -> dict[str, str]:
    """The files to write in a session's cgroup v1 folder for `controller`."""
    if controller == "pids":
        return {"pids.max": str(limits.processes)}
    if controller == "memory":
        return {"memory.limit_in_bytes": str(limits.memory_bytes), "memory.swappiness": "0"}
    if controller == "cpu":
        period = 100_000
        return {"cpu.cfs_period_us": str(period),
                "cpu.cfs_quota_us": str(period * limits.cpu_cores)}  # fmt: skip
    raise SandboxSpecError(f"no such cgroup controller: {controller}")
