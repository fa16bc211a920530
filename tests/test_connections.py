"""Each socket's rules without a socket: the exact reply, delivery and close decision for every
hostile, malformed, flooding or out-of-order message, over a real broker and desk in memory."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from contracts import protocol as p
from contracts.signing import HostCredentials
from indexer.build_events import RECENT_BUILD_EVENTS
from indexer.keys import KeyStore
from indexer.lifecycle import Admission, Availability, LivenessConfig
from indexer.play_queue import PlayQueue, Relaxation
from indexer.registry import ContainerRegistry
from indexer.store import MemoryStore
from judge.coordinator import Coordinator, VerificationConfig
from judge.desk import VerificationDesk
from signaling.authentication import Authenticator, HostKeys, MemoryIdOwners
from signaling.broker import Outgoing, SessionBroker
from signaling.connections import (
    EXPIRED,
    MESSAGE_BURST,
    TRANSPORT_FAILED,
    Connection,
    ContainerConnection,
    Frame,
    FrameType,
    PeerKey,
    Peers,
    PlayerConnection,
    Reaction,
    VerifierConnection,
)
from tests.samples import BAD_SIGNALING, BAD_TELEMETRY

WALL = 1_000_000.0
REGISTER = p.Register("c1", ["reference"], ["x264"], 1280, 720, 60)
PLAY = p.Play("reference", 1280, 720, 60).to_json()
MATCHED = Outgoing("player", "p1", p.Matched("s1", "c1"))


class Network:
    """A broker and a desk over one in-memory registry, and the edge's table of which socket
    speaks for each peer id (what signaling/server.py keeps)."""

    def __init__(self, authenticator: Authenticator | None = None) -> None:
        registry = ContainerRegistry(
            LivenessConfig(2.0, 3), np.random.default_rng(0), admit_on_register=True
        )
        store = MemoryStore(registry)
        self.registry = registry
        counter = itertools.count(1)
        self.broker = SessionBroker(store, PlayQueue(Relaxation()), lambda: f"s{next(counter)}")
        coordinator = Coordinator(VerificationConfig(), b"g", WALL, np.random.default_rng(0))
        self.desk = VerificationDesk(coordinator, store)
        self.authenticator = authenticator
        self.table: dict[PeerKey, Socket] = {}

    def player(self, player_id: str = "p1") -> Socket:
        return Socket(self, lambda _: PlayerConnection(player_id, self.broker, 0.0))

    def container(self, challenge: str = "c" * 43) -> Socket:
        return Socket(
            self,
            lambda peers: ContainerConnection(
                self.broker,
                self.desk,
                challenge,
                0.0,
                peers=peers,
                authenticator=self.authenticator,
            ),
        )

    def verifier(self, challenge: str = "v" * 43) -> Socket:
        return Socket(
            self,
            lambda peers: VerifierConnection(
                self.broker,
                self.desk,
                challenge,
                0.0,
                peers=peers,
                authenticator=self.authenticator,
            ),
        )


class Socket:
    """One connection as the edge runs it: it applies joined, close and left to the table."""

    def __init__(self, network: Network, connect: Callable[[Peers], Connection]) -> None:
        self.network = network
        self.closed = False
        self.connection = connect(self)
        self.opening = self._act(self.connection.opened())

    def speaks_for(self, peer: PeerKey) -> bool:
        return self.network.table.get(peer) is self

    def taken(self, peer: PeerKey) -> bool:
        holder = self.network.table.get(peer)
        return holder is not None and holder is not self and not holder.closed

    async def send(self, text: str, now: float = 0.0) -> Reaction:
        return await self.frame(Frame(FrameType.TEXT, text), now)

    async def frame(self, frame: Frame, now: float = 0.0) -> Reaction:
        assert not self.closed, "the edge reads no more once a connection closes"
        return self._act(await self.connection.receive(frame, now, WALL))

    async def hang_up(self, now: float = 0.0) -> Reaction:
        self.closed = True
        return self._act(await self.connection.closed(now))

    def _act(self, reaction: Reaction) -> Reaction:
        table = self.network.table
        if reaction.joined is not None:
            table[reaction.joined] = self
        if reaction.close is not None:
            self.closed = True
        if reaction.left is not None and table.get(reaction.left) is self:
            del table[reaction.left]
        return reaction


def error(code: str, reason: str, ref: str = "") -> Reaction:
    return Reaction(replies=(p.Error(code, reason, ref),))


def only_error(reaction: Reaction) -> p.Error:
    """The one error reply a refused message earns: nothing delivered, nothing closed."""
    (reply,) = reaction.replies
    assert isinstance(reply, p.Error)
    assert reaction == Reaction(replies=(reply,))
    return reply


async def registered(network: Network) -> Socket:
    """c1's container, registered at t=0."""
    container = network.container()
    reaction = await container.send(REGISTER.to_json())
    assert reaction.joined == ("container", "c1")
    assert reaction.outgoing == (Outgoing("container", "c1", p.Registered("c1", 2000)),)
    return container


