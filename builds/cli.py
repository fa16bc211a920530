"""The studio-facing commands of `gamecast`: `upload` and `studio-keys`.

`add_commands(subparsers)` adds both to the `gamecast` parser; each sets `handler`, which
exits with `run(args)`'s status: 0 done, 1 refused or failed (the reason on stderr).
The operator issues keys on the server's machine, against the folder the server keeps builds
in (`--data`, the same folder the server is given): the builds' database and archives, and
the studio keys' database, side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from builds.errors import BuildError
from builds.studio_keys import STUDIO_KEYS_FILE, StudioKeys
from builds.upload import upload_build

DEFAULT_DATA = Path.home() / ".local/share/gamecast/builds"


def add_commands(subparsers: Any) -> None:
    """Add `upload` and `studio-keys` to `subparsers` (argparse's add_subparsers result)."""
    upload = subparsers.add_parser(
        "upload", help="upload a game build: a zip or tar.gz with manifest.json at its root"
    )
    upload.add_argument("path", type=Path, help="the archive (see builds/MANIFEST.md)")
    upload.add_argument("--server", required=True, help="an indexer's http://HOST:PORT")
    upload.add_argument(
        "--key", required=True, help="the studio key `gamecast studio-keys issue` printed"
    )
    upload.set_defaults(handler=_exit_with_status, builds_command="upload")

    keys = subparsers.add_parser("studio-keys", help="issue, revoke and list studios' API keys")
    keys.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="the server's build folder: %(default)s"
    )
    actions = keys.add_subparsers(dest="action", required=True)
    issue = actions.add_parser("issue", help="a new key for a studio (shown once)")
    issue.add_argument("studio", help="the studio's name; it owns the build names it uploads")
    revoke = actions.add_parser("revoke", help="refuse a key's uploads from now on")
    revoke.add_argument("key_id", help="the key's id, sk_ and 16 hex digits")
    actions.add_parser("list", help="every key, active or revoked")
    keys.set_defaults(handler=_exit_with_status, builds_command="studio-keys")


def run(args: argparse.Namespace) -> int:
    """Carry out the parsed command; the exit status."""
    try:
        if args.builds_command == "upload":
            _upload(args)
        else:
            _studio_keys(args)
    except BuildError as exc:
        print(f"gamecast {args.builds_command}: {exc}", file=sys.stderr)
        return 1
    return 0


def _exit_with_status(args: argparse.Namespace) -> None:
    raise SystemExit(run(args))


def _upload(args: argparse.Namespace) -> None:
    async def send() -> dict[str, Any]:
        async with aiohttp.ClientSession() as http:
            return await upload_build(http, args.server, args.key, args.path, sys.stderr)

    build = asyncio.run(send())
    print(
        f"stored {build['name']} {build['version']}: sha256 {build['sha256']},"
        f" {build['size']} bytes, at {build['uploaded_at']}"
    )


def _studio_keys(args: argparse.Namespace) -> None:
    store = StudioKeys(args.data / STUDIO_KEYS_FILE)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    if args.action == "issue":
        key, secret = store.issue(args.studio, now)
        print(f"issued {key.key_id} for studio {key.studio!r}")
        print(f"  key (shown only now; keep it secret): {secret}")
        print(f"  run: gamecast upload BUILD.zip --server http://INDEXER:PORT --key {secret}")
    elif args.action == "revoke":
        key = store.revoke(args.key_id, now)
        print(f"revoked {key.key_id} (studio {key.studio!r}) at {key.revoked_at}")
    else:
        for key in store.issued_keys():
            state = f"revoked {key.revoked_at}" if key.revoked else "active"
            print(f"{key.key_id}  {key.studio:<24} issued {key.issued_at}  {state}")
