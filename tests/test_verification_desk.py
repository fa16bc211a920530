"""The indexer's verification desk and the container's solver against hostile peers: each
inspection relayed once, only for its own member and container; tickets seat once; a
challenge larger than the host's specs warrant is refused; a verifier id cannot be taken."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import numpy as np
import pytest

from contracts import protocol as p
from contracts.challenge import ChallengeError
from indexer.keys import KeyStore
from indexer.lifecycle import LivenessConfig
from indexer.play_queue import PlayQueue, Relaxation
from indexer.registry import ContainerRegistry, ContainerSpec
from indexer.store import MemoryStore
from judge.coordinator import Coordinator, VerificationConfig
from judge.desk import VerificationDesk
from judge.rotation import RotationConfig
from node.runtime import serve
from signaling.broker import SessionBroker
from signaling.config import ServerConfig
from streamer.inspected import ChallengeSolver
from streamer.telemetry import TelemetryReader
from tests.samples import challenge_of, host_credentials, signed

NOW, MONO = 1_000_000.0, 50.0


async def desk_with_a_check(check: str) -> tuple[VerificationDesk, p.Assignment]:
    """A desk whose one container (c1) has an open check of kind `check` by verifier v0."""
    registry = ContainerRegistry(
        LivenessConfig(2.0, 3), np.random.default_rng(0), admit_on_register=check == "bot"
    )
    store = MemoryStore(registry)
    await store.register(
        ContainerSpec("c1", frozenset({"reference"}), ("h264",), 1280, 720, 60), MONO
    )
    config = VerificationConfig(rotation=RotationConfig(duty_size=1, committee_size=1))
    desk = VerificationDesk(Coordinator(config, b"g", NOW - 1, np.random.default_rng(0)), store)
    desk.enlist(p.Enlist("v0", 10))
    (assigned,), _ = await desk.sweep(NOW, MONO)
    member, assignment = assigned
    assert member == "v0" and assignment.kind == check
    return desk, assignment


async def test_each_inspection_is_relayed_once_and_only_for_its_member() -> None:
    desk, task = await desk_with_a_check("registration")
    inspection = f"{task.check}.v0"
    with pytest.raises(p.ProtocolError, match="no open registration or spot check of yours"):
        desk.challenge_route("v9", f"{task.check}.v9")  # not on the committee
    with pytest.raises(p.ProtocolError, match="no open registration or spot check of yours"):
        desk.challenge_route("v0", f"{task.check}.v1")  # naming another member
    assert desk.challenge_route("v0", inspection) == "c1"
    with pytest.raises(p.ProtocolError, match="was sent already"):
        desk.challenge_route("v0", inspection)  # no flooding the container with work
    with pytest.raises(p.ProtocolError, match="is not of this container"):
        desk.answer_route("c2", inspection)
    assert desk.answer_route("c1", inspection) == "v0"
    with pytest.raises(p.ProtocolError, match="is not yours"):
        desk.reveal_route("v1", inspection)


async def test_a_member_ticket_seats_once() -> None:
    desk, task = await desk_with_a_check("bot")
    assert desk.seat_for(task.ticket) == "c1"
    assert desk.seat_for(task.ticket) == "c1"  # a refused claim (container full) may retry
    desk.seated(task.ticket)
    assert desk.seat_for(task.ticket) is None
    assert desk.seat_for("forged") is None


async def test_a_challenge_beyond_what_the_host_claims_is_refused_before_any_work() -> None:
    with TelemetryReader() as telemetry:
        solver = ChallengeSolver(telemetry)
        huge = p.InspectionChallenge("x.v0", "00" * 32, 8192, 24, 16, "NVIDIA H100", 5740)
        with pytest.raises(ChallengeError, match="times what this host's specs warrant"):
            await solver.commit(huge)


async def test_a_connected_verifier_id_cannot_be_taken_over(http: aiohttp.ClientSession) -> None:
    async with serve("127.0.0.1", 0, ServerConfig()) as server:
        url = server.url.replace("http", "ws", 1) + "/ws/verifier"
        async with http.ws_connect(url) as first, http.ws_connect(url) as second:
            await challenge_of(first)
            await challenge_of(second)  # unsigned: this indexer checks no keys
            await first.send_str(p.Enlist("v0", 10).to_json())
            assert isinstance(p.parse_message((await first.receive()).data, "server"), p.Enlisted)
            await second.send_str(p.Enlist("v0", 99).to_json())
            refusal = p.parse_message((await second.receive()).data, "server")
    assert refusal == p.Error("conflict", "verifier 'v0' is connected already", "enlist")


async def test_enlisting_needs_a_live_key_where_the_indexer_checks_keys(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    store = KeyStore(tmp_path / "keys.json")
    store.save()
    async with serve("127.0.0.1", 0, ServerConfig(host_keys=store.path)) as server:
        url = server.url.replace("http", "ws", 1) + "/ws/verifier"
        mine, theirs = (
            host_credentials(server, "verifier-a"),
            host_credentials(server, "verifier-b"),
        )
        async with http.ws_connect(url) as ws:
            challenge = await challenge_of(ws)
            await ws.send_str(p.Enlist("v0", 10).to_json())  # unsigned
            assert (await ws.receive_json())["code"] == "malformed"
            await ws.send_str(signed(p.Enlist("v0", 10), mine, challenge))
            assert (await ws.receive_json())["type"] == "enlisted"
        async with http.ws_connect(url) as ws:  # another key for the same verifier id
            challenge = await challenge_of(ws)
            await ws.send_str(signed(p.Enlist("v0", 10), theirs, challenge))
            refusal = await ws.receive_json()
    assert (refusal["code"], refusal["reason"]) == (
        "conflict",
        "verifier id 'v0' belongs to another key; choose another id",
    )


async def test_a_host_whose_build_was_altered_on_disk_gets_a_registration_check() -> None:
    registry = ContainerRegistry(LivenessConfig(2.0, 3), np.random.default_rng(0),
                                 admit_on_register=True)  # fmt: skip
    store = MemoryStore(registry)
    broker = SessionBroker(store, PlayQueue(Relaxation()), lambda: "s1")
    await broker.register(p.Register("c1", ["arcade"], ["h264"], 1280, 720, 60), MONO)
    config = VerificationConfig(rotation=RotationConfig(duty_size=1, committee_size=1))
    desk = VerificationDesk(Coordinator(config, b"g", NOW - 1, np.random.default_rng(0)), store)
    desk.enlist(p.Enlist("v0", 10))
    altered = p.BuildEvent("hash_refused", "arcade", "1", detail="'game.py' was changed")
    await broker.build_event("c1", altered, MONO, wall=NOW)
    (assigned,), _ = await desk.sweep(NOW, MONO)
    assert assigned[1].kind == "registration"  # not the bot session an admitted host gets
