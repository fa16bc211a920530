"""`gamecast verifier`: play one bot session against a container and print the verdict, or
serve on the network's rotation (`--on-duty`).

    gamecast verifier --server http://INDEXER:8080 [--ticket T] [--container ID]
                      [--trace FILE] [--mode aiortc|chromium]
    gamecast verifier --server http://INDEXER:8080 --on-duty [--stake N] [--mode ...]

On duty it enlists with the indexer, runs every check it is assigned (registration checks and
bot sessions) and reports each verdict, printing a line per verdict, until Ctrl-C or SIGTERM.

A check's ticket (from its assignment) seats the bot on the container under check; without
one the indexer seats it like any player, and `--container` refuses to judge any other.

It prints a table of the findings, then the verdict as one line of JSON (NaN, for a figure
that could not be measured, is written as null). The exit status is 0 when the container
passed, 1 when it failed, 2 when the session could not be played.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import socket
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp

from contracts.signing import HostCredentials
from contracts.verdict import Verdict
from node.console import table
from verifier.agent import VerifierAgent, VerifierConfig
from verifier.bot import BotError
from verifier.bot_session import MODES, SessionRequest, run_bot_session
from verifier.bot_verdict import BotLimits
from verifier.browser import BrowserMissingError
from verifier.trace import DEFAULT_TRACE, TraceError, load_trace

FINDING_COLUMNS = (
    ("name", "finding", "{}"), ("result", "result", "{}"), ("claimed", "claimed", "{}"),
    ("measured", "measured", "{}"), ("detail", "detail", "{}"),
)  # fmt: skip


def _server_url(text: str) -> str:
    if not re.fullmatch(r"https?://[^/\s]+/?", text):
        raise argparse.ArgumentTypeError(
            f"expected the indexer's http://HOST:PORT (as players open it); got {text!r}"
        )
    return text.rstrip("/")


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, like 1280x720; got {text!r}")
    return int(match[1]), int(match[2])


def add_commands(
    commands: Any, serve: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
) -> None:
    """Add `gamecast verifier` to the CLI's subcommands (an argparse subparsers object);
    `serve` runs the on-duty service until it is stopped (the CLI's Ctrl-C/SIGTERM handling)."""
    verifier = commands.add_parser(
        "verifier", help="play a bot session against a container and print the verdict"
    )
    verifier.add_argument(
        "--server", type=_server_url, required=True, help="the indexer, http://HOST:PORT"
    )
    verifier.add_argument("--ticket", default="", help="the bot check's ticket, if assigned one")
    verifier.add_argument(
        "--container", default="", help="judge only a session on this container (default: any)"
    )
    verifier.add_argument(
        "--trace", help="an input trace file (JSON, see verifier/trace.py); default: built in"
    )
    verifier.add_argument("--mode", choices=MODES, default="aiortc", help="the bot's client")
    verifier.add_argument("--size", type=_size, default="1280x720", metavar="WxH")
    verifier.add_argument("--fps", type=int, default=60, help="the frame rate to ask for")
    verifier.add_argument(
        "--verifier-id", default=f"{socket.gethostname()}-verifier", help="who signs the verdict"
    )
    limits = BotLimits()
    verifier.add_argument("--g2g-p95-ms", type=float, default=limits.g2g_p95_ms,
                          help="glass-to-glass bound (default: %(default)s)")  # fmt: skip
    verifier.add_argument("--i2p-p95-ms", type=float, default=limits.i2p_p95_ms,
                          help="input-to-photon bound (default: %(default)s)")  # fmt: skip
    verifier.add_argument(
        "--on-duty", action="store_true", help="enlist and run assigned checks until Ctrl-C"
    )
    verifier.add_argument("--stake", type=int, default=100, help="the stake to enlist with")
    verifier.add_argument(
        "--key",
        type=Path,
        help="the key file `gamecast keys issue` wrote for this verifier (signs its enlistment)",
    )
    verifier.set_defaults(handler=run, serve=serve)


def run(args: argparse.Namespace) -> None:
    """Play the session the options describe; exits with the status the docstring gives."""
    try:
        trace = DEFAULT_TRACE if args.trace is None else load_trace(args.trace)
    except TraceError as exc:
        raise SystemExit(f"gamecast verifier: {exc}") from None
    limits = BotLimits(g2g_p95_ms=args.g2g_p95_ms, i2p_p95_ms=args.i2p_p95_ms)
    if args.on_duty:
        key = None if args.key is None else HostCredentials.load(args.key)
        config = VerifierConfig(args.server, args.verifier_id, args.stake, args.mode, limits, key)
        args.serve(_on_duty(config))  # until Ctrl-C or SIGTERM: the way off duty
        raise SystemExit(0)
    width, height = args.size
    request = SessionRequest(
        args.server, args.ticket, args.container, trace, width=width, height=height, fps=args.fps
    )
    where = args.container or "any container"
    print(f"gamecast verifier: {args.mode} bot, trace {trace.name!r} "
          f"({trace.duration_ms / 1000:.1f} s), {width}x{height}@{args.fps}, {where}")  # fmt: skip
    try:
        verdict, _ = asyncio.run(
            run_bot_session(request, verifier_id=args.verifier_id, mode=args.mode, limits=limits)
        )
    except (BotError, BrowserMissingError, aiohttp.ClientError, OSError) as exc:
        print(f"gamecast verifier: the session could not be played: {exc}")
        raise SystemExit(2) from None
    print(report(verdict))
    raise SystemExit(0 if verdict.passed else 1)


class _ReportingAgent(VerifierAgent):
    def judge(self, verdict: Verdict) -> Verdict:
        outcome = "passed" if verdict.passed else f"FAILED: {verdict.reason}"
        print(f"{verdict.check.value} check of {verdict.container_id}: {outcome}", flush=True)
        return verdict


async def _on_duty(config: VerifierConfig) -> None:
    agent = _ReportingAgent(config)
    print(f"gamecast verifier {config.verifier_id}: enlisting with {config.server_url} "
          f"(stake {config.stake}); roster and records at {config.server_url}/api/verifiers",
          flush=True)  # fmt: skip
    await agent.run()


def report(verdict: Verdict) -> str:
    """The findings as a table, a summary line, and the verdict as one line of JSON."""
    rows = [
        {**finding.to_dict(), "result": "pass" if finding.passed else "FAIL"}
        for finding in verdict.findings
    ]
    outcome = "passed" if verdict.passed else f"FAILED: {verdict.reason}"
    summary = f"container {verdict.container_id}: {outcome}"
    return "\n".join(
        (table(rows, FINDING_COLUMNS), summary, json.dumps(_finite(verdict.to_dict())))
    )


def _finite(value: Any) -> Any:
    """`value` with every NaN replaced by None, so the JSON is standard."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value
