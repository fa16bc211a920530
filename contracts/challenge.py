"""The registration challenge: work a host cannot skip, checked for a small part of its cost.

The work. From a 32-byte seed the verifier draws fresh for each challenge, A and B are n x n
matrices of integers in [-8, 7] (entry i of each is the top four bits of splitmix64 keyed by
the seed, so any row can be made alone). The host sets X = A and, `rounds` times,
X <- ((X @ B) >> 4) % 16 - 8: bits 4-7 of every exact sum, centred again.

* Exact on any hardware: every partial sum is an integer of magnitude at most 64 n <= 2^19,
  so float32 products (OpenBLAS, cuBLAS, TF32 or FP16 tensor cores accumulating in FP32) and
  int8 products accumulating in int32 all give the same bytes, in any summation order.
* No shortcut: X mod 16 alone would be linear over Z/16, so B^rounds (log2(rounds) products)
  would collapse the chain into one product; dropping the low bits breaks that, and every
  round costs a full n^3 product.
* Cheap to check: row i of the result depends on row i of A only, so the verifier recomputes
  a row with rounds x n^2 multiply-adds against the host's rounds x n^3 for all n rows.

The commitment. The host answers with the root of a Merkle tree (RFC 6962 hashing: leaves
SHA-256(0x00 || row), nodes SHA-256(0x01 || left || right)) over the result's rows packed two
values a byte. Only then does the verifier draw `reveal` rows from fresh entropy and ask for
them with their proofs: a host that computed a fraction f of the rows survives with chance
f^reveal (2^-16 for half of them, 16 rows). The rows must not be derived from the root
(Fiat-Shamir): the host knows the seed, so it could re-roll the rows it skipped until the
derived picks avoid them, f^-reveal cheap root recomputations.

The time bound, from the claimed hardware (a `DeviceClass`: `device_class` rates the
claims): work for `target_s` seconds at the class's rate, and a bound of NETWORK_ALLOWANCE_S +
SLACK x that time + ENTRY_OVERHEAD_S per matrix entry (generating, packing, hashing). An H100
claim thus asks for ~26 TFLOP within ~5.7 s: an honest H100 needs about 1 s, a 2-core CPU
over 2 minutes. What it proves is throughput, not the model: a GPU at least as fast as the
claimed one passes, which is what players need (the encoder is probed separately), and it
cannot tell a host that forwards the work elsewhere.

Pure except the arithmetic, which runs on the `xp` it is given: numpy, or CuPy on a GPU
(imported by the caller, never here).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from contracts import protocol
from contracts.errors import ContractError
from contracts.verdict import Finding

ArrayModule: TypeAlias = Any  # numpy, cupy, or anything with their API (tests count with one)
PackedRows: TypeAlias = npt.NDArray[np.uint8]

SIZES = (256, 512, 1024, 2048, 4096, 8192)  # n: powers of two, so the Merkle tree is perfect
MAX_ROUNDS = 64
MAX_REVEAL = 64
SEED_BYTES = 32
TARGET_S = 1.0  # registration: the work an honest host of the claimed class does in ~1 s
MIN_ROUNDS = 4  # the largest n that leaves this many rounds: see make_challenge
SLACK = 2.0
NETWORK_ALLOWANCE_S = 2.0  # the round trip, a busy event loop, a warm solver's dispatch
ENTRY_OVERHEAD_S = 25e-9  # per matrix entry: generate, pack and hash on a host CPU
_CHUNK_ENTRIES = 1 << 20  # generation works on this many entries at a time (8 MiB of uint64)

_GOLDEN, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


class ChallengeError(ContractError):
    """A challenge that cannot be made or solved as asked (a sender's mistake or a hostile
    size); the message names the field and its allowed range."""


@dataclass(frozen=True, slots=True)
class DeviceClass:
    """What a challenge is sized for (verifier/inspection.py derives it from the claims)."""

    name: str  # e.g. "H100 GPU", "8-core CPU"
    flops: float  # the exact float32 product rate expected of it, at least


@dataclass(frozen=True, slots=True)
class Challenge:
    seed: bytes  # fresh per challenge and secret until sent: nothing can be precomputed
    size: int  # n
    rounds: int
    reveal: int  # rows the verifier asks for after the commitment
    device: str  # the class the work and the bound were sized for
    time_bound_s: float

    def __post_init__(self) -> None:
        if len(self.seed) != SEED_BYTES:
            raise ChallengeError(f"a challenge seed has {SEED_BYTES} bytes, not {len(self.seed)}")
        if self.size not in SIZES:
            raise ChallengeError(f"challenge size {self.size} is not one of {list(SIZES)}")
        if not 1 <= self.rounds <= MAX_ROUNDS:
            raise ChallengeError(f"challenge rounds {self.rounds} are outside [1, {MAX_ROUNDS}]")
        if not 1 <= self.reveal <= min(MAX_REVEAL, self.size):
            raise ChallengeError(f"{self.reveal} revealed rows are outside [1, {MAX_REVEAL}]")
        if not self.time_bound_s > 0:
            raise ChallengeError(f"a time bound is positive, not {self.time_bound_s}")

    @property
    def work_flops(self) -> int:
        return 2 * self.size**3 * self.rounds


def make_challenge(
    seed: bytes, device: DeviceClass, target_s: float = TARGET_S, reveal: int = 16
) -> Challenge:
    """A challenge of about `target_s` seconds of `device`'s work, bounded as the module
    docstring says. The largest n that leaves MIN_ROUNDS rounds: a row check costs k / n of
    the work, so larger is cheaper for the verifier, until generating B (n^2 entries) would
    cost it more than the rows do."""
    if not target_s > 0:
        raise ChallengeError(f"a challenge's target time is positive, not {target_s}")
    wanted = device.flops * target_s
    size = next((n for n in reversed(SIZES) if 2 * n**3 * MIN_ROUNDS <= wanted), SIZES[0])
    rounds = min(MAX_ROUNDS, max(1, math.ceil(wanted / (2 * size**3))))
    compute_s = 2 * size**3 * rounds / device.flops
    bound = NETWORK_ALLOWANCE_S + SLACK * compute_s + ENTRY_OVERHEAD_S * size * size
    return Challenge(seed, size, rounds, reveal, device.name, round(bound, 3))


# The work, on any array module ------------------------------------------------------------------


def _key(seed: bytes, matrix: bytes) -> int:
    return int.from_bytes(hashlib.sha256(b"gamecast-challenge-v1 " + matrix + seed).digest()[:8])


def _rows(key: int, rows: Any, n: int, xp: ArrayModule) -> Any:
    """The given rows (a uint64 array) of the n x n matrix keyed by `key`, as float32."""
    u64 = xp.uint64
    z = rows[:, None] * u64(n) + xp.arange(n, dtype=u64)[None, :]
    z = z * u64(_GOLDEN) + u64(key)  # wraps modulo 2^64, like splitmix64's state
    z = (z ^ (z >> u64(30))) * u64(_MIX1)
    z = (z ^ (z >> u64(27))) * u64(_MIX2)
    return ((z ^ (z >> u64(31))) >> u64(60)).astype(xp.float32) - 8


def _matrix(key: int, n: int, xp: ArrayModule) -> Any:
    out = xp.empty((n, n), dtype=xp.float32)
    step = max(1, _CHUNK_ENTRIES // n)
    for first in range(0, n, step):
        last = min(n, first + step)
        out[first:last] = _rows(key, xp.arange(first, last, dtype=xp.uint64), n, xp)
    return out


def _chain(x: Any, b: Any, rounds: int, xp: ArrayModule) -> Any:
    for _ in range(rounds):
        sums = xp.matmul(x, b).astype(xp.int32)
        x = ((sums >> 4) & 15).astype(xp.float32) - 8
    return x


def _packed(x: Any, xp: ArrayModule) -> PackedRows:
    """Values in [-8, 7] as 4-bit nibbles, two a byte, on the host."""
    nibbles = (x + 8).astype(xp.uint8)
    packed = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]
    to_host = getattr(packed, "get", None)  # CuPy arrays copy back with .get()
    return np.ascontiguousarray(to_host() if callable(to_host) else packed, dtype=np.uint8)


def _leaf(row: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + row).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


@dataclass(frozen=True, slots=True)
class RevealedRow:
    index: int
    values: bytes  # n / 2 bytes, two 4-bit values (v + 8) a byte, high nibble first
    proof: tuple[bytes, ...]  # sibling hashes from the leaf up, log2(n) of them


@dataclass(frozen=True, slots=True)
class Answer:
    """The host's result: every packed row and the Merkle tree over them. Only `root` is sent
    within the time bound; rows are revealed when the verifier asks."""

    rows: PackedRows
    levels: tuple[tuple[bytes, ...], ...]  # the leaves first, the root last

    @classmethod
    def of(cls, rows: PackedRows) -> Answer:
        level = tuple(_leaf(row.tobytes()) for row in rows)
        levels = [level]
        while len(level) > 1:
            level = tuple(_node(level[i], level[i + 1]) for i in range(0, len(level), 2))
            levels.append(level)
        return cls(rows, tuple(levels))

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]

    def reveal(self, indices: Sequence[int]) -> tuple[RevealedRow, ...]:
        return tuple(
            RevealedRow(
                index,
                self.rows[index].tobytes(),
                tuple(level[(index >> depth) ^ 1] for depth, level in enumerate(self.levels[:-1])),
            )
            for index in indices
        )


def solve(challenge: Challenge, xp: ArrayModule) -> Answer:
    """The container's side: the whole chain on `xp` (CuPy puts it on the GPU)."""
    n, seed = challenge.size, challenge.seed
    b = _matrix(_key(seed, b"B"), n, xp)
    x = _chain(_matrix(_key(seed, b"A"), n, xp), b, challenge.rounds, xp)
    return Answer.of(_packed(x, xp))


