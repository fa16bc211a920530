"""Host keys: issue and revoke, the store file, and registrations forged, altered or replayed."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from contracts import signing
from contracts.errors import ContractError
from contracts.protocol import GpuSpec, HostSpecs, Register
from contracts.signing import (
    HostKeyError,
    KeyFileError,
    load_private_key,
    new_challenge,
    parse_private_key,
    sign_registration,
    signing_bytes,
    write_private_key,
)
from indexer.keys import HostKey, KeyStore, KeyStoreError, verify_registration

NOW = "2025-01-02T03:04:05+00:00"
LATER = "2025-02-03T04:05:06+00:00"
CHALLENGE_A = "A" * 43
CHALLENGE_B = "B" * 43


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def registration(key_id: str, challenge: str, **changes: Any) -> dict[str, Any]:
    """A registration as it would travel: a Register's JSON with the key id and challenge."""
    host = HostSpecs("AMD EPYC 9654", 16, 65536, [GpuSpec(0, "NVIDIA L4", "GPU-1", 23034)])
    message = Register("rig-1-a", ["tetris"], ["h264"], 1920, 1080, 60, host=host)
    body: dict[str, Any] = json.loads(message.to_json())
    return body | {"key_id": key_id, "challenge": challenge} | changes


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore.load(tmp_path / "keys.json")


def issued(store: KeyStore, host: str = "rig-1") -> tuple[HostKey, Ed25519PrivateKey]:
    key, secret = store.issue(host, NOW)
    key_id, private = parse_private_key(secret)
    assert key_id == key.key_id
    return key, private


def signed(key_id: str, private: Ed25519PrivateKey, challenge: str) -> dict[str, Any]:
    body = registration(key_id, challenge)
    return body | {"signature": sign_registration(private, key_id, challenge, body)}


def refusal(store: KeyStore, body: dict[str, Any], challenge: str, **kw: Any) -> HostKeyError:
    with pytest.raises(HostKeyError) as caught:
        verify_registration(store, body["key_id"], body["signature"], challenge, body, **kw)
    assert isinstance(caught.value, ContractError)  # a peer's misbehaviour, not ours
    return caught.value


# Issuing and the files --------------------------------------------------------------------------


def test_issue_keeps_only_the_public_key_and_writes_owner_only_files(
    store: KeyStore, tmp_path: Path
) -> None:
    key, secret = store.issue("rig-1", NOW)
    store.save()
    key_file = tmp_path / "rig-1.key"
    write_private_key(key_file, secret)

    assert mode_of(store.path) == 0o600
    assert mode_of(key_file) == 0o600
    assert key.key_id.startswith("hk_") and len(key.key_id) == 19
    assert (key.host, key.issued_at, key.revoked_at, key.revoked) == ("rig-1", NOW, None, False)

    key_id, private = load_private_key(key_file)
    assert key_id == key.key_id
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert public == key.public_key
    seed = json.loads(secret)["private_key"]
    stored = store.path.read_text()
    assert seed not in stored and "private" not in stored
    assert json.loads(stored) == {
        "version": 1,
        "keys": [
            {
                "key_id": key.key_id,
                "host": "rig-1",
                "public_key": signing.b64encode(public),
                "issued_at": NOW,
                "revoked_at": None,
            }
        ],
    }


def test_store_survives_a_round_trip(store: KeyStore) -> None:
    first, _ = issued(store, "rig-1")
    second, _ = issued(store, "rig-2")
    store.revoke(first.key_id, LATER)
    store.save()

    again = KeyStore.load(store.path)
    assert again.keys() == store.keys()
    assert again.get(first.key_id) == HostKey(
        first.key_id, "rig-1", first.public_key, NOW, revoked_at=LATER
    )
    assert again.get(second.key_id) == second
    assert again.get("hk_0000000000000000") is None


def test_a_missing_store_file_is_an_empty_store(tmp_path: Path) -> None:
    store = KeyStore.load(tmp_path / "absent.json")
    assert store.keys() == ()
    assert store.reload_if_changed() is False


