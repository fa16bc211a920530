"""Verification end to end: a real indexer, real container agents, real verifiers on loopback.

Each network runs one inspection cycle: the registration check (challenge relayed through the
indexer), then a bot session played by the verifier with its check's ticket. A healthy
container is admitted and scores; one that lies about its GPU, serves 30 fps while offering 60,
adds 100 ms, or ignores input is demoted within that cycle; a lying verifier is outvoted and
its dissent recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from contracts import protocol as p
from contracts.verdict import Finding, Verdict
from judge.coordinator import VerificationConfig
from node.runtime import RunningServer, run_agent, run_verifier, serve, verification_for
from signaling.config import ServerConfig
from streamer.agent import AgentConfig, ContainerAgent
from streamer.impairment import NO_IMPAIRMENT, Impairment
from tests.conftest import open_page
from verifier.agent import VerifierAgent, VerifierConfig

H100 = p.GpuSpec(0, "NVIDIA H100 80GB HBM3", "GPU-0000", 81559)
CYCLE_S = 90  # a registration check and a bot session, on a busy 2-core machine


def server_config(verifiers: int, spot_interval: float = 3600.0) -> ServerConfig:
    verification = verification_for(
        verifiers, VerificationConfig(round_seconds=60.0, spot_interval=spot_interval)
    )
    return ServerConfig(admit_on_register=False, verification=verification)


@contextlib.asynccontextmanager
async def network(
    verifiers: int = 1, verifier_class: type[VerifierAgent] = VerifierAgent
) -> AsyncIterator[RunningServer]:
    async with (
        serve("127.0.0.1", 0, server_config(verifiers)) as server,
        contextlib.AsyncExitStack() as stack,
    ):
        for number in range(verifiers):
            cls = verifier_class if number == 0 else VerifierAgent
            agent = cls(VerifierConfig(server.url, f"v{number}"))
            await stack.enter_async_context(run_verifier(agent))
        yield server


def container(
    server: RunningServer, impairment: Impairment = NO_IMPAIRMENT
) -> contextlib.AbstractAsyncContextManager[ContainerAgent]:
    agent_config = AgentConfig(
        server.container_url, "c1", encoder="x264", max_width=1280, max_height=720,
        max_fps=60, impairment=impairment,
    )  # fmt: skip
    return run_agent(agent_config, sessions=1)


async def decided(
    http: aiohttp.ClientSession, server: RunningServer, checks: int
) -> dict[str, Any]:
    """The container's row once `checks` decisions about it are in."""
    async with asyncio.timeout(CYCLE_S):
        while True:
            async with http.get(f"{server.url}/api/containers") as response:
                rows = (await response.json())["containers"]
            if rows and len(rows[0]["verification"]["decisions"]) >= checks:
                return dict(rows[0])
            await asyncio.sleep(0.25)


def failing(decision: dict[str, Any]) -> list[str]:
    return [f["name"] for f in decision["findings"] if not f["passed"]]


async def test_a_healthy_container_is_admitted_then_passes_its_bot_session(http) -> None:
    async with network() as server, container(server):
        row = await decided(http, server, checks=2)
    bot, registration = row["verification"]["decisions"]  # newest first
    assert registration["check"] == "registration" and registration["outcome"] == "passed"
    names = {f["name"] for f in registration["findings"]}
    assert {"challenge", "cpu_cores", "ram_mib", "gpu_count"} <= names
    why = [(f["name"], f["detail"]) for f in bot["findings"] if not f["passed"]]
    assert bot["check"] == "bot" and bot["outcome"] == "passed", why
    assert row["state"] in ("inspected and ready", "connected and healthy")
    assert row["verification"]["qos"] > 0.7 and row["verification"]["penalty"] == 0


async def test_a_standing_by_container_gets_a_spot_check(http) -> None:
    """After its inspection cycle, a container with no session is spot-checked at a random
    time: its heartbeat's load and a small challenge, relayed like the registration's."""
    async with (
        serve("127.0.0.1", 0, server_config(1, spot_interval=0.5)) as server,
        run_verifier(VerifierAgent(VerifierConfig(server.url, "v0"))),
        container(server),
    ):
        row = await decided(http, server, checks=3)
    checks = [d["check"] for d in row["verification"]["decisions"]]
    assert checks[-2:] == ["bot", "registration"] and checks[0] == "spot", checks
    spot = row["verification"]["decisions"][0]
    findings = {f["name"]: f for f in spot["findings"]}
    assert set(findings) == {"gpus_present", "cpu_idle", "gpu_idle", "challenge"}
    assert findings["challenge"]["passed"] and findings["gpus_present"]["passed"], findings


