"""The container's side of the registration check: measure the host, do the work, reveal rows.

A verifier (through the indexer) sends a challenge (contracts/challenge.py); the container
measures its host again (NVML and psutil via TelemetryReader, the NVENC probe), computes the
challenge on the GPU when frames are drawn there (CuPy) or on the CPU (numpy), and commits to
the result's Merkle root. The rows the verifier then asks for are read back from the kept
answer. The work runs in a worker thread: the agent keeps heartbeating and streaming meanwhile.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from types import ModuleType

import numpy as np

from contracts import protocol as p
from contracts.challenge import (
    Answer,
    Challenge,
    ChallengeError,
    device_class,
    make_challenge,
    solve,
)
from streamer.backends import host_nvenc
from streamer.telemetry import TelemetryReader

KEPT_ANSWERS = 8  # a committee of 2N+1 inspects at once; older answers are dropped
WORK_SLACK = 4  # how much more work than its own specs warrant a host accepts to do


class ChallengeSolver:
    def __init__(self, telemetry: TelemetryReader, on_gpu: bool = False) -> None:
        self._telemetry = telemetry
        self._on_gpu = on_gpu
        self._answers: OrderedDict[str, Answer] = OrderedDict()

    async def commit(self, message: p.InspectionChallenge) -> p.InspectionCommitment:
        """Measure, solve and commit. Refused (ChallengeError, the agent logs it): a challenge
        out of range, or more work than a check of this host's own specs would ask
        (`WORK_SLACK` times), so no verifier can tie the host up with a huge one."""
        challenge = Challenge(
            bytes.fromhex(message.seed),
            message.size,
            message.rounds,
            message.reveal,
            message.device,
            message.time_bound_ms / 1000,
        )
        specs = await asyncio.to_thread(self._telemetry.host_specs)
        fair = make_challenge(challenge.seed, device_class(specs))
        if challenge.work_flops > WORK_SLACK * fair.work_flops:
            raise ChallengeError(
                f"a challenge of {challenge.work_flops:.3g} operations is more than "
                f"{WORK_SLACK} times what this host's specs warrant ({fair.work_flops:.3g})"
            )
        answer = await asyncio.to_thread(solve, challenge, self._array_module())
        self._answers[message.inspection] = answer
        while len(self._answers) > KEPT_ANSWERS:
            self._answers.popitem(last=False)
        nvenc = await asyncio.to_thread(host_nvenc)
        return p.InspectionCommitment(
            message.inspection, answer.root.hex(), specs, nvenc.available, nvenc.reason
        )

    def reveal(self, message: p.InspectionReveal) -> list[p.InspectionRows]:
        """The asked rows with their proofs, packed into as few messages as fit."""
        answer = self._answers.pop(message.inspection, None)
        if answer is None:
            raise p.ProtocolError("unexpected", f"no answer kept for {message.inspection!r}")
        size = len(answer.rows)
        if any(index >= size for index in message.rows):
            raise p.ProtocolError("bad_field", f"rows must be below {size}, not {message.rows}")
        records = [
            p.RevealedRowRecord(row.index, row.values.hex(), [s.hex() for s in row.proof])
            for row in answer.reveal(sorted(set(message.rows)))
        ]
        per_row = len(p.InspectionRows(message.inspection, records[:1]).to_json())
        per_message = max(1, (p.MAX_MESSAGE_BYTES - 1024) // per_row)
        return [
            p.InspectionRows(message.inspection, records[first : first + per_message])
            for first in range(0, len(records), per_message)
        ]

    def _array_module(self) -> ModuleType:
        if self._on_gpu:
            import cupy  # noqa: PLC0415  (the GPU extra; only where frames are drawn on a GPU)

            return cupy  # type: ignore[no-any-return]
        return np