def test_a_failed_save_leaves_the_previous_file_and_no_temporary(
    store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued(store, "rig-1")
    store.save()
    before = store.path.read_bytes()
    issued(store, "rig-2")

    def fail(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(KeyStoreError, match=r"cannot write the key store .*No space left"):
        store.save()
    assert store.path.read_bytes() == before
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["keys.json"]


def test_a_damaged_store_is_refused_with_where_and_why(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text('{"version": 1, "keys": [{"key_id": "hk_0123456789abcdef", "host": "x"}]}')
    with pytest.raises(KeyStoreError) as caught:
        KeyStore.load(path)
    assert str(caught.value) == (
        f"the key store {path} is damaged: "
        "key hk_0123456789abcdef needs host, issued_at and public_key strings"
    )
    path.write_text("{")
    with pytest.raises(KeyStoreError, match=r"is damaged: not JSON"):
        KeyStore.load(path)


def test_issue_and_revoke_refuse_what_does_not_fit(store: KeyStore) -> None:
    with pytest.raises(KeyStoreError, match=r"host label '' must be 1 to 64 printable"):
        store.issue("", NOW)
    with pytest.raises(KeyStoreError, match=r"host label 'a\\nb' must be"):
        store.issue("a\nb", NOW)
    with pytest.raises(KeyStoreError, match=r"time 'yesterday' is not ISO 8601"):
        store.issue("rig-1", "yesterday")
    with pytest.raises(KeyStoreError, match=r"no key 'hk_0000000000000000' in .*keys\.json"):
        store.revoke("hk_0000000000000000", NOW)
    assert store.keys() == ()


def test_revoking_twice_keeps_the_first_time(store: KeyStore) -> None:
    key, _ = issued(store)
    assert store.revoke(key.key_id, NOW).revoked_at == NOW
    assert store.revoke(key.key_id, LATER).revoked_at == NOW


def test_a_key_file_is_never_overwritten(tmp_path: Path, store: KeyStore) -> None:
    path = tmp_path / "rig.key"
    path.write_bytes(b"an older key")
    _, secret = store.issue("rig-1", NOW)
    with pytest.raises(KeyFileError, match=r"rig\.key exists; choose another file"):
        write_private_key(path, secret)
    assert path.read_bytes() == b"an older key"


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"-----BEGIN PRIVATE KEY-----", "not a usable host key file: Expecting value"),
        (b'{"format": "ssh"}', "not a usable host key file: not a gamecast-host-key file"),
        (
            b'{"format": "gamecast-host-key", "version": 1, "key_id": "hk_0123456789abcdef",'
            b' "private_key": "c2hvcnQ"}',
            "not a usable host key file: ",  # cryptography words the wrong length
        ),
    ],
)
def test_a_key_file_that_is_not_one_is_refused(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "rig.key"
    path.write_bytes(content)
    with pytest.raises(KeyFileError) as caught:
        load_private_key(path)
    assert str(caught.value).startswith(f"{path}: {why}")


# Challenges and canonical bytes -----------------------------------------------------------------


def test_challenges_are_fresh_and_carry_256_bits() -> None:
    challenges = {new_challenge() for _ in range(100)}
    assert len(challenges) == 100
    for challenge in challenges:
        assert len(signing.b64decode(challenge)) == 32


def test_signing_bytes_are_canonical_and_leave_out_the_signature() -> None:
    body = {"type": "register", "v": 1, "host": {"ram_mib": 2, "cpu": "é"}, "games": ["b", "a"]}
    reordered = {"games": ["b", "a"], "host": {"cpu": "é", "ram_mib": 2}, "v": 1}
    reordered |= {"type": "register", "signature": "anything"}
    golden = (
        b"gamecast-register-v1\nhk_0123456789abcdef\n" + CHALLENGE_A.encode() + b"\n"
        b'{"games":["b","a"],"host":{"cpu":"\\u00e9","ram_mib":2},"type":"register","v":1}'
    )
    assert signing_bytes("hk_0123456789abcdef", CHALLENGE_A, body) == golden
    assert signing_bytes("hk_0123456789abcdef", CHALLENGE_A, reordered) == golden


# Verifying registrations ------------------------------------------------------------------------


def test_a_signed_registration_proves_its_key(store: KeyStore) -> None:
    key, private = issued(store)
    challenge = new_challenge()
    body = signed(key.key_id, private, challenge)
    through_the_wire = json.loads(json.dumps(body, indent=1))  # the order and spacing differ
    assert (
        verify_registration(
            store, key.key_id, body["signature"], challenge, through_the_wire, answered=challenge
        )
        == key
    )


def test_an_unknown_key_is_refused(store: KeyStore) -> None:
    _, private = issued(store)
    body = signed("hk_0123456789abcdef", private, CHALLENGE_A)
    error = refusal(store, body, CHALLENGE_A)
    assert (error.code, error.reason) == (
        "unknown_key",
        "no key hk_0123456789abcdef was issued here; ask the operator for a key",
    )


def test_a_revoked_key_is_refused_even_by_an_indexer_that_loaded_it_before(
    store: KeyStore,
) -> None:
    key, private = issued(store)
    store.save()
    indexer = KeyStore.load(store.path)  # a running indexer, another process
    body = signed(key.key_id, private, CHALLENGE_A)
    assert verify_registration(indexer, key.key_id, body["signature"], CHALLENGE_A, body) == key
    assert indexer.reload_if_changed() is False

    cli = KeyStore.load(store.path)
    cli.revoke(key.key_id, LATER)
    cli.save()
    assert indexer.reload_if_changed() is True
    error = refusal(indexer, body, CHALLENGE_A)
    assert (error.code, error.reason) == (
        "revoked_key",
        f"key {key.key_id} of host 'rig-1' was revoked at {LATER}",
    )
    assert indexer.reload_if_changed() is False


def test_a_deleted_store_refuses_every_key(store: KeyStore) -> None:
    key, private = issued(store)
    store.save()
    store.path.unlink()
    assert store.reload_if_changed() is True
    assert refusal(store, signed(key.key_id, private, CHALLENGE_A), CHALLENGE_A).code == (
        "unknown_key"
    )


@pytest.mark.parametrize(
    "change",
    [
        {"max_fps": 240},
        {"games": ["tetris", "doom"]},
        {"container": "rig-2-a"},
        {"host": None},
        {"extra": 1},
    ],
)
def test_an_altered_registration_is_refused(store: KeyStore, change: dict[str, Any]) -> None:
    key, private = issued(store)
    body = signed(key.key_id, private, CHALLENGE_A) | change
    error = refusal(store, body, CHALLENGE_A, answered=CHALLENGE_A)
    assert (error.code, error.reason) == (
        "bad_signature",
        f"the signature does not match key {key.key_id} and this registration and challenge",
    )


def test_an_altered_nested_field_is_refused(store: KeyStore) -> None:
    key, private = issued(store)
    body = signed(key.key_id, private, CHALLENGE_A)
    body["host"]["gpus"][0]["memory_total_mib"] = 81559
    assert refusal(store, body, CHALLENGE_A).code == "bad_signature"


def test_another_hosts_key_cannot_sign_for_this_one(store: KeyStore) -> None:
    mine, _ = issued(store, "rig-1")
    _, theirs = issued(store, "rig-2")
    body = signed(mine.key_id, theirs, CHALLENGE_A)
    assert refusal(store, body, CHALLENGE_A).code == "bad_signature"
    forged = signed(mine.key_id, Ed25519PrivateKey.generate(), CHALLENGE_A)
    assert refusal(store, forged, CHALLENGE_A).code == "bad_signature"


def test_a_replayed_registration_is_refused(store: KeyStore) -> None:
    key, private = issued(store)
    captured = signed(key.key_id, private, CHALLENGE_A)  # on connection A
    error = refusal(store, captured, CHALLENGE_B, answered=captured["challenge"])
    assert (error.code, error.reason) == (
        "wrong_challenge",
        "the registration answers another connection's challenge; sign this one's",
    )
    # Claiming to answer B does not help: the signature covers A.
    edited = captured | {"challenge": CHALLENGE_B}
    assert refusal(store, edited, CHALLENGE_B, answered=CHALLENGE_B).code == "bad_signature"
    # Without the echo, a replay is still refused, as a signature that does not match.
    assert refusal(store, captured, CHALLENGE_B).code == "bad_signature"


@pytest.mark.parametrize(
    ("change", "challenge", "reason"),
    [
        ({"signature": "not base64!"}, CHALLENGE_A, "the signature is not 86 base64url characters"),
        ({"signature": "A" * 85}, CHALLENGE_A, "the signature is not 86 base64url characters"),
        ({"signature": "A" * 86 + "=="}, CHALLENGE_A, "the signature is not 86 base64url chara"),
        ({"signature": 42}, CHALLENGE_A, "the signature is not 86 base64url characters"),
        ({"key_id": "rig-1"}, CHALLENGE_A, "key id 'rig-1' is not 'hk_' and 16 hex digits"),
        ({}, "short", "the challenge is not 22 to 128 base64url characters"),
        ({}, "A" * 42 + "\n", "the challenge is not 22 to 128 base64url characters"),
        ({"max_fps": float("nan")}, CHALLENGE_A, "the registration is not plain JSON: Out of"),
        ({"blob": b"\x00"}, CHALLENGE_A, "the registration is not plain JSON: Object of type"),
    ],
)
def test_a_malformed_registration_is_refused(
    store: KeyStore, change: dict[str, Any], challenge: str, reason: str
) -> None:
    key, private = issued(store)
    body = signed(key.key_id, private, CHALLENGE_A) | change
    error = refusal(store, body, challenge)
    assert error.code == "malformed"
    assert error.reason.startswith(reason)


def test_the_store_is_not_read_while_verifying(store: KeyStore, tmp_path: Path) -> None:
    """verify_registration is pure: it sees the store as last loaded, even with the file gone."""
    key, private = issued(store)
    store.save()
    os.rename(store.path, tmp_path / "moved.json")
    body = signed(key.key_id, private, CHALLENGE_A)
    assert verify_registration(store, key.key_id, body["signature"], CHALLENGE_A, body) == key
