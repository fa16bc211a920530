"""Debian's redis-server, really started, on a unix socket in a temporary directory."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REDIS_SERVER = "/usr/bin/redis-server"  # Debian's package redis-server (7.0 on bookworm)


@dataclass(frozen=True)
class RedisServer:
    socket_path: Path

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"


@contextmanager
def running_redis_server(startup_limit: float = 20.0) -> Iterator[RedisServer]:
    """Start redis-server with no TCP port and no persistence, wait until it answers PING,
    and on exit stop it (SIGTERM, then SIGKILL) and remove its directory."""
    directory = Path(tempfile.mkdtemp(prefix="gamecast-redis-"))
    server = RedisServer(directory / "redis.sock")
    log = directory / "redis.log"
    command = [
        REDIS_SERVER,
        "--port", "0",
        "--unixsocket", str(server.socket_path),
        "--unixsocketperm", "700",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(directory),
        "--logfile", str(log),
    ]  # fmt: skip
    process: subprocess.Popen[bytes] | None = None
    try:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        _wait_for_pong(process, server.socket_path, log, startup_limit)
        yield server
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def _wait_for_pong(process: subprocess.Popen[bytes], path: Path, log: Path, limit: float) -> None:
    give_up = time.monotonic() + limit
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}: {_tail(log)}")
        if _pings(path):
            return
        if time.monotonic() > give_up:
            raise RuntimeError(f"redis-server did not answer PING within {limit} s: {_tail(log)}")
        time.sleep(0.02)


def _pings(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(2)
            connection.connect(str(path))
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"
