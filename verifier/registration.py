"""The challenge checks from the verifier's side, registration and spot: claims, challenge, judge.

1. The container's claims: what it registered, from the indexer (`/api/containers/ID/
   registration`), never from the container itself.
2. A challenge sized from those claims (contracts/challenge.py), relayed by the indexer; the
   clock runs on this verifier from sending it to receiving the commitment (the relay's two
   hops fall within the challenge's network allowance).
3. Rows to reveal, drawn only after the commitment arrived; their proofs and values checked.
4. Claimed against measured field by field, with the challenge's finding (verifier/
   inspection.py), as one verdict.

A container that stays silent past the bound, or answers with something malformed, has
failed the check: `ContainerFailedCheckError` carries the reason for the verdict.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
import numpy as np

from contracts import protocol as p
from contracts.challenge import (
    Challenge,
    RevealedRow,
    check,
    device_class,
    make_challenge,
    pick_rows,
)
from contracts.verdict import Finding, Verdict
from verifier.errors import VerifierError
from verifier.inspection import HostMeasurement, inspect_registration
from verifier.live_sample import evaluate_spot, spot_challenge

M = TypeVar("M", bound=p.Message)
REVEAL_WAIT_S = 30.0  # for the revealed rows, once asked: reading rows back takes no work


class ContainerFailedCheckError(VerifierError, RuntimeError):
    """The container made the check impossible (silent, malformed); the message says how."""


class InspectionInbox:
    """Where the verifier's socket drops relayed answers, by inspection id."""

    def __init__(self) -> None:
        self._queues: dict[str, asyncio.Queue[p.Message]] = {}

    def open(self, inspection: str) -> asyncio.Queue[p.Message]:
        return self._queues.setdefault(inspection, asyncio.Queue(maxsize=128))

    def close(self, inspection: str) -> None:
        self._queues.pop(inspection, None)

    def deliver(self, message: p.InspectionCommitment | p.InspectionRows) -> None:
        """An answer from the indexer; one nobody waits for (late, or forged) is dropped."""
        queue = self._queues.get(message.inspection)
        if queue is not None and not queue.full():
            queue.put_nowait(message)


async def claims_of(http: aiohttp.ClientSession, server_url: str, container_id: str) -> p.Register:
    async with http.get(f"{server_url}/api/containers/{container_id}/registration") as response:
        if response.status != 200:
            raise ContainerFailedCheckError(f"the indexer no longer lists {container_id!r}")
        message = p.parse_message(await response.text(), "container")
    assert isinstance(message, p.Register)
    return message


@dataclass(frozen=True, slots=True)
class ChallengeLink:
    """How a check reaches its container: the verifier's socket to send through, the inbox
    its relayed answers arrive in, and who is checking which check."""

    send: Callable[[p.Message], Awaitable[None]]
    inbox: InspectionInbox
    check_id: str
    verifier_id: str

    @property
    def inspection(self) -> str:
        """The id that routes this verifier's round trip through the indexer."""
        return f"{self.check_id}.{self.verifier_id}"


async def challenge_round(
    link: ChallengeLink, challenge: Challenge
) -> tuple[p.InspectionCommitment, Finding]:
    """Send `challenge`, time the commitment, ask for rows drawn after it, and judge them."""
    answers = link.inbox.open(link.inspection)
    try:
        started = time.monotonic()
        await link.send(_challenge_message(link.inspection, challenge))
        commitment = await _next(answers, p.InspectionCommitment, challenge.time_bound_s + 5.0)
        elapsed = time.monotonic() - started
        rows = pick_rows(challenge, secrets.token_bytes(32))
        await link.send(p.InspectionReveal(link.inspection, list(rows)))
        revealed: list[p.RevealedRowRecord] = []
        while len(revealed) < len(rows):
            revealed += (await _next(answers, p.InspectionRows, REVEAL_WAIT_S)).rows
        try:
            root = bytes.fromhex(commitment.root)
            shown = [
                RevealedRow(r.index, bytes.fromhex(r.values), tuple(map(bytes.fromhex, r.proof)))
                for r in sorted(revealed, key=lambda r: r.index)
            ]
        except ValueError as exc:
            raise ContainerFailedCheckError(f"the container's answer is not hex: {exc}") from None
        finding = await asyncio.to_thread(check, challenge, root, elapsed, rows, shown, xp=np)
    finally:
        link.inbox.close(link.inspection)
    return commitment, finding


async def inspect_container(
    http: aiohttp.ClientSession, server_url: str, task: p.Assignment, link: ChallengeLink
) -> Verdict:
    """Run one registration check of `task.container` and judge it."""
    claim = await claims_of(http, server_url, task.container)
    challenge = make_challenge(secrets.token_bytes(32), device_class(claim.host))
    commitment, finding = await challenge_round(link, challenge)
    measured = HostMeasurement(commitment.measured, commitment.nvenc, commitment.nvenc_reason)
    return inspect_registration(claim, measured, finding, link.verifier_id, time.time())


async def spot_check(
    http: aiohttp.ClientSession, server_url: str, task: p.Assignment, link: ChallengeLink
) -> Verdict:
    """A standing-by container's load from its last heartbeat, then a small challenge."""
    claim = await claims_of(http, server_url, task.container)
    url = f"{server_url}/api/containers/{task.container}/heartbeat"
    async with http.get(url) as response:
        if response.status != 200:
            raise ContainerFailedCheckError(f"no heartbeat telemetry of {task.container!r}")
        heartbeat = p.parse_message(await response.text(), "container")
    assert isinstance(heartbeat, p.Heartbeat)
    if heartbeat.telemetry is None:
        raise ContainerFailedCheckError(f"{task.container!r} sends no telemetry to judge")
    _, finding = await challenge_round(link, spot_challenge(secrets.token_bytes(32), claim.host))
    return evaluate_spot(
        task.container,
        link.verifier_id,
        time.time(),
        claimed=claim.host,
        telemetry=heartbeat.telemetry,
        challenge=finding,
    )


def _challenge_message(inspection: str, challenge: Challenge) -> p.InspectionChallenge:
    return p.InspectionChallenge(
        inspection,
        challenge.seed.hex(),
        challenge.size,
        challenge.rounds,
        challenge.reveal,
        challenge.device[: p.MAX_TEXT],
        max(1, round(challenge.time_bound_s * 1000)),
    )


async def _next(queue: asyncio.Queue[p.Message], kind: type[M], wait_s: float) -> M:
    try:
        async with asyncio.timeout(wait_s):
            while True:
                message = await queue.get()
                if isinstance(message, kind):
                    return message
    except TimeoutError:
        raise ContainerFailedCheckError(
            f"the container sent no {kind.type} within {wait_s:.1f} s"
        ) from None
