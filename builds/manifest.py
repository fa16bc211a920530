"""A build's manifest: what the game is called, how to start it and what it needs.

The schema is builds/MANIFEST.md; this module is its one implementation. Validation is
strict because a manifest steers the network: its name is the game id players ask for, its
needs filter containers (`Manifest.requirements`), its entry is run on operators' hosts. So
unknown keys are refused by name (a typo must not silently drop a need), every error names
the field as a dotted path and what was expected, and JSON that is ambiguous (a key given
twice, NaN) is refused rather than read one way. Pure: bytes or objects in, records out.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from builds.errors import ManifestError
from contracts.requirements import BuildNeeds, Requirements

MANIFEST_NAME = "manifest.json"  # at the archive's root
SCHEMA_VERSION = 1
MAX_MANIFEST_BYTES = 64 * 1024
INPUT_KINDS = ("keyboard", "mouse", "gamepad")
MAX_ENTRY_ARGS = 32
MAX_ARG_CHARS = 4096
WIDTH_RANGE = (320, 3840)
HEIGHT_RANGE = (180, 2160)
FPS_RANGE = (1, 240)
VRAM_RANGE = (0, 1024 * 1024)  # MiB: up to 1 TiB
CPU_RANGE = (1, 1024)
RAM_RANGE = (0, 4 * 1024 * 1024)  # MiB: up to 4 TiB
# Programs the container provides that an entry may name, each followed by a script inside the
# build; what each one means on the container (builds/MANIFEST.md lists them).
INTERPRETERS = {
    "python3": "gamecast's own Python interpreter on the container",
    "python": "the same interpreter as python3",
}
# Named in refusals: an entry never starts a shell or a launcher, in the build or not.
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "ash",
                    "busybox", "env", "exec", "nohup", "setsid", "sudo", "su", "xargs",
                    "perl", "ruby", "node", "lua", "awk"})  # fmt: skip
MAX_PATH_BYTES = 4096
BUILT_IN_GAMES = frozenset({"reference"})  # served by every container; no build may take it
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_VERSION = re.compile(r"[0-9A-Za-z.+-]{1,32}")
_KEYS = (
    "schema", "name", "version", "entry", "resolution", "fps", "requires", "inputs",
    "price_ceiling_per_minute",
)  # fmt: skip
_OPTIONAL = frozenset({"price_ceiling_per_minute"})
_REQUIRES_KEYS = ("gpu", "vram_mib", "cpu_cores", "ram_mib")


@dataclass(frozen=True, slots=True)
class Needs:
    """The hardware a build needs on the container (the manifest's "requires")."""

    gpu: bool
    vram_mib: int
    cpu_cores: int
    ram_mib: int


@dataclass(frozen=True, slots=True)
class Manifest:
    """A validated manifest; build one with `parse_manifest` or `manifest_from_dict`."""

    name: str
    version: str
    entry: tuple[str, ...]
    width: int
    height: int
    fps: int
    requires: Needs
    inputs: tuple[str, ...]
    price_ceiling_per_minute: float | None = None

    @property
    def entry_file(self) -> tuple[str, str]:
        """The build's file the entry runs, as (field, path inside the build): the program
        itself ("entry[0]"), or the script an interpreter runs ("entry[1]")."""
        if self.entry[0] in INTERPRETERS:
            return "entry[1]", self.entry[1].removeprefix("./")
        return "entry[0]", self.entry[0].removeprefix("./")

    def command(self, folder: str, python: str) -> list[str]:
        """The argv that starts this build unpacked in `folder`: a program by its path under
        `folder` (never looked up on PATH), an interpreter as the container's own `python`."""
        first, *rest = self.entry
        if first in INTERPRETERS:
            return [python, f"{folder.rstrip('/')}/{rest[0].removeprefix('./')}", *rest[1:]]
        return [f"{folder.rstrip('/')}/{first.removeprefix('./')}", *rest]

    def needs(self) -> BuildNeeds:
        """What playing this build takes: the host it needs and the shape it streams at."""
        return BuildNeeds(self.requirements(), (self.width, self.height, self.fps))

    def requirements(self) -> Requirements:
        """What the indexer's resources filter asks of a container to host this build."""
        return Requirements(
            vram_mib=self.requires.vram_mib,
            cpu_cores=self.requires.cpu_cores,
            ram_mib=self.requires.ram_mib,
        )

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON data in the schema; `manifest_from_dict` reads it back equal."""
        needs = self.requires
        return {
            "schema": SCHEMA_VERSION,
            "name": self.name,
            "version": self.version,
            "entry": list(self.entry),
            "resolution": [self.width, self.height],
            "fps": self.fps,
            "requires": {
                "gpu": needs.gpu,
                "vram_mib": needs.vram_mib,
                "cpu_cores": needs.cpu_cores,
                "ram_mib": needs.ram_mib,
            },
            "inputs": list(self.inputs),
            "price_ceiling_per_minute": self.price_ceiling_per_minute,
        }


def parse_manifest(data: bytes) -> Manifest:
    """The manifest in `data`, the bytes of manifest.json (UTF-8 JSON, one object)."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError("", f"manifest.json is {len(data)} bytes; at most {MAX_MANIFEST_BYTES}")
    try:
        parsed = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_refuse_repeated_keys,
            parse_constant=_refuse_constant,
        )
    except UnicodeDecodeError:
        raise ManifestError("", "manifest.json is not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        raise ManifestError("", f"manifest.json is not valid JSON: {exc}") from None
    return manifest_from_dict(parsed)


def manifest_from_dict(data: object) -> Manifest:
    """The manifest in already-parsed JSON data; ManifestError names the first bad field."""
    if not isinstance(data, dict):
        raise ManifestError("", f"manifest.json must hold a JSON object, not {_kind(data)}")
    _refuse_unknown(data, _KEYS, "")
    for key in _KEYS:
        if key not in data and key not in _OPTIONAL:
            raise ManifestError(key, "is missing")
    if type(data["schema"]) is not int or data["schema"] != SCHEMA_VERSION:
        raise ManifestError("schema", f"expected {SCHEMA_VERSION}, got {_shown(data['schema'])}")
    name = _matching(data["name"], "name", _NAME, "1 to 32 of a-z, 0-9 and '-', not starting '-'")
    if name in BUILT_IN_GAMES:
        raise ManifestError("name", f"{name!r} is the network's built-in game; choose another")
    version = _matching(data["version"], "version", _VERSION, "1 to 32 of 0-9, A-Z, a-z, '.+-'")
    width, height = _resolution(data["resolution"])
    return Manifest(
        name=name,
        version=version,
        entry=_entry(data["entry"]),
        width=width,
        height=height,
        fps=_integer(data["fps"], "fps", FPS_RANGE),
        requires=_needs(data["requires"]),
        inputs=_inputs(data["inputs"]),
        price_ceiling_per_minute=_price_ceiling(data.get("price_ceiling_per_minute")),
    )


def _price_ceiling(value: object) -> float | None:
    if value is None:
        return None
    ceiling = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            ceiling = float(value)
        except OverflowError:  # an integer beyond any float
            ceiling = math.inf
    if not (math.isfinite(ceiling) and ceiling >= 0):
        raise ManifestError(
            "price_ceiling_per_minute",
            f"expected a finite number >= 0 or null, got {_shown(value)}",
        )
    return ceiling


def _entry(value: object) -> tuple[str, ...]:
    """The argv, its program checked: a file of the build or an allowed interpreter and a
    script of the build. A program is kept as "./path", so that even a runner that hands
    argv to exec as written runs the build's file and never looks the name up on PATH."""
    expected = f"a list of 1 to {MAX_ENTRY_ARGS} non-empty strings (the command's argv)"
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_ENTRY_ARGS:
        raise ManifestError("entry", f"expected {expected}, got {_shown(value)}")
    for index, arg in enumerate(value):
        if not isinstance(arg, str) or not arg or len(arg) > MAX_ARG_CHARS or "\0" in arg:
            raise ManifestError(
                f"entry[{index}]",
                f"expected a string of 1 to {MAX_ARG_CHARS} characters without NUL,"
                f" got {_shown(arg)}",
            )
    first = value[0]
    interpreters = ", ".join(INTERPRETERS)
    allowed = (
        "a program inside the build (a relative path such as 'bin/game') or an interpreter"
        f" the container provides ({interpreters}) followed by a script inside the build"
    )
    if first in INTERPRETERS:
        if len(value) < 2:
            raise ManifestError("entry", f"{first} needs a script inside the build after it")
        _build_path(value[1], "entry[1]", f"the script {first} runs")
        return tuple(value)
    name = first.rstrip("/").rsplit("/", 1)[-1]
    if name in SHELLS:
        raise ManifestError(
            "entry[0]",
            f"{_shown(first)} is a shell or a launcher, which an entry never starts; expected"
            f" {allowed}",
        )
    if first.startswith("/"):
        raise ManifestError(
            "entry[0]", f"{_shown(first)} is a path outside the build; expected {allowed}"
        )
    path = _build_path(first, "entry[0]", allowed)
    return (f"./{path}", *value[1:])


def _build_path(value: str, field: str, expected: str) -> str:
    """`value` as a normalised path inside the build ("./" in front allowed, then dropped)."""
    path = value.removeprefix("./")
    parts = path.split("/")
    if (
        path.startswith(("/", "-"))
        or "\\" in path
        or len(path.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise ManifestError(
            field,
            f"expected {expected}: a relative path inside the build, without '..', '.' or"
            " empty parts, not starting with '/' or '-', got " + _shown(value),
        )
    return path


def _resolution(value: object) -> tuple[int, int]:
    if not isinstance(value, list) or len(value) != 2:
        raise ManifestError("resolution", f"expected [width, height], got {_shown(value)}")
    width = _integer(value[0], "resolution[0]", WIDTH_RANGE)
    height = _integer(value[1], "resolution[1]", HEIGHT_RANGE)
    for index, side in enumerate((width, height)):
        if side % 2:
            raise ManifestError(f"resolution[{index}]", f"expected an even number, got {side}")
    return width, height


def _needs(value: object) -> Needs:
    if not isinstance(value, dict):
        raise ManifestError("requires", f"expected an object, got {_kind(value)}")
    _refuse_unknown(value, _REQUIRES_KEYS, "requires.")
    for key in _REQUIRES_KEYS:
        if key not in value:
            raise ManifestError(f"requires.{key}", "is missing")
    gpu = value["gpu"]
    if not isinstance(gpu, bool):
        raise ManifestError("requires.gpu", f"expected true or false, got {_shown(gpu)}")
    vram = _integer(value["vram_mib"], "requires.vram_mib", VRAM_RANGE)
    # The indexer filters on VRAM alone, so "needs a GPU" must show there as VRAM > 0.
    if gpu and vram == 0:
        raise ManifestError("requires.vram_mib", "expected at least 1 when requires.gpu is true")
    if not gpu and vram != 0:
        raise ManifestError("requires.vram_mib", f"expected 0 when requires.gpu is false: {vram}")
    return Needs(
        gpu=gpu,
        vram_mib=vram,
        cpu_cores=_integer(value["cpu_cores"], "requires.cpu_cores", CPU_RANGE),
        ram_mib=_integer(value["ram_mib"], "requires.ram_mib", RAM_RANGE),
    )


def _inputs(value: object) -> tuple[str, ...]:
    expected = f"a non-empty list of distinct values among {', '.join(INPUT_KINDS)}"
    if not isinstance(value, list) or not value:
        raise ManifestError("inputs", f"expected {expected}, got {_shown(value)}")
    for index, kind in enumerate(value):
        if kind not in INPUT_KINDS or not isinstance(kind, str):
            raise ManifestError(
                f"inputs[{index}]", f"expected one of {', '.join(INPUT_KINDS)}, got {_shown(kind)}"
            )
        if kind in value[:index]:
            raise ManifestError(f"inputs[{index}]", f"{_shown(kind)} is listed twice")
    return tuple(value)


def _integer(value: object, field: str, bounds: tuple[int, int]) -> int:
    low, high = bounds
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ManifestError(
            field, f"expected a whole number from {low} to {high}, got {_shown(value)}"
        )
    return value


def _matching(value: object, field: str, pattern: re.Pattern[str], expected: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ManifestError(field, f"expected {expected}, got {_shown(value)}")
    return value


def _refuse_unknown(data: Mapping[str, object], known: tuple[str, ...], prefix: str) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        names = ", ".join(f"{prefix}{key}" for key in unknown)
        raise ManifestError(
            f"{prefix}{unknown[0]}", f"unknown key(s) {names}; the schema has {', '.join(known)}"
        )


def _refuse_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ManifestError(key, "is given twice")
        result[key] = value
    return result


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _shown(value: object) -> str:
    """`value` as JSON-ish text for a message, cut short: a message must stay readable."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    return "null" if value is None else names.get(type(value), "a number")
