"""Signing half of the host keys: what an operator's key file holds, and what a container or
verifier signs when it registers or enlists (RFC 8032 Ed25519, section 5.1).

The indexer keeps only the public halves (indexer/keys.py verifies); this module is what both
sides must agree on byte for byte: the key file's format, the challenge's shape, and the
canonical bytes a signature covers. When a container's WebSocket opens, the server sends
`new_challenge()`, valid for that connection only, and the container signs
`signing_bytes(key_id, challenge, body)`: a registration captured on one connection and
replayed on another answers the wrong challenge.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contracts.errors import ContractError
from contracts.protocol import Enlist, Register

Signed = TypeVar("Signed", Register, Enlist)

DOMAIN = b"gamecast-register-v1\n"  # a signature made for anything else never verifies here
KEY_FILE_FORMAT = "gamecast-host-key"
CHALLENGE_BYTES = 32
KEY_ID = re.compile(r"hk_[0-9a-f]{16}")
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{22,128}")  # base64url of 128 bits or more, unpadded
SIGNATURE = re.compile(r"[A-Za-z0-9_-]{86}")  # an Ed25519 signature is 64 bytes


class HostKeyError(ContractError):
    """A registration is refused (a peer's misbehaviour); `code` is stable for programs (see
    the module's list), `reason` says what to do, as `contracts.protocol.ProtocolError`."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class KeyFileError(ContractError):
    """An operator's key file cannot be read, parsed or written."""


def b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64decode(text: str) -> bytes:
    """Unpadded base64url (RFC 4648, section 5); binascii.Error or ValueError if it is not."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_challenge() -> str:
    """A fresh challenge for one container connection: 256 random bits, base64url."""
    return b64encode(os.urandom(CHALLENGE_BYTES))


def signing_bytes(key_id: str, challenge: str, body: Mapping[str, Any]) -> bytes:
    """What a registration's signature covers: the domain tag, the key id, the challenge, and the
    body as canonical JSON (keys sorted, no spaces, ASCII only, its "signature" field left out).

    Sign and verify the JSON object as sent on the wire, not one rebuilt from a parsed record:
    a field with a default that one side knows and the other does not would change the bytes.
    """
    if not isinstance(key_id, str) or not KEY_ID.fullmatch(key_id):
        raise HostKeyError("malformed", f"key id {key_id!r} is not 'hk_' and 16 hex digits")
    if not isinstance(challenge, str) or not _CHALLENGE.fullmatch(challenge):
        raise HostKeyError("malformed", "the challenge is not 22 to 128 base64url characters")
    signed = {name: value for name, value in body.items() if name != "signature"}
    try:
        canonical = json.dumps(signed, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:  # NaN, bytes, mixed key types
        raise HostKeyError("malformed", f"the registration is not plain JSON: {exc}") from None
    return b"".join((DOMAIN, key_id.encode(), b"\n", challenge.encode(), b"\n", canonical.encode()))


def sign_registration(
    private_key: Ed25519PrivateKey, key_id: str, challenge: str, body: Mapping[str, Any]
) -> str:
    """The container's signature over its registration `body` for this connection's challenge."""
    return b64encode(private_key.sign(signing_bytes(key_id, challenge, body)))


# The operator's key file ------------------------------------------------------------------------


def parse_private_key(data: bytes) -> tuple[str, Ed25519PrivateKey]:
    """The key id and private key in a key file's content, as `KeyStore.issue` made it:
    {"format": "gamecast-host-key", "version": 1, "key_id", "host", "issued_at",
    "private_key": unpadded base64url of the 32-byte Ed25519 seed}."""
    try:
        record = json.loads(data)
        if not isinstance(record, dict) or record.get("format") != KEY_FILE_FORMAT:
            raise ValueError(f"not a {KEY_FILE_FORMAT} file")
        if record.get("version") != 1:
            raise ValueError(f"version {record.get('version')!r} is not 1")
        key_id, seed = record.get("key_id"), record.get("private_key")
        if not isinstance(key_id, str) or not KEY_ID.fullmatch(key_id):
            raise ValueError(f"bad key_id {key_id!r}")
        if not isinstance(seed, str):
            raise ValueError("no private_key")
        return key_id, Ed25519PrivateKey.from_private_bytes(b64decode(seed))
    except (ValueError, binascii.Error, RecursionError) as exc:  # from_private_bytes: ValueError
        raise KeyFileError(f"not a usable host key file: {exc}") from None


def load_private_key(path: str | os.PathLike[str]) -> tuple[str, Ed25519PrivateKey]:
    """Read the operator's key file (the container agent does this once, at start)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read the host key file {path}: {exc}") from None
    try:
        return parse_private_key(data)
    except KeyFileError as exc:
        raise KeyFileError(f"{path}: {exc}") from None


def write_private_key(path: str | os.PathLike[str], data: bytes) -> None:
    """Create the operator's key file, readable only by its owner; never overwrites one."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} exists; choose another file for the new key") from None
    except OSError as exc:
        raise KeyFileError(f"cannot write the host key file {path}: {exc}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise KeyFileError(f"cannot write the host key file {path}: {exc}") from None


@dataclass(frozen=True, slots=True)
class HostCredentials:
    """What a container agent signs with: its operator's key, loaded once at start."""

    key_id: str
    private_key: Ed25519PrivateKey

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> HostCredentials:
        return cls(*load_private_key(path))

    @classmethod
    def parse(cls, key_file: bytes) -> HostCredentials:
        """From a key file's text, as `KeyStore.issue` returns it."""
        return cls(*parse_private_key(key_file))

    def sign(self, challenge: str, body: Mapping[str, Any]) -> str:
        return sign_registration(self.private_key, self.key_id, challenge, body)

    def signed(self, message: Signed, challenge: str) -> Signed:
        """`message` (a registration or an enlistment) signed over this connection's
        challenge: the key and challenge filled in, then the signature over the wire JSON."""
        message = replace(message, key_id=self.key_id, challenge=challenge)
        return replace(message, signature=self.sign(challenge, json.loads(message.to_json())))


# Signed build downloads -------------------------------------------------------------------------

DOWNLOAD_DOMAIN = b"gamecast-download-v1\n"  # never verifies as a registration, nor one as this
DOWNLOAD_SCHEME = "Gamecast-Host"
DOWNLOAD_WINDOW_S = 60  # how far a download's timestamp may be from the server's clock
_NONCE = re.compile(r"[A-Za-z0-9_-]{22,64}")
_AUTH_FIELD = re.compile(r"\s*([a-z_]+)=([A-Za-z0-9_-]+)\s*")


@dataclass(frozen=True, slots=True)
class DownloadAuthorization:
    """A container's signed request for one build archive: `Authorization: Gamecast-Host
    key_id=hk_..., ts=<unix seconds>, nonce=<base64url>, sig=<base64url>`.

    The signature covers the method and path asked for, the timestamp and the nonce (see
    `download_signing_bytes`). Why a timestamp and a nonce rather than a challenge: a download
    is one plain HTTP request, and a challenge would need a second round trip and state per
    pending challenge on every indexer; a signed timestamp bounds a captured header's life to
    the window (DOWNLOAD_WINDOW_S either side of the server's clock), and the server keeps the
    nonces it accepted for that long, so within the window a header is accepted once. A
    captured header can only ever fetch the archive it names, which is the one its container
    fetched anyway.
    """

    key_id: str
    timestamp: int
    nonce: str
    signature: str

    def header(self) -> str:
        return (
            f"{DOWNLOAD_SCHEME} key_id={self.key_id}, ts={self.timestamp}, nonce={self.nonce},"
            f" sig={self.signature}"
        )

    @classmethod
    def parse(cls, value: str) -> DownloadAuthorization:
        """The authorization in an `Authorization` header's value; HostKeyError "malformed"."""
        scheme, _, rest = value.partition(" ")
        fields: dict[str, str] = {}
        for part in rest.split(",") if scheme == DOWNLOAD_SCHEME else ():
            match = _AUTH_FIELD.fullmatch(part)
            if match is None or match[1] in fields:
                break
            fields[match[1]] = match[2]
        key_id, ts, nonce, sig = (fields.get(name, "") for name in ("key_id", "ts", "nonce", "sig"))
        if (
            set(fields) != {"key_id", "ts", "nonce", "sig"}
            or not KEY_ID.fullmatch(key_id)
            or not ts.isdigit()
            or len(ts) > 12
            or not _NONCE.fullmatch(nonce)
            or not SIGNATURE.fullmatch(sig)
        ):
            raise HostKeyError(
                "malformed",
                f"expected '{DOWNLOAD_SCHEME} key_id=hk_<16 hex>, ts=<unix seconds>,"
                " nonce=<22 to 64 base64url>, sig=<86 base64url>'",
            )
        return cls(key_id, int(ts), nonce, sig)

    def signed_bytes(self, method: str, path: str) -> bytes:
        return download_signing_bytes(self.key_id, method, path, self.timestamp, self.nonce)


def download_signing_bytes(
    key_id: str, method: str, path: str, timestamp: int, nonce: str
) -> bytes:
    """What a download's signature covers: the domain tag, then one line each for the key id,
    the method, the path (e.g. /api/builds/<sha256>/archive), the timestamp and the nonce."""
    fields = (key_id, method, path, str(timestamp), nonce)
    if any("\n" in field for field in fields):
        raise HostKeyError("malformed", "a signed download's fields are single lines")
    return DOWNLOAD_DOMAIN + "\n".join(fields).encode()


def sign_download(
    credentials: HostCredentials, method: str, path: str, now: float
) -> DownloadAuthorization:
    """A fresh authorization for `method path` at unix time `now`, with a random nonce."""
    nonce = b64encode(os.urandom(18))
    timestamp = int(now)
    signed = download_signing_bytes(credentials.key_id, method, path, timestamp, nonce)
    signature = b64encode(credentials.private_key.sign(signed))
    return DownloadAuthorization(credentials.key_id, timestamp, nonce, signature)
