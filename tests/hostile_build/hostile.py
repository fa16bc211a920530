"""A hostile game build, for tests/test_sandbox_hostile.py: `hostile.py ATTACK [ARGS...]`.

Each attack tries one thing a build must not do and prints one JSON line on stdout saying
what happened: {"attack", "ok" (it worked), "errno" (the error's name) or "error" (another
exception's type), "detail"}. Tests assert on what was observed, never on silence.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import socket
import struct
import sys
import time


def report(attack: str, ok: bool, **fields: object) -> None:
    """One JSON line; the supervisor keeps 400 characters of a line, so details are cut."""
    if isinstance(fields.get("detail"), str):
        fields["detail"] = str(fields["detail"])[:160]
    print(json.dumps({"attack": attack, "ok": ok, **fields}), flush=True)


def failed(attack: str, exc: BaseException, **fields: object) -> None:
    if isinstance(exc, OSError) and exc.errno is not None:
        report(attack, False, errno=errno.errorcode[exc.errno], detail=str(exc), **fields)
    else:
        report(attack, False, error=type(exc).__name__, detail=str(exc), **fields)


def read(path: str) -> None:
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        failed("read", exc, path=path)
        return
    report("read", True, path=path, detail=data.decode(errors="replace"))


def write(path: str) -> None:
    try:
        with open(path, "w") as file:
            file.write("pwned")
    except OSError as exc:
        failed("write", exc, path=path)
        return
    report("write", True, path=path)


def environment() -> None:
    """What the game's own environment and PID 1's (bwrap's) hold."""
    with open("/proc/1/environ", "rb") as file:
        pid1 = [v.decode(errors="replace") for v in file.read().split(b"\0") if v]
    report("environment", True, own=sorted(os.environ), pid1=pid1)


def x_connect(path: str, abstract: str, cookie: str) -> None:
    """The X11 connection setup on a display's socket (the file, or the abstract name when
    `abstract` is "abstract"), with the cookie from XAUTHORITY when `cookie` is "cookie".
    `path` "own": the socket of DISPLAY."""
    if path == "own":
        path = f"/tmp/.X11-unix/X{os.environ['DISPLAY'].lstrip(':')}"
    address = ("\0" + path) if abstract == "abstract" else path
    name, data = b"", b""
    if cookie == "cookie":
        with open(os.environ["XAUTHORITY"], "rb") as file:
            raw = file.read()
        # The first entry: family, address, number, name, data (each counted, big-endian).
        offset, fields = 2, []
        for _ in range(4):
            (length,) = struct.unpack_from(">H", raw, offset)
            fields.append(raw[offset + 2 : offset + 2 + length])
            offset += 2 + length
        name, data = fields[2], fields[3]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(5)
            client.connect(address)
            pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
            client.sendall(
                struct.pack("<cxHHHHxx", b"l", 11, 0, len(name), len(data)) + pad(name) + pad(data)
            )
            reply = client.recv(8)
            rest = client.recv(4096)
    except OSError as exc:
        failed("x_connect", exc, path=address)
        return
    if reply[0] == 1:
        report("x_connect", True, path=address)
    else:
        report(
            "x_connect",
            False,
            error="XConnectionRefused",
            path=address,
            detail=rest[: reply[1]].decode(errors="replace"),
        )


def tcp(host: str, port: str) -> None:
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as exc:
        failed("tcp", exc)
        return
    report("tcp", True)


def udp(host: str, port: str) -> None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.sendto(b"hello", (host, int(port)))
    except OSError as exc:
        failed("udp", exc)
        return
    report("udp", True)


def netlink() -> None:
    try:
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close()
    except OSError as exc:
        failed("netlink", exc)
        return
    report("netlink", True)


def fork_bomb(hold: str) -> None:
    """Fork without end (every child forks too); report how many forks worked before the
    first refusal, then hold on for `hold` seconds while the host is looked at."""
    forks = 0
    while True:
        try:
            pid = os.fork()
        except OSError as exc:
            failed("fork_bomb", exc, forks=forks)
            break
        if pid == 0:
            while True:  # a child: fork forever too, never report
                try:
                    os.fork()
                except OSError:
                    time.sleep(0.05)
        forks += 1
    time.sleep(float(hold))


def allocate(gib: str) -> None:
    try:
        block = bytearray(int(gib) << 30)
    except MemoryError as exc:
        failed("allocate", exc)
        return
    report("allocate", True, detail=len(block))


def ptrace_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    ptrace_attach = 16
    if libc.ptrace(ptrace_attach, os.getppid(), None, None) == -1:
        failed("ptrace", OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno())))
        return
    report("ptrace", True)


def kill(pid: str) -> None:
    try:
        os.kill(int(pid), signal.SIGKILL)
    except OSError as exc:
        failed("kill", exc, pid=int(pid))
        return
    report("kill", True, pid=int(pid))


def kill_everyone() -> None:
    """kill(-1): every process this one may signal, except itself."""
    try:
        os.kill(-1, signal.SIGKILL)
    except OSError as exc:
        failed("kill_everyone", exc)
        return
    report("kill_everyone", True)


def daemon(token: str) -> None:
    """Double fork and setsid, then become a long sleeper named by `token`, which the test
    looks for among the host's processes once the session is over."""
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", token])
        os._exit(0)
    report("daemon", True, token=token)
    time.sleep(1.0)  # the session ends when the test says, after it saw the daemon


def play(seconds: str) -> None:
    """A harmless game: hold on for `seconds` (the victim of the other session)."""
    report("play", True)
    time.sleep(float(seconds))


ATTACKS = {
    "read": read, "write": write, "environment": environment, "x_connect": x_connect,
    "tcp": tcp, "udp": udp, "netlink": netlink, "fork_bomb": fork_bomb, "allocate": allocate,
    "ptrace_parent": ptrace_parent, "kill": kill, "kill_everyone": kill_everyone,
    "daemon": daemon, "play": play,
}  # fmt: skip

if __name__ == "__main__":
    ATTACKS[sys.argv[1]](*sys.argv[2:])
