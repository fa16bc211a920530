"""A verifier on duty: enlists with an indexer, runs the checks it is assigned, reports verdicts.

The checks themselves live beside it: bot sessions in verifier/bot_session.py, the
registration check in verifier/registration.py, live samples in verifier/live_sample.py (the
sample read from the indexer, which keeps what the session's player and container report).
This module only keeps the connection, runs each assignment in a task it owns, and sends the
verdict back. A check the container made
impossible (refused the session, never finished it in time) is a failed verdict with the
reason; one that broke on this verifier's side is no verdict at all (the committee counts the
member absent), so a verifier's own trouble never costs a container its standing. A live
sample that cannot be judged (the session ended first) is no verdict either: nobody failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field

import aiohttp

from contracts import protocol as p
from contracts.signing import HostCredentials
from contracts.verdict import Check, Finding, Verdict, report_of
from verifier.bot import BotError
from verifier.bot_session import MODES, SessionRequest, run_bot_session
from verifier.bot_verdict import BotLimits
from verifier.errors import VerifierError
from verifier.live_sample import SampleError, evaluate_live, sample_of
from verifier.registration import (
    ChallengeLink,
    ContainerFailedCheckError,
    InspectionInbox,
    inspect_container,
    spot_check,
)

log = logging.getLogger(__name__)

RECONNECT_S = 2.0
VERDICTS_KEPT = 100  # what an on-duty verifier remembers of its own reports
SEAT_RETRY_S = 2.0  # a bot check on a container with no free seat asks again this often
SESSION_BUDGET_S = 15.0  # what a bot session needs of its check's time, warm-up included


class NoSeatError(VerifierError, RuntimeError):
    """The container stayed full (players, fellow members' bots) until too late to play."""


@dataclass(frozen=True, slots=True)
class VerifierConfig:
    server_url: str  # the indexer, http://HOST:PORT
    verifier_id: str
    stake: int = 100
    mode: str = "aiortc"  # how bot sessions play: one of verifier.bot_session.MODES
    limits: BotLimits = field(default_factory=BotLimits)
    key: HostCredentials | None = None  # signs the enlistment (indexer/keys.py)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown bot mode {self.mode!r}; expected one of {MODES}")


class VerifierAgent:
    def __init__(self, config: VerifierConfig) -> None:
        self.config = config
        self.verdicts: deque[Verdict] = deque(maxlen=VERDICTS_KEPT)  # reported, newest last
        self._inbox = InspectionInbox()
        self.enlisted = asyncio.Event()  # set once the indexer has it on the roster

    @property
    def socket_url(self) -> str:
        return self.config.server_url.replace("http", "ws", 1).rstrip("/") + "/ws/verifier"

    async def run(self) -> None:
        """Serve until cancelled, reconnecting when the indexer goes away."""
        while True:
            try:
                await self.serve_once()
            except (aiohttp.ClientError, OSError) as exc:
                log.warning("verifier %s: indexer unreachable (%s)", self.config.verifier_id, exc)
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # a stop the error stood in for
                    raise asyncio.CancelledError from exc
            await asyncio.sleep(RECONNECT_S)

    async def serve_once(self) -> None:
        """One connection: enlist, then run assignments as they come, until it closes."""
        cfg = self.config
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(self.socket_url) as ws,
            asyncio.TaskGroup() as checks,
        ):
            async for frame in ws:
                if frame.type is not aiohttp.WSMsgType.TEXT:
                    break
                try:
                    message = p.parse_message(frame.data, "server")
                except p.ProtocolError as exc:  # one bad frame costs itself, not the agent
                    log.warning("verifier %s: unreadable message: %s", cfg.verifier_id, exc)
                    continue
                if isinstance(message, p.Challenge):
                    await ws.send_str(self._enlistment(message.challenge).to_json())
                elif isinstance(message, p.Assignment):
                    checks.create_task(self._run(ws, http, message))
                elif isinstance(message, p.InspectionCommitment | p.InspectionRows):
                    self._inbox.deliver(message)
                elif isinstance(message, p.Enlisted):
                    self.enlisted.set()
                elif isinstance(message, p.Error):
                    log.warning("verifier %s: indexer says %s", cfg.verifier_id, message.reason)

    def _enlistment(self, challenge: str) -> p.Enlist:
        """Enlist, signed over this connection's challenge when the verifier holds a key."""
        cfg = self.config
        enlist = p.Enlist(cfg.verifier_id, cfg.stake)
        return enlist if cfg.key is None else cfg.key.signed(enlist, challenge)

    async def check(
        self, ws: aiohttp.ClientWebSocketResponse, http: aiohttp.ClientSession, task: p.Assignment
    ) -> Verdict:
        """Run one assigned check and judge it."""
        cfg = self.config
        if task.kind == Check.BOT.value:
            return await self._bot_check(task)
        if task.kind == Check.LIVE.value:
            return await live_verdict(http, cfg.server_url, cfg.verifier_id, task.session)

        async def send(message: p.Message) -> None:
            await ws.send_str(message.to_json())

        link = ChallengeLink(send, self._inbox, task.check, cfg.verifier_id)
        if task.kind == Check.SPOT.value:
            return await spot_check(http, cfg.server_url, task, link)
        return await inspect_container(http, cfg.server_url, task, link)

    async def _bot_check(self, task: p.Assignment) -> Verdict:
        """A bot session on the container; while its seats are all taken (by players, or by a
        fellow member's bot) it is asked again every SEAT_RETRY_S until the deadline, which
        then counts as this member abstaining, not as the container failing."""
        cfg = self.config
        # A session takes ~10 s: past this, a seat would come too late to finish by the deadline.
        give_up = time.monotonic() + task.deadline_ms / 1000 - SESSION_BUDGET_S
        while True:
            request = SessionRequest(
                cfg.server_url, ticket=task.ticket, width=task.width, height=task.height,
                fps=task.fps,
            )  # fmt: skip
            try:
                verdict, _ = await run_bot_session(
                    request, verifier_id=cfg.verifier_id, mode=cfg.mode, limits=cfg.limits
                )
            except BotError as exc:
                if exc.code != "unavailable":
                    raise
                if time.monotonic() + SEAT_RETRY_S > give_up:
                    raise NoSeatError(f"no seat on {task.container} before the deadline") from exc
                await asyncio.sleep(SEAT_RETRY_S)
                continue
            return verdict

    def judge(self, verdict: Verdict) -> Verdict:
        """The verdict this verifier reports for what it measured: as measured."""
        return verdict

    async def _run(
        self, ws: aiohttp.ClientWebSocketResponse, http: aiohttp.ClientSession, task: p.Assignment
    ) -> None:
        who = self.config.verifier_id
        try:
            async with asyncio.timeout(task.deadline_ms / 1000):
                verdict = await self.check(ws, http, task)
        except (BotError, ContainerFailedCheckError, TimeoutError) as exc:  # the container's
            detail = f"the {task.kind} check could not be completed: {exc or 'timed out'}"
            finding = Finding("check_completed", False, detail=detail[:512])
            verdict = Verdict(task.container, who, Check(task.kind), time.time(), (finding,))
        except NoSeatError as exc:  # busy serving players is no fault: abstain
            log.info("verifier %s: %s", who, exc)
            return
        except SampleError as exc:  # nobody's: the session ended, or has too little to judge
            log.info("verifier %s: live sample of %s not judged: %s", who, task.container, exc)
            return
        except Exception:  # ours: abstain rather than blame the container
            log.exception("verifier %s: %s check of %s broke", who, task.kind, task.container)
            return
        verdict = self.judge(verdict)
        self.verdicts.append(verdict)
        with contextlib.suppress(ConnectionError):
            await ws.send_str(report_of(verdict, task.check).to_json())


async def live_verdict(
    http: aiohttp.ClientSession, server_url: str, verifier_id: str, session: str
) -> Verdict:
    """Read a session's live sample from the indexer and judge it."""
    url = f"{server_url}/api/sessions/{urllib.parse.quote(session, safe='')}/sample"
    async with http.get(url) as response:
        if response.status == 404:
            raise SampleError(f"session {session!r} ended before its sample was read")
        response.raise_for_status()
        message = p.parse_message(await response.text(), "server")
    assert isinstance(message, p.SessionSample)
    return evaluate_live(sample_of(message), verifier_id, time.time())