def credentials(store: KeyStore, host: str) -> HostCredentials:
    _, key_file = store.issue(host, "2026-11-24T00:00:00+00:00")
    return HostCredentials.parse(key_file)


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    store = KeyStore(tmp_path / "keys.json")
    store.save()
    return store


# Players -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "code"), BAD_SIGNALING)
async def test_bad_signaling_gets_an_error_and_the_connection_still_plays(
    raw: str, code: str
) -> None:
    network = Network()
    await registered(network)
    player = network.player()
    refusal = only_error(await player.send(raw))
    assert refusal.code == code
    assert refusal.reason
    assert refusal.ref == ("offer" if code == "unexpected" else "")  # parsed, then refused
    assert await player.send(PLAY) == Reaction(outgoing=(MATCHED,))


async def test_a_message_of_the_largest_size_is_parsed_and_one_byte_more_is_too_large() -> None:
    player = Network().player()
    padding = p.MAX_MESSAGE_BYTES - len(json.dumps({"v": 1, "type": "end", "reason": ""}))
    largest = json.dumps({"v": 1, "type": "end", "reason": "x" * padding})
    assert only_error(await player.send(largest)).code == "bad_field"  # too long a reason
    over = json.dumps({"v": 1, "type": "end", "reason": "x" * (padding + 1)})
    assert await player.send(over) == error(
        "too_large", f"message of {p.MAX_MESSAGE_BYTES + 1} bytes exceeds {p.MAX_MESSAGE_BYTES}"
    )


async def test_binary_frames_and_floods_are_answered_not_obeyed() -> None:
    player = Network().player()
    assert await player.frame(Frame(FrameType.BINARY, b"\x00\x01")) == error(
        "malformed", "only text (JSON) messages are accepted"
    )
    end = p.End().to_json()
    replies = [only_error(await player.send(end)) for _ in range(MESSAGE_BURST + 20)]
    no_session = p.Error("unexpected", "no session: send play first", "end")
    limited = p.Error("rate_limited", "more than 20 messages per second")
    assert replies == [no_session] * (MESSAGE_BURST - 1) + [limited] * 21  # the binary took one
    assert only_error(await player.send(end, now=0.05)) == no_session  # one token back


async def test_a_failed_transport_stops_the_reading_and_the_goodbye_ends_the_session() -> None:
    network = Network()
    await registered(network)
    player = network.player()
    assert player.opening == Reaction(joined=("player", "p1"))
    await player.send(PLAY)
    assert await player.frame(Frame(FrameType.ERROR)) == Reaction(close=TRANSPORT_FAILED)
    assert await player.hang_up() == Reaction(
        outgoing=(
            Outgoing("player", "p1", p.Ended("s1", "the player disconnected")),
            Outgoing("container", "c1", p.End("s1", "the player disconnected")),
        ),
        left=("player", "p1"),
    )
    assert network.table == {("container", "c1"): network.table["container", "c1"]}


@pytest.mark.parametrize(
    ("role", "message"),
    [
        ("player", REGISTER),
        ("player", p.Enlist("v0", 10)),
        ("container", p.Play("reference")),
        ("container", p.VerdictReport("x", "c1", "registration", [])),
        ("verifier", p.Heartbeat()),
        ("verifier", p.Offer("v=0")),
    ],
)
async def test_a_message_of_another_role_is_an_unknown_type(role: str, message: p.Message) -> None:
    network = Network()
    socket = {"player": network.player, "container": network.container}.get(
        role, network.verifier
    )()
    refusal = only_error(await socket.send(message.to_json()))
    assert (refusal.code, refusal.ref) == ("unknown_type", "")
    assert refusal.reason.startswith(f"a {role} cannot send {message.type!r}")