# The verifier's side --------------------------------------------------------------------------


def pick_rows(challenge: Challenge, entropy: bytes) -> tuple[int, ...]:
    """`challenge.reveal` distinct rows, from entropy drawn after the commitment arrived."""
    if len(entropy) < 16:
        raise ChallengeError(f"row picks need 16 or more bytes of entropy, not {len(entropy)}")
    picked: set[int] = set()
    counter = 0
    while len(picked) < challenge.reveal:
        digest = hashlib.sha256(entropy + counter.to_bytes(4)).digest()
        picked.add(int.from_bytes(digest[:8]) % challenge.size)  # n divides 2^64: no bias
        counter += 1
    return tuple(sorted(picked))


def expected_rows(challenge: Challenge, indices: Sequence[int], xp: ArrayModule = np) -> PackedRows:
    """The packed result rows `indices`, computed from those rows of A alone."""
    n, seed = challenge.size, challenge.seed
    a = _rows(_key(seed, b"A"), xp.asarray(indices, dtype=xp.uint64), n, xp)
    return _packed(_chain(a, _matrix(_key(seed, b"B"), n, xp), challenge.rounds, xp), xp)


def check(
    challenge: Challenge,
    root: bytes,
    elapsed_s: float,
    asked: Sequence[int],
    revealed: Sequence[RevealedRow],
    *,
    xp: ArrayModule = np,
) -> Finding:
    """Judge a host's answer: the asked rows, proven against `root`, equal to the product, and
    the root committed `elapsed_s` after the challenge was sent (the edge's monotonic clock).
    The cheap checks run first; the rows are recomputed only when they pass."""
    if not elapsed_s >= 0:
        raise ChallengeError(f"elapsed time is a non-negative number of seconds, not {elapsed_s}")
    if not asked or not all(0 <= index < challenge.size for index in asked):
        raise ChallengeError(f"asked rows are in [0, {challenge.size}), not {list(asked)}")
    bound, device = challenge.time_bound_s, challenge.device
    fault = _fault(challenge, root, asked, revealed, xp)
    if fault is None and elapsed_s > bound:
        fault = (
            f"answered in {elapsed_s:.2f} s, over the {bound:.2f} s bound for the claimed "
            f"{device}: it computes slower than the hardware it claims"
        )
    detail = fault or (
        f"answered in {elapsed_s:.2f} s, within the {bound:.2f} s bound for the claimed "
        f"{device}; {len(asked)} random rows check"
    )
    return Finding("challenge", fault is None, bound, round(float(elapsed_s), 3), detail)