@pytest.mark.parametrize(
    ("impairment", "finding"),
    [
        (Impairment(serve_fps=30), "fps"),
        (Impairment(extra_delay_ms=100.0), "g2g_p95_ms"),
        (Impairment(ignore_input=True), "input_reaction"),
    ],
    ids=["30-fps", "100-ms", "ignores-input"],
)
async def test_a_container_that_underdelivers_is_put_in_quality_control(
    http, impairment: Impairment, finding: str
) -> None:
    async with network() as server, container(server, impairment):
        row = await decided(http, server, checks=2)
    bot, registration = row["verification"]["decisions"]
    assert registration["outcome"] == "passed"  # its specs are honest
    assert bot["outcome"] == "failed" and finding in failing(bot), bot
    assert row["state"] == "quality control"
    assert row["verification"]["penalty"] > 0


class ClaimsAnH100(ContainerAgent):
    """A host that announces a GPU it does not have and, unable to do the GPU's work in
    time, bluffs: a made-up root and made-up rows."""

    async def _registration(self, challenge: str) -> p.Register:
        register = await super()._registration(challenge)
        assert register.host is not None
        return dataclasses.replace(register, host=dataclasses.replace(register.host, gpus=[H100]))

    async def _answer_challenge(self, ws: Any, message: p.InspectionChallenge) -> None:
        measured = await asyncio.to_thread(self.telemetry.host_specs)
        bluff = p.InspectionCommitment(message.inspection, secrets.token_hex(32), measured, False)
        self._size = message.size
        await ws.send_str(bluff.to_json())

    async def _reveal(self, ws: Any, message: p.InspectionReveal) -> None:
        depth = self._size.bit_length() - 1
        for index in message.rows:  # one row a message: 8192 values fill one
            row = p.RevealedRowRecord(
                index, secrets.token_hex(self._size // 2), [secrets.token_hex(32)] * depth
            )
            await ws.send_str(p.InspectionRows(message.inspection, [row]).to_json())


async def test_a_container_lying_about_its_gpu_is_refused_at_registration(http) -> None:
    config = AgentConfig("", "c1", encoder="x264", max_width=1280, max_height=720, max_fps=60)
    async with network() as server:
        liar = ClaimsAnH100(dataclasses.replace(config, server_url=server.container_url))
        task = asyncio.create_task(liar.run())
        try:
            row = await decided(http, server, checks=1)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    (registration,) = row["verification"]["decisions"]
    assert registration["outcome"] == "failed"
    assert {"gpu_count", "challenge"} <= set(failing(registration)), registration
    assert row["state"] not in ("inspected and ready", "connected and healthy")


class LyingVerifier(VerifierAgent):
    """Reports the opposite of what it measured."""

    def judge(self, verdict: Verdict) -> Verdict:
        flipped = Finding("overall", not verdict.passed, detail="flipped by a dishonest verifier")
        return dataclasses.replace(verdict, findings=(flipped,))


async def test_a_lying_verifier_is_outvoted_and_recorded(http) -> None:
    async with network(verifiers=3, verifier_class=LyingVerifier) as server:
        async with container(server):
            row = await decided(http, server, checks=1)
        async with http.get(f"{server.url}/api/verifiers") as response:
            verifiers = await response.json()
    (registration,) = row["verification"]["decisions"]
    assert registration["outcome"] == "passed"
    assert registration["dissenters"] == ["v0"]
    assert sorted(registration["majority"]) == ["v1", "v2"]
    assert verifiers["records"]["v0"]["dissented"] == 1
    assert verifiers["records"]["v1"]["agreed"] == 1
    assert {v["verifier"] for v in verifiers["roster"]} == {"v0", "v1", "v2"}


@pytest.mark.browser
async def test_the_dashboard_shows_a_container_being_admitted(http, browser) -> None:
    async with serve("127.0.0.1", 0, server_config(1)) as server, container(server):
        page, errors = await open_page(browser, server.url + "/static/dashboard.html")
        card = page.locator('[data-container="c1"]')
        await card.get_by_text("awaiting inspection").first.wait_for(timeout=10_000)
        assert "no verifier is enlisted" in await page.inner_text("main")
        async with run_verifier(VerifierAgent(VerifierConfig(server.url, "v0"))):
            admitted = "window.dashboard.containers.some((c) => c.verification.decisions.length)"
            await page.wait_for_function(admitted, timeout=CYCLE_S * 1000)
            await page.wait_for_function("window.dashboard.verifiers.roster.length === 1")
            await asyncio.sleep(2.5)  # one more poll renders what the last one fetched
            text = await card.inner_text()
            verifiers = await page.inner_text("#verifiers")
    assert "registration: passed" in text and "cpu_cores" in text, text
    assert "v0" in verifiers and "on duty" in verifiers, verifiers
    assert errors == []
