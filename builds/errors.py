"""The builds' exception tree: one base, and a class for each way an upload or deploy fails.

Each class says whose fault it is, so the HTTP edge maps it to a status without guessing:
the studio's archive or manifest (400, 413), its credentials (401), its claim on a name
(403, 409), the server's own storage (500), or a peer's bytes on the container side.
"""

from __future__ import annotations

from contracts.errors import GamecastError

SHOWN_CHARS = 48  # of a name an archive or a build chose, in a message


def shown(text: str, limit: int = SHOWN_CHARS) -> str:
    """`text` (a member's name, a link's target: chosen by whoever made the archive) as a
    message may quote it: quoted, control and other unprintable characters escaped as repr
    does, and cut to its first `limit` characters with a marker saying how many were left off,
    so that a refusal never carries a 4 KiB name or a terminal escape back to a log or a page."""
    head = text[:limit]
    quoted = repr(head)
    return quoted if len(text) <= limit else f"{quoted}...[+{len(text) - limit} chars]"


def escaped(text: str, limit: int) -> str:
    """`text` with control characters escaped, cut to `limit` characters with a marker: for
    messages of other libraries, which may quote a name the archive chose."""
    body = repr(text[:limit])[1:-1]
    return body if len(text) <= limit else f"{body}...[+{len(text) - limit} chars]"


class BuildError(GamecastError):
    """Base of the builds' errors; the message says what to do about it."""


class ManifestError(BuildError):
    """manifest.json is missing or does not follow the schema (builds/MANIFEST.md). `field`
    names the offending field as a dotted path ("requires.ram_mib"), "" for the whole file."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"manifest.json: {field}: {message}" if field else message)
        self.field = field


class ArchiveError(BuildError):
    """The file is not a zip or tar.gz archive this code can read, or it is damaged."""


class UnsafeArchiveError(ArchiveError):
    """A member could write outside the build's folder or is something a build must not hold
    (an absolute path, `..`, a link escaping the root, a device or fifo); `member` names it."""

    def __init__(self, member: str, message: str) -> None:
        super().__init__(f"refused member {shown(member)}: {message}")
        self.member = member


class BuildTooLargeError(BuildError):
    """The upload, its unpacked size or its member count is over the configured limit."""


class StudioKeyError(BuildError):
    """A studio's credentials are refused (a peer's misbehaviour) or a key command does not
    fit the key store (our misuse). `code` is stable for programs: "missing", "malformed",
    "unknown_key", "revoked_key", "wrong_secret", or "store" for the operator's commands."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class BuildOwnershipError(BuildError):
    """The build's name belongs to another studio: the first studio to upload a name owns it."""


class BuildConflictError(BuildError):
    """This name and version were uploaded before with different content; versions are
    immutable, so the studio must bump the version."""


class CatalogError(BuildError):
    """The catalog's disk or database failed (a resource problem, not the studio's fault)."""


class DeployError(BuildError):
    """A container could not fetch or verify a build: the server is unreachable, refused, or
    sent bytes whose sha256 is not the one asked for."""


class UploadError(BuildError):
    """The studio's upload did not succeed: the server could not be reached, or refused it.
    `status` is the HTTP status of a refusal (None when no answer came); the message carries
    the server's own reason."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DownloadRefusedError(BuildError):
    """A request for a build's archive is refused: it is not signed by a live host key nor
    made with the key of the studio that owns the build. `status` is 401 (no valid
    credentials) or 403 (valid, but not for this build); `code` is stable for programs:
    "missing", "malformed", "stale", "replayed", "busy", the host key's own codes
    ("unknown_key", "revoked_key", "bad_signature"), the studio key's, or "not_yours"."""

    def __init__(self, code: str, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.status = status