# Containers --------------------------------------------------------------------------------


async def test_a_container_must_register_first_with_an_id_of_its_own_key(
    keys: KeyStore,
) -> None:
    network = Network(HostKeys(keys, MemoryIdOwners()))
    first = network.container("a" * 43)
    mine = credentials(keys, "host-a")
    reaction = await first.send(mine.signed(REGISTER, "a" * 43).to_json())
    assert reaction.joined == ("container", "c1")

    other = network.container("b" * 43)
    assert other.opening == Reaction(replies=(p.Challenge("b" * 43),))
    assert await other.send(p.Heartbeat().to_json()) == error(
        "unexpected", "register first", "heartbeat"
    )
    assert await other.send(REGISTER.to_json()) == error(  # unsigned
        "malformed", "the signature is not 86 base64url characters", "register"
    )
    # Signed, but with another host's key than the one that registered c1.
    theirs = credentials(keys, "host-b")
    assert await other.send(theirs.signed(REGISTER, "b" * 43).to_json()) == error(
        "conflict", "container id 'c1' belongs to another key; choose another id", "register"
    )
    assert await other.hang_up() == Reaction()  # it never spoke for c1
    assert network.table == {("container", "c1"): first}


async def test_a_registered_container_may_not_register_again_nor_play() -> None:
    network = Network()
    container = await registered(network)
    assert await container.send(REGISTER.to_json()) == error(
        "unexpected", "already registered as 'c1'", "register"
    )
    assert await container.send(p.Answer("s1", "v=0").to_json()) == error(
        "unexpected", "session 's1' is not this container's", "answer"
    )


async def test_hostile_specs_and_telemetry_are_refused_and_the_container_stays() -> None:
    network = Network()
    container = network.container()
    register = dataclasses.replace(REGISTER, host=p.HostSpecs("x", 1, 1, []))
    hostile = json.loads(register.to_json())
    hostile["host"]["cpu_cores"] = 0
    refusal = only_error(await container.send(json.dumps(hostile)))
    assert (refusal.code, refusal.ref) == ("bad_field", "")
    assert "register.host.cpu_cores=0 is outside [1, 4096]" in refusal.reason
    assert (await container.send(register.to_json())).joined == ("container", "c1")
    for raw, code, fragment in BAD_TELEMETRY:
        refusal = only_error(await container.send(raw, now=1.0))
        assert (refusal.code, refusal.ref) == (code, "")
        assert fragment in refusal.reason
    assert await container.send(p.Heartbeat(p.Telemetry(7.5, 10, [])).to_json()) == Reaction()
    assert network.registry.get("c1").lifecycle.availability is Availability.STANDBY


async def test_an_expired_container_is_closed_and_its_old_connection_cannot_undo_a_new_one() -> (
    None
):
    network = Network()
    old = await registered(network)
    await network.broker.expire(10.0)  # silent past three heartbeat periods
    assert await old.send(p.Heartbeat().to_json(), now=10.0) == Reaction(
        replies=(
            p.Error("expired", "container 'c1' missed its heartbeats; register again", "heartbeat"),
        ),
        close=EXPIRED,
    )
    assert (EXPIRED.code, EXPIRED.reason) == (1008, "expired")  # RFC 6455: policy violation

    new = network.container()
    assert (await new.send(REGISTER.to_json(), now=10.5)).joined == ("container", "c1")
    assert await old.hang_up(now=11.0) == Reaction()  # no goodbye for an id it lost
    assert network.table == {("container", "c1"): new}
    assert await new.send(p.Heartbeat().to_json(), now=11.0) == Reaction()
    assert network.registry.get("c1").lifecycle.availability is Availability.STANDBY

    assert await new.hang_up(now=12.0) == Reaction(left=("container", "c1"))
    assert network.table == {}


# Verifiers ---------------------------------------------------------------------------------


