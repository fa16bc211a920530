"""The sandbox's seccomp program, compiled by libseccomp (PyPI `pyseccomp`, ctypes bindings).

The only module that imports pyseccomp. The rules are data in streamer/sandbox.py; this turns
them into the classic-BPF program bubblewrap installs with `--seccomp FD` just before it execs
the game: default allow; `DENIED_SYSCALLS` answer EPERM; clone3 answers ENOSYS (libc then
uses clone, whose flags the filter reads) and clone with a namespace flag EPERM; socket(2)
of any family but AF_UNIX answers EPERM. Syscalls of another architecture (32-bit int 0x80 on
x86-64) are not ours to allow: libseccomp's default for a foreign architecture kills them.
"""

from __future__ import annotations

import functools
import os

import pyseccomp as seccomp

from streamer.errors import StreamerError
from streamer.sandbox import (
    AF_UNIX,
    CLONE_NAMESPACE_FLAGS,
    DENIED_ERRNO,
    DENIED_SYSCALLS,
    ENOSYS_SYSCALLS,
)


class SeccompError(StreamerError, RuntimeError):
    """libseccomp is missing or refused the filter; the message says which rule."""


@functools.cache
def seccomp_program() -> bytes:
    """The compiled filter (classic BPF, native architecture), built once per process."""
    try:
        rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    except Exception as exc:  # ctypes: libseccomp.so.2 missing or too old
        raise SeccompError(f"cannot use libseccomp: {exc}") from exc
    for name in DENIED_SYSCALLS:
        _add(rules, seccomp.ERRNO(DENIED_ERRNO), name)
    for name in ENOSYS_SYSCALLS:
        _add(rules, seccomp.ERRNO(38), name)  # ENOSYS
    _add(rules, seccomp.ERRNO(DENIED_ERRNO), "socket", seccomp.Arg(0, seccomp.NE, AF_UNIX))
    flag = 1
    while flag <= CLONE_NAMESPACE_FLAGS:
        if CLONE_NAMESPACE_FLAGS & flag:  # one rule per flag: any of them set is refused
            clone_flag = seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag)
            _add(rules, seccomp.ERRNO(DENIED_ERRNO), "clone", clone_flag)
        flag <<= 1
    try:
        with os.fdopen(os.memfd_create("gamecast-seccomp-export"), "w+b") as sink:
            rules.export_bpf(sink)
            sink.seek(0)
            return sink.read()
    except Exception as exc:
        raise SeccompError(f"cannot export the seccomp program: {exc}") from exc


def _add(rules: seccomp.SyscallFilter, action: int, name: str, *args: seccomp.Arg) -> None:
    try:
        rules.add_rule(action, name, *args)
    except Exception as exc:  # a syscall this libseccomp does not know
        raise SeccompError(f"seccomp rule for {name} refused: {exc}") from exc


def program_descriptor(program: bytes) -> int:
    """A readable descriptor holding `program` from its start, for `bwrap --seccomp FD`;
    the caller passes it to bwrap and closes it. A memfd: nothing on disk to swap."""
    fd = os.memfd_create("gamecast-seccomp", os.MFD_CLOEXEC)
    try:
        os.write(fd, program)
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return fd