def _fault(
    challenge: Challenge,
    root: bytes,
    asked: Sequence[int],
    revealed: Sequence[RevealedRow],
    xp: ArrayModule,
) -> str | None:
    """What is wrong with the revealed rows, the cheap checks first; None when nothing."""
    got = [row.index for row in revealed]
    if got != list(asked):
        return f"asked for rows {list(asked)}, the container revealed {got}"
    width, depth = challenge.size // 2, challenge.size.bit_length() - 1
    for row in revealed:
        if len(row.values) != width or len(row.proof) != depth:
            return (
                f"row {row.index} has {len(row.values)} bytes and a {len(row.proof)}-step "
                f"proof, not {width} bytes and {depth} steps"
            )
        if _proven_root(row) != root:
            return (
                f"row {row.index} does not hash to the committed root: the commitment was "
                "forged or the row changed after it"
            )
    for row, expected in zip(revealed, expected_rows(challenge, asked, xp), strict=True):
        values = np.frombuffer(row.values, dtype=np.uint8)
        wrong = np.count_nonzero((values >> 4) != (expected >> 4))
        wrong += np.count_nonzero((values & 15) != (expected & 15))
        if wrong:
            return (
                f"row {row.index} differs from the product in {wrong} of {challenge.size} "
                "values: the container did not compute what was asked"
            )
    return None