async def test_a_verifier_must_enlist_first_and_as_one_id() -> None:
    network = Network()
    verifier = network.verifier()
    assert verifier.opening == Reaction(replies=(p.Challenge("v" * 43),))
    for message in (
        p.VerdictReport("x", "c1", "registration", []),
        p.InspectionChallenge("x.v0", "00" * 32, 256, 1, 1, "gpu", 1),
    ):
        assert await verifier.send(message.to_json()) == error(
            "unexpected", "enlist first", message.type
        )
    epoch = VerificationConfig().rotation.epoch_seconds
    assert await verifier.send(p.Enlist("v0", 10).to_json()) == Reaction(
        joined=("verifier", "v0"), replies=(p.Enlisted("v0", epoch),)
    )
    assert await verifier.send(p.Enlist("v1", 10).to_json()) == error(
        "unexpected", "already enlisted as 'v0'", "enlist"
    )
    assert await verifier.send(p.InspectionReveal("x.v0", [0]).to_json()) == error(
        "unexpected", "inspection 'x.v0' is not open", "inspection_reveal"
    )


async def test_a_connected_verifier_id_cannot_be_taken_over_until_it_hangs_up() -> None:
    network = Network()
    first, second = network.verifier(), network.verifier()
    await first.send(p.Enlist("v0", 10).to_json())
    assert await second.send(p.Enlist("v0", 99).to_json()) == error(
        "conflict", "verifier 'v0' is connected already", "enlist"
    )
    assert await first.hang_up() == Reaction(left=("verifier", "v0"))
    assert (await second.send(p.Enlist("v0", 99).to_json())).joined == ("verifier", "v0")


async def test_enlisting_needs_a_live_key_and_an_id_of_its_own(keys: KeyStore) -> None:
    network = Network(HostKeys(keys, MemoryIdOwners()))
    mine, theirs = credentials(keys, "verifier-a"), credentials(keys, "verifier-b")
    first = network.verifier("a" * 43)
    assert await first.send(p.Enlist("v0", 10).to_json()) == error(
        "malformed", "the signature is not 86 base64url characters", "enlist"
    )
    assert (await first.send(mine.signed(p.Enlist("v0", 10), "a" * 43).to_json())).replies
    await first.hang_up()
    second = network.verifier("b" * 43)
    assert await second.send(theirs.signed(p.Enlist("v0", 10), "b" * 43).to_json()) == error(
        "conflict", "verifier id 'v0' belongs to another key; choose another id", "enlist"
    )


async def test_an_unreadable_key_store_makes_a_registration_unavailable(
    keys: KeyStore,
) -> None:
    network = Network(HostKeys(keys, MemoryIdOwners()))
    keys.path.write_text("{damaged")
    refusal = only_error(await network.container().send(REGISTER.to_json()))
    assert (refusal.code, refusal.ref) == ("unavailable", "register")
    assert refusal.reason.startswith(f"the key store {keys.path} is damaged: not JSON")


async def test_build_reports_are_kept_bounded_and_a_flood_is_rate_limited() -> None:
    network = Network()
    container = await registered(network)
    crash = p.BuildEvent("crashed", "reference", "1", session="s1", detail="exited with code 1")
    reactions = [await container.send(crash.to_json()) for _ in range(MESSAGE_BURST + 5)]
    limited = p.Error("rate_limited", "more than 20 messages per second")
    assert reactions == [Reaction()] * (MESSAGE_BURST - 1) + [Reaction(replies=(limited,))] * 6
    events = network.registry.get("c1").build_events
    assert len(events.recent) == RECENT_BUILD_EVENTS  # of the 39 taken, the latest only
    assert events.counts == {"crashed": MESSAGE_BURST - 1}
    hostile = json.loads(crash.to_json()) | {"detail": "x" * 10_000}
    refusal = only_error(await container.send(json.dumps(hostile), now=10.0))
    assert (refusal.code, refusal.reason) == (
        "bad_field",
        "build_event.detail is longer than 128 characters",
    )
    refused = p.BuildEvent("hash_refused", "reference", "1", detail="'game.py' was changed")
    assert await container.send(refused.to_json(), now=10.0) == Reaction()
    lifecycle = network.registry.get("c1").lifecycle
    assert lifecycle.admission is Admission.NEEDS_REINSPECTION
