"""Who may download a build's archive: its studio, and the network's containers.

An archive is a studio's work, so it is not public. A request is allowed when it carries
either the key of the studio that uploaded the build (`Authorization: Bearer sk_...`, as
uploads do) or a container's signature made with a live host key (`Authorization:
Gamecast-Host ...`, contracts.signing.DownloadAuthorization, over the method, the path, a
timestamp and a nonce). Any host key the indexer issued may download any build: a container
fetches a build before it hosts it, so "the containers that host it" is not known at that
moment; each download is logged with its key, so a later step can hold downloads against
placements.

Replays: a signed header names its timestamp; one more than DOWNLOAD_WINDOW_S away from the
server's clock is refused ("stale"), and `FreshNonces` remembers every nonce it accepted for
as long as its timestamp is inside the window, so a header is accepted once ("replayed").
The nonces are checked only after the signature, so only key holders can fill the memory, and
it is bounded anyway (MAX_NONCES; beyond it downloads are refused "busy" until some expire).
No sockets and no clock: the time is an argument, the host keys a callable (signaling/
gives it the indexer's KeyStore); the studio keys are read from their SQLite file.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from builds.errors import DownloadRefusedError, StudioKeyError
from builds.studio_keys import StudioKeys
from contracts.signing import (
    DOWNLOAD_SCHEME,
    DOWNLOAD_WINDOW_S,
    DownloadAuthorization,
    HostKeyError,
)

MAX_NONCES = 100_000
# (key id, signature, signed bytes) -> the host's label, or HostKeyError: the indexer's KeyStore
HostVerifier = Callable[[str, str, bytes], str]
HOW = (
    "a build's archive is downloaded by its studio ('Authorization: Bearer <studio key>') or"
    f" by a container ('Authorization: {DOWNLOAD_SCHEME} ...', signed with its host key)"
)


@dataclass(frozen=True, slots=True)
class Downloader:
    """Who a download was allowed to: a studio (`studio`) or a host key (`key_id`, `host`)."""

    studio: str = ""
    key_id: str = ""
    host: str = ""

    def describe(self) -> str:
        return f"studio {self.studio!r}" if self.studio else f"host {self.host!r} ({self.key_id})"


class FreshNonces:
    """The nonces accepted within the window, each kept until its timestamp leaves it."""

    def __init__(self, window_s: float = DOWNLOAD_WINDOW_S, limit: int = MAX_NONCES) -> None:
        self.window_s = window_s
        self.limit = limit
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()  # requests are checked in worker threads, two at once

    def accept(self, nonce: str, timestamp: int, now: float) -> None:
        """Remember `nonce`, or raise DownloadRefusedError when it is stale or seen."""
        with self._lock:
            self._accept(nonce, timestamp, now)

    def _accept(self, nonce: str, timestamp: int, now: float) -> None:
        if abs(now - timestamp) > self.window_s:
            raise DownloadRefusedError(
                "stale",
                f"the signed download is dated {timestamp}, more than {self.window_s:g} s from"
                f" the server's clock ({int(now)}): sign it anew (and check the host's clock)",
            )
        if len(self._expiry) >= self.limit:
            self._expiry = {n: t for n, t in self._expiry.items() if t >= now}
        if nonce in self._expiry:
            raise DownloadRefusedError("replayed", "this signed download was used before")
        if len(self._expiry) >= self.limit:
            raise DownloadRefusedError("busy", "too many signed downloads at once; retry soon")
        self._expiry[nonce] = timestamp + self.window_s


class DownloadGate:
    """Decides each archive request: `allow` returns who asked, or raises."""

    def __init__(self, studios: StudioKeys, hosts: HostVerifier, nonces: FreshNonces) -> None:
        self.studios = studios
        self.hosts = hosts
        self.nonces = nonces

    def allow(
        self, authorization: str | None, method: str, path: str, owner: str, now: float
    ) -> Downloader:
        """Who may download the build of studio `owner` at `path` with this `authorization`
        header value. Blocking (the studio keys are in SQLite): from a thread."""
        if not authorization:
            raise DownloadRefusedError("missing", HOW)
        if authorization.startswith(DOWNLOAD_SCHEME + " "):
            try:
                signed = DownloadAuthorization.parse(authorization)
                host = self.hosts(
                    signed.key_id, signed.signature, signed.signed_bytes(method, path)
                )
            except HostKeyError as exc:
                raise DownloadRefusedError(exc.code, f"{exc.reason}; {HOW}") from None
            self.nonces.accept(signed.nonce, signed.timestamp, now)
            return Downloader(key_id=signed.key_id, host=host)
        try:
            key = self.studios.authenticate(authorization)
        except StudioKeyError as exc:
            raise DownloadRefusedError(exc.code, f"{exc.reason}; {HOW}") from None
        if key.studio != owner:
            raise DownloadRefusedError(
                "not_yours", "this build belongs to another studio; " + HOW, status=403
            )
        return Downloader(studio=key.studio)