def _proven_root(row: RevealedRow) -> bytes:
    digest = _leaf(row.values)
    for depth, sibling in enumerate(row.proof):
        on_right = (row.index >> depth) & 1
        digest = _node(sibling, digest) if on_right else _node(digest, sibling)
    return digest


# What a host's claimed hardware is rated at, to size its challenge (both sides compute it).
SUSTAINED = 0.5  # of the datasheet FP32 peak that a busy, honest GPU sustains at least
CPU_CORE_FLOPS = 8e9  # per logical core: an old or busy one (AVX2 OpenBLAS does ~90e9)
UNLISTED_GPU_FLOPS = 2e12  # a GPU the table does not know claims little: a low bar

# Datasheet FP32 (non-tensor) peak TFLOP/s by family, the slowest variant of each (H100 PCIe).
# fmt: off
GPU_PEAK_TFLOPS: dict[str, float] = {
    "H200": 60.3, "H100": 51.2, "A100": 19.5, "V100": 14.0, "L40S": 91.6, "L40": 90.5,
    "L4": 30.3, "A40": 37.4, "A10G": 31.2, "A10": 31.2, "T4": 8.1, "RTX 6000 ADA": 91.1,
    "RTX A6000": 38.7, "RTX 4090": 82.6, "RTX 4080": 48.7, "RTX 3090": 35.6, "RTX 3080": 29.8,
}
# fmt: on
_VENDOR_WORDS = re.compile(r"\b(NVIDIA|GEFORCE|TESLA|QUADRO)\b")


def normalise_gpu_name(name: str) -> str:
    """NVML's marketing name without vendor words, case or punctuation: "NVIDIA H100 PCIe" and
    "H100 PCIE" are the same GPU; "NVIDIA A100-SXM4-80GB" becomes "A100 SXM4 80GB"."""
    words = re.sub(r"[-_\s]+", " ", name.upper())
    return " ".join(_VENDOR_WORDS.sub(" ", words).split())


def device_class(host: protocol.HostSpecs | None) -> DeviceClass:
    """What a challenge is sized for: the fastest device the host claims, one of its GPUs or
    its cores together (an agent that sends no specs is a 1-core CPU)."""
    cores = 1 if host is None else host.cpu_cores
    best = DeviceClass(f"{cores}-core CPU", cores * CPU_CORE_FLOPS)
    for gpu in () if host is None else host.gpus:
        name = normalise_gpu_name(gpu.name)
        rated = (
            DeviceClass(f"{family} GPU", peak * 1e12 * SUSTAINED)
            for family, peak in GPU_PEAK_TFLOPS.items()
            if re.search(rf"\b{family}\b", name)
        )
        gpu_class = next(rated, DeviceClass(f"unlisted GPU {name!r}", UNLISTED_GPU_FLOPS))
        best = max(best, gpu_class, key=lambda device: device.flops)
    return best
